"""Figures over seeds: the mean and its 95 % t interval, worked by hand."""

from __future__ import annotations

import math

import pytest

from clear_core.seed_statistics import mean_interval, seed_summary, t975


def test_t_quantiles_match_the_table_and_approach_the_normal_one():
    assert t975(1) == 12.706
    assert t975(4) == 2.776  # five seeds
    # Beyond the table the expansion is within 0.001 of the exact quantiles (2.042 at 30, 1.984 at 100).
    assert t975(30) == pytest.approx(2.042, abs=1e-3)
    assert t975(100) == pytest.approx(1.984, abs=1e-3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t975(0)


def test_three_seeds_give_the_hand_worked_interval():
    # mean 0.02, sample std 0.01, half-width t(2) * 0.01 / sqrt(3) = 4.303 * 0.0057735 = 0.024843
    mean, low, high = mean_interval([0.01, 0.02, 0.03])
    assert mean == pytest.approx(0.02)
    assert (low, high) == pytest.approx((0.02 - 0.024843, 0.02 + 0.024843), abs=1e-6)


def test_one_seed_has_a_mean_but_no_interval():
    summary = seed_summary([0.25])
    assert summary["n"] == 1 and summary["mean"] == 0.25 and summary["std"] == 0.0
    assert math.isnan(summary["low"]) and math.isnan(summary["high"])
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])


def test_summary_of_five_seeds_reports_their_sample_std():
    values = [0.10, 0.12, 0.11, 0.13, 0.09]
    summary = seed_summary(values)
    assert summary["n"] == 5
    assert summary["std"] == pytest.approx(0.0158114, abs=1e-6)
    half = 2.776 * 0.0158114 / math.sqrt(5)
    assert (summary["low"], summary["high"]) == pytest.approx((0.11 - half, 0.11 + half), abs=1e-6)
