"""The fused encoder node computes what nn.Linear, centring and soft_project compute one after
another, values and gradients alike."""

from __future__ import annotations

import pytest
import torch

from clear_core.models.projected_linear import projected_linear
from clear_core.projection import soft_project


def _inputs(n=9, d_in=7, d_out=5, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d_in, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(d_out, d_in, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(d_out, generator=g, dtype=torch.float64, requires_grad=True)
    basis, _ = torch.linalg.qr(torch.randn(d_out, k, generator=g, dtype=torch.float64))
    return f, w, b, basis


def _composite(f, w, b, basis, strength, center):
    y = torch.nn.functional.linear(f, w, b)
    if center:
        y = y - y.mean(dim=0, keepdim=True)
    return soft_project(y, basis, strength) if basis is not None else y


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("k", [0, 2, 5])
@pytest.mark.parametrize("strength", [0.0, 0.6, 1.0])
def test_values_and_gradients_equal_the_composite(center, k, strength):
    f, w, b, basis = _inputs(k=max(k, 1))
    basis = basis[:, :k]
    fused = projected_linear(f, w, b, basis, strength, center=center)
    reference = _composite(f, w, b, basis, strength, center)
    torch.testing.assert_close(fused, reference)
    upstream = torch.randn_like(fused)
    got = torch.autograd.grad(fused, (f, w, b), upstream)
    want = torch.autograd.grad(reference, (f, w, b), upstream)
    for name, g_got, g_want in zip("FWb", got, want, strict=True):
        torch.testing.assert_close(g_got, g_want, msg=lambda m, name=name: f"gradient of {name}: {m}")


@pytest.mark.parametrize("center", [False, True])
def test_gradcheck(center):
    f, w, b, basis = _inputs()
    assert torch.autograd.gradcheck(
        lambda f, w, b: projected_linear(f, w, b, basis, 0.7, center=center), (f, w, b)
    )


def test_frozen_features_get_no_gradient_and_the_basis_none():
    f, w, b, basis = _inputs()
    f = f.detach()
    basis.requires_grad_(True)
    out = projected_linear(f, w, b, basis, 0.9)
    out.sum().backward()
    assert f.grad is None and basis.grad is None and w.grad is not None and b.grad is not None
