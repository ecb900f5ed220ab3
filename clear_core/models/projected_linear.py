"""A linear modality encoder, optionally centred and soft-projected, as ONE autograd node.

``projected_linear(F, W, b, U, λ)`` computes ``z = c(F Wᵀ + b) (I - λ U Uᵀ)``, where ``c``
subtracts the column means (``encoded_centering``) or is the identity. It is exactly what
``nn.Linear``, the centring and :func:`clear_core.projection.soft_project` compute one after
another, with the backward written out:

    g_y = c(g_z (I - λ U Uᵀ))    (both maps are symmetric projections)
    g_F = g_y W,   g_W = g_yᵀ F,   g_b = Σ_rows g_y

Why: a training step of these models on a GPU is bound by the number of kernels launched, not
by their arithmetic (benchmarks/RESULTS.md, CLEAR epoch on the H100). Autograd records the
composite as about five forward and twelve backward operations per modality; this node needs
two to four of each. ``U`` carries no gradient (the paper's bases come from a detached SVD).
"""

from __future__ import annotations

import torch


class _ProjectedLinear(torch.autograd.Function):
    # torch.mm and transposes taken once: each extra dispatch costs time in a step that is
    # bound by dispatches (see the module docstring).
    @staticmethod
    def forward(ctx, features, weight, bias, basis, strength: float, center: bool):
        weight_t = weight.t()
        y = torch.addmm(bias, features, weight_t)
        if center:
            y = y - y.mean(dim=0, keepdim=True)
        basis_t = None
        if basis is not None:
            basis_t = basis.t()
            y = torch.addmm(y, torch.mm(y, basis), basis_t, alpha=-strength)
        ctx.save_for_backward(features, weight, basis, basis_t)
        ctx.strength, ctx.center = strength, center
        return y

    @staticmethod
    def backward(ctx, grad):
        features, weight, basis, basis_t = ctx.saved_tensors
        if basis is not None:
            grad = torch.addmm(grad, torch.mm(grad, basis), basis_t, alpha=-ctx.strength)
        if ctx.center:
            grad = grad - grad.mean(dim=0, keepdim=True)
        need_f, need_w, need_b = ctx.needs_input_grad[:3]
        grad_f = torch.mm(grad, weight) if need_f else None
        grad_w = torch.mm(grad.t(), features) if need_w else None
        grad_b = grad.sum(dim=0) if need_b else None
        return grad_f, grad_w, grad_b, None, None, None


def projected_linear(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    basis: torch.Tensor | None = None,
    strength: float = 0.0,
    *,
    center: bool = False,
) -> torch.Tensor:
    """``c(features @ weightᵀ + bias) (I - strength · basis basisᵀ)``; see the module docstring.

    ``basis`` (d_out x k, orthonormal columns, no gradient) may be None or have k = 0, and
    ``strength`` may be 0: then no projection is applied.
    """
    if basis is not None and (basis.shape[1] == 0 or strength == 0.0):
        basis = None
    if basis is not None and (basis.requires_grad or basis.dtype != features.dtype):
        basis = basis.detach().to(features.dtype)
    return _ProjectedLinear.apply(features, weight, bias, basis, float(strength), bool(center))


__all__ = ["projected_linear"]
