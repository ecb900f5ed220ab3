"""Diagnostics: the Figure 5 spectrum and the Figure 1 neighbour overlap, as data."""

from __future__ import annotations

import functools

import pytest
import torch

from clear_core.data.synthetic import generate_synthetic
from clear_core.diagnostics import (
    covariance_spectrum,
    dataset_diagnostics,
    effective_rank,
    model_diagnostics,
    neighbour_overlap,
)
from clear_core.errors import ConfigError
from clear_core.models import build_model


@functools.lru_cache(maxsize=4)
def planted(redundancy: float):
    # r_shared = 4 planted shared directions between image and text.
    return generate_synthetic(
        n_users=150, n_items=200, n_interactions=3000, r_shared=4, r_specific=6,
        modalities={"image": 32, "text": 24}, redundancy=redundancy, noise=0.2, seed=3,
    ).dataset


def test_planted_redundancy_leading_singular_values_fall_and_spectrum_flattens():
    ds = planted(0.8)
    d = dataset_diagnostics(ds, redundancy_rank=4, projection_strength=0.9, neighbours=10)
    before = d["spectrum"]["before"]
    after = d["spectrum"]["after"]
    # The 4 planted directions dominate C before projection ...
    assert before["top_k_energy_share"] > 0.9
    # ... and are shrunk by (1 - 0.9)^2 = 0.01, so the new leading value is the old 5th.
    assert after["singular_values"][0] < 0.2 * before["singular_values"][0]
    assert after["singular_values"][0] == pytest.approx(before["singular_values"][4], rel=1e-3)
    assert after["effective_rank"] > before["effective_rank"] + 1.0
    assert after["frobenius_norm"] < 0.5 * before["frobenius_norm"]


def test_neighbour_overlap_reflects_shared_content():
    high = dataset_diagnostics(planted(0.8), redundancy_rank=4, projection_strength=0.9, neighbours=10)
    none = dataset_diagnostics(planted(0.0), redundancy_rank=4, projection_strength=0.9, neighbours=10)
    assert high["neighbour_overlap"]["ratio_to_random"] > 3.0
    assert none["neighbour_overlap"]["ratio_to_random"] < high["neighbour_overlap"]["ratio_to_random"] / 2


def test_neighbour_overlap_limits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g)
    same = neighbour_overlap(x, x * 3.0, k=5)  # cosine ignores scale
    assert same["mean_overlap"] == 1.0
    assert same["histogram"][-1] == 300
    independent = neighbour_overlap(x, torch.randn(300, 16, generator=g), k=5)
    assert independent["random_expectation"] == pytest.approx(5 / 299)
    assert independent["mean_overlap"] < 4 * independent["random_expectation"]
    assert sum(independent["histogram"]) == 300


def test_effective_rank_bounds():
    assert effective_rank(torch.tensor([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.ones(6)) == pytest.approx(6.0)


def test_spectrum_with_given_bases_matches_theorem5():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(80, 6, generator=g), torch.randn(80, 5, generator=g)
    out = covariance_spectrum(a, b, redundancy_rank=2, projection_strength=0.5)
    s_before = out["before"]["singular_values"]
    expected = sorted([0.25 * s_before[0], 0.25 * s_before[1], *s_before[2:]], reverse=True)
    assert out["after"]["singular_values"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    with pytest.raises(ConfigError, match="redundancy_rank"):
        covariance_spectrum(a, b, redundancy_rank=6, projection_strength=0.5)


def test_model_diagnostics_use_the_models_own_projector():
    ds = planted(0.8)
    model = build_model("clear", ds, {"redundancy_rank": 3, "projection_strength": 1.0})
    model.on_epoch_start(1)
    d = model_diagnostics(model, neighbours=5)
    assert d["pair"] == ["image", "text"]
    assert d["spectrum"]["redundancy_rank"] == 3
    # λ = 1 with the model's bases removes its top 3 directions exactly.
    before, after = d["spectrum"]["before"]["singular_values"], d["spectrum"]["after"]["singular_values"]
    assert after[0] == pytest.approx(before[3], rel=1e-4)
    assert 0.0 <= d["neighbour_overlap_projected"]["mean_overlap"] <= 1.0
