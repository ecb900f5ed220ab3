"""CLEAR's batch loss after the gathers, as ONE autograd node with a written-out backward.

For a batch of B users with C channel embeddings ``h`` (B x C x d), fusion logits ``a`` (B x C)
and the gathered positive and negative item vectors ``q`` (2 x B x d):

    w = softmax(a),   u = Σ_c w_c h_c,   x = <u, q_pos> - <u, q_neg>
    L = mean(-log σ(x)) + γ (‖h‖² + ‖a‖²) / B

and the gradients (with g = -σ(-x) / B, the derivative of the mean BPR term in x):

    ∂L/∂q_pos = g u,   ∂L/∂q_neg = -g u,   ∂L/∂u = g (q_pos - q_neg)
    ∂L/∂h_c = w_c ∂L/∂u + 2γ h_c / B
    ∂L/∂a = w ⊙ (s - <w, s>) + 2γ a / B,   with s_c = <h_c, ∂L/∂u>

Why: a training step of CLEAR on a GPU is bound by how many kernels it launches, not by their
arithmetic (benchmarks/RESULTS.md, CLEAR epoch on the H100). Autograd records this head as
about 20 forward and 40 backward operations; this node needs about half. The composite in
:func:`reference_loss` is the specification; the tests hold the two together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clear_core.models.losses import bpr_loss


def reference_loss(h: torch.Tensor, logits: torch.Tensor, q: torch.Tensor, reg_weight: float) -> torch.Tensor:
    """The loss written with autograd operations (the specification of :func:`fused_bpr_loss`)."""
    u = (torch.softmax(logits, dim=1).unsqueeze(-1) * h).sum(dim=1)
    pos, neg = (q * u).sum(-1)
    reg = (h.square().sum() + logits.square().sum()) / h.shape[0]
    return bpr_loss(pos, neg) + reg_weight * reg


class _FusedBPR(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, logits, q, reg_weight: float):
        batch = h.shape[0]
        w = torch.softmax(logits, dim=1)
        u = torch.bmm(w.unsqueeze(1), h)  # (B, 1, d)
        diff = q[0] - q[1]
        x = torch.bmm(u, diff.unsqueeze(-1)).view(batch)
        flat_h, flat_a = h.reshape(-1), logits.reshape(-1)
        reg = torch.dot(flat_h, flat_h) + torch.dot(flat_a, flat_a)
        loss = torch.add(-F.logsigmoid(x).mean(), reg, alpha=reg_weight / batch)  # as losses.bpr_loss
        ctx.save_for_backward(h, logits, w, u, diff, x)
        ctx.reg_weight = reg_weight
        return loss

    @staticmethod
    def backward(ctx, grad):
        h, logits, w, u, diff, x = ctx.saved_tensors
        batch = h.shape[0]
        g = torch.sigmoid(-x).mul_(grad / -batch).view(batch, 1, 1)
        grad_u = g * diff.unsqueeze(1)  # (B, 1, d)
        grad_q = None
        if ctx.needs_input_grad[2]:
            gu = (g * u).squeeze(1)
            grad_q = torch.stack([gu, -gu])
        shrink = 2.0 * ctx.reg_weight / batch * grad
        grad_h = torch.baddbmm(h * shrink, w.unsqueeze(-1), grad_u)
        s = torch.bmm(h, grad_u.transpose(1, 2)).view_as(w)  # s_c = <h_c, ∂L/∂u>
        grad_logits = torch.addcmul(logits * shrink, w, s - (w * s).sum(dim=1, keepdim=True))
        return grad_h, grad_logits, grad_q, None


def fused_bpr_loss(h: torch.Tensor, logits: torch.Tensor, q: torch.Tensor, reg_weight: float) -> torch.Tensor:
    """CLEAR's batch loss: ``h`` (B, C, d) user channels, ``logits`` (B, C) fusion logits, ``q``
    (2, B, d) positive and negative item vectors; see the module docstring."""
    return _FusedBPR.apply(h, logits, q, float(reg_weight))


__all__ = ["fused_bpr_loss", "reference_loss"]
