"""CLEAR's fused batch loss equals its autograd specification, values and gradients alike."""

from __future__ import annotations

import pytest
import torch

from clear_core.models.fused_bpr import fused_bpr_loss, reference_loss


def _batch(b=6, c=3, d=4, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)

    return rand(b, c, d), rand(b, c), rand(2, b, d)


@pytest.mark.parametrize("reg_weight", [0.0, 1e-2, 0.7])
@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0])  # 30: saturated BPR, where σ(-x) underflows
def test_values_and_gradients_equal_the_reference(reg_weight, scale):
    h, logits, q = _batch(scale=scale)
    fused = fused_bpr_loss(h, logits, q, reg_weight)
    reference = reference_loss(h, logits, q, reg_weight)
    torch.testing.assert_close(fused, reference)
    got = torch.autograd.grad(3.0 * fused, (h, logits, q))
    want = torch.autograd.grad(3.0 * reference, (h, logits, q))
    for name, g_got, g_want in zip(("h", "logits", "q"), got, want, strict=True):
        torch.testing.assert_close(g_got, g_want, msg=lambda m, name=name: f"gradient of {name}: {m}")


def test_gradcheck():
    h, logits, q = _batch(b=4, c=2, d=3)
    assert torch.autograd.gradcheck(lambda h, a, q: fused_bpr_loss(h, a, q, 0.3), (h, logits, q))
