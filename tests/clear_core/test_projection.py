"""The null-space projection: Theorem 5, its limits, the refresh cadence and the validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clear_core.errors import ConfigError
from clear_core.projection import (
    CrossModalProjection,
    cross_covariance,
    energy_rank,
    refresh_due,
    singular_decomposition,
    soft_project,
    soft_projector,
)


def _features(seed: int, n: int, d_a: int, d_b: int, shared_rank: int):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, shared_rank, generator=g, dtype=torch.float64)
    a = shared @ torch.randn(shared_rank, d_a, generator=g, dtype=torch.float64)
    b = shared @ torch.randn(shared_rank, d_b, generator=g, dtype=torch.float64)
    a = a + 0.3 * torch.randn(n, d_a, generator=g, dtype=torch.float64) + 2.0
    b = b + 0.3 * torch.randn(n, d_b, generator=g, dtype=torch.float64) - 1.0
    return a, b


def test_cross_covariance_is_mean_centred_and_scaled_by_n():
    a, b = _features(0, 50, 4, 3, 2)
    expected = ((a - a.mean(0)).T @ (b - b.mean(0))) / 50
    torch.testing.assert_close(cross_covariance(a, b), expected)
    # A constant shift of either modality does not change C.
    torch.testing.assert_close(cross_covariance(a + 7.0, b - 3.0), expected)
    assert cross_covariance(a, b).shape == (4, 3)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(8, 40),
    d_a=st.integers(1, 9),
    d_b=st.integers(1, 9),
    shared_rank=st.integers(1, 6),
    k_fraction=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_theorem5_projected_singular_values(seed, n, d_a, d_b, shared_rank, k_fraction, lam):
    """σ̃_i = (1-λ)² σ_i for i <= k and σ_i otherwise (Appendix A.3, Theorem 5)."""
    a, b = _features(seed, n, d_a, d_b, shared_rank)
    d = min(d_a, d_b)
    k = max(1, round(k_fraction * d))
    u, s, w = singular_decomposition(cross_covariance(a, b))
    a_p = soft_project(a, u[:, :k], lam)
    b_p = soft_project(b, w[:, :k], lam)
    got = torch.linalg.svdvals(cross_covariance(a_p, b_p))
    expected = s.clone()
    expected[:k] = (1 - lam) ** 2 * s[:k]
    # Shrunk values can drop below unshrunk ones: compare as sorted spectra.
    torch.testing.assert_close(
        torch.sort(got, descending=True).values,
        torch.sort(expected, descending=True).values,
        atol=1e-9 * max(1.0, float(s[0])),
        rtol=1e-7,
    )


def test_projector_matrix_matches_the_cheap_form():
    a, b = _features(1, 30, 6, 5, 3)
    u, _, _ = singular_decomposition(cross_covariance(a, b))
    torch.testing.assert_close(a @ soft_projector(u[:, :2], 0.7), soft_project(a, u[:, :2], 0.7))


def test_strength_zero_leaves_features_unchanged():
    a, b = _features(2, 40, 6, 4, 3)
    proj = CrossModalProjection(6, 4, redundancy_rank=3, projection_strength=0.0).double()
    proj.refresh(a, b, epoch=1)
    a_p, b_p = proj(a, b)
    torch.testing.assert_close(a_p, a)
    torch.testing.assert_close(b_p, b)


def test_full_strength_full_rank_removes_all_cross_covariance():
    a, b = _features(3, 60, 7, 5, 4)
    proj = CrossModalProjection(7, 5, redundancy_rank=5, projection_strength=1.0).double()
    proj.refresh(a, b, epoch=1)
    a_p, b_p = proj(a, b)
    assert float(cross_covariance(a, b).abs().max()) > 0.1
    assert float(cross_covariance(a_p, b_p).abs().max()) < 1e-10


def test_projector_changes_only_at_epochs_1_and_every_tau_after():
    tau = 3
    proj = CrossModalProjection(5, 5, redundancy_rank=2, refresh_every=tau).double()
    refreshed = []
    previous = proj.basis_a.clone()
    for epoch in range(1, 11):
        a, b = _features(100 + epoch, 40, 5, 5, 3)  # different features every epoch
        if proj.needs_refresh(epoch):
            proj.refresh(a, b, epoch)
        if not torch.equal(proj.basis_a, previous):
            refreshed.append(epoch)
        previous = proj.basis_a.clone()
    assert refreshed == [1, 4, 7, 10]
    assert [e for e in range(1, 11) if refresh_due(e, tau)] == [1, 4, 7, 10]


def test_no_gradient_reaches_the_bases_but_features_get_one():
    a, b = _features(4, 30, 5, 4, 2)
    a = a.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    proj = CrossModalProjection(5, 4, redundancy_rank=2).double()
    proj.refresh(a, b, epoch=1)  # from tensors that require grad: must be detached inside
    assert not proj.basis_a.requires_grad and not proj.basis_b.requires_grad
    assert list(proj.parameters()) == []
    a_p, b_p = proj(a, b)
    (a_p.sum() + b_p.square().sum()).backward()
    assert a.grad is not None and b.grad is not None
    assert proj.basis_a.grad is None and proj.basis_b.grad is None


def test_bases_are_saved_in_the_state_dict_and_restore_the_same_projection():
    a, b = _features(5, 30, 6, 6, 3)
    proj = CrossModalProjection(6, 6, redundancy_rank=2, projection_strength=0.5, refresh_every=5).double()
    proj.refresh(a, b, epoch=1)
    restored = CrossModalProjection(6, 6, redundancy_rank=2, projection_strength=0.5, refresh_every=5).double()
    restored.load_state_dict(proj.state_dict())
    assert not restored.needs_refresh(2)
    torch.testing.assert_close(restored(a, b)[0], proj(a, b)[0])


def test_dynamic_mode_picks_k_from_the_energy_ratio():
    s = torch.tensor([4.0, 2.0, 1.0, 0.5])
    energy = s**2 / (s**2).sum()  # 0.7529, 0.1882, 0.0471, 0.0118
    assert float(energy[0]) < 0.8 < float(energy[:2].sum())
    assert energy_rank(s, 0.8) == 2
    assert energy_rank(s, 0.5) == 1
    assert energy_rank(s, 1.0) == 4
    a, b = _features(6, 80, 6, 6, 1)  # one planted shared direction dominates
    proj = CrossModalProjection(6, 6, mode="dynamic", energy_ratio=0.5).double()
    proj.refresh(a, b, epoch=1)
    assert int(proj.rank) == 1
    assert proj.basis_a.shape == (6, 6)


def test_diagnostics_report_the_rank_and_spectrum_of_the_last_refresh():
    a, b = _features(8, 60, 6, 5, 2)
    proj = CrossModalProjection(6, 5, redundancy_rank=2).double()
    assert proj.diagnostics() == {}  # nothing to report before the first refresh
    proj.refresh(a, b, epoch=1)
    _, s, _ = singular_decomposition(cross_covariance(a, b))
    found = proj.diagnostics()
    assert found["rank"] == 2
    assert found["leading_singular_value"] == pytest.approx(float(s[0]))
    assert found["suppressed_energy_share"] == pytest.approx(float((s[:2] ** 2).sum() / (s**2).sum()))
    dynamic = CrossModalProjection(6, 5, mode="dynamic", energy_ratio=0.999).double()
    dynamic.refresh(a, b, epoch=1)
    assert dynamic.diagnostics()["rank"] == energy_rank(s, 0.999)
    assert CrossModalProjection(6, 5, mode="none").diagnostics() == {}


def test_mode_none_is_the_identity_and_never_refreshes():
    a, b = _features(7, 20, 4, 4, 2)
    proj = CrossModalProjection(4, 4, mode="none")
    assert not proj.needs_refresh(1)
    assert proj(a, b)[0] is a


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        CrossModalProjection(
            8, 4, mode="sideways", redundancy_rank=0, projection_strength=1.5, refresh_every=0,
            energy_ratio=0.0,
        )
    text = str(err.value)
    for field in ("projection", "redundancy_rank", "projection_strength", "refresh_every", "energy_ratio"):
        assert field in text
    assert len(err.value.problems) == 5


def test_rank_larger_than_the_smaller_feature_size_is_rejected():
    with pytest.raises(ConfigError, match=r"min\(d_a, d_b\) = 4"):
        CrossModalProjection(8, 4, redundancy_rank=5)


def test_non_finite_features_are_rejected_at_refresh():
    a, b = _features(8, 20, 4, 4, 2)
    a[3, 1] = float("nan")
    proj = CrossModalProjection(4, 4, redundancy_rank=2).double()
    with pytest.raises(ConfigError, match="NaN"):
        proj.refresh(a, b, epoch=1)
