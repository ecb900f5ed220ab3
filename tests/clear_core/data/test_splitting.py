"""The two per-user splits: LATTICE's random 8:1:1 and MMRec's rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clear_core.data.splitting import TEST, TRAIN, VALID, mmrec_split, random_split, split_labels


def _users(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_random_split_per_user_counts_follow_the_8_1_1_rule():
    counts = [5, 9, 10, 19, 20, 29, 30, 100]
    users = _users(counts)
    labels = random_split(users, seed=1)
    for u, n in enumerate(counts):
        mine = labels[users == u]
        hold = max(1, n // 10)
        assert (mine == VALID).sum() == hold and (mine == TEST).sum() == hold
        assert (mine == TRAIN).sum() == n - 2 * hold


def test_random_split_keeps_a_training_row_for_tiny_users():
    users = _users([1, 2, 3])
    labels = random_split(users, seed=0)
    for u in range(3):
        assert (labels[users == u] == TRAIN).sum() >= 1


def test_random_split_is_seeded():
    users = _users([12] * 50)
    a, b, c = random_split(users, 7), random_split(users, 7), random_split(users, 8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_random_split_overall_ratio_is_about_8_1_1():
    users = _users([50] * 200)
    labels = random_split(users, 3)
    shares = np.bincount(labels, minlength=3) / len(labels)
    np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=1e-9)


def test_mmrec_rule_small_users_send_last_to_test_and_previous_to_valid():
    users = _users([5, 9])
    ts = np.array([50, 10, 40, 20, 30, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    labels = mmrec_split(users, seed=0, timestamps=ts)
    assert labels[0] == TEST and labels[2] == VALID  # times 50 and 40 are the last two
    assert (labels[[1, 3, 4]] == TRAIN).all()
    assert labels[5] == TEST and labels[6] == VALID and (labels[7:14] == TRAIN).all()


def test_mmrec_rule_larger_users_hold_out_their_latest_20_percent():
    n = 20
    users = np.zeros(n, dtype=np.int64)
    ts = np.random.default_rng(0).permutation(n)
    labels = mmrec_split(users, seed=0, timestamps=ts)
    order = np.argsort(ts)
    assert (labels[order[:16]] == TRAIN).all()
    assert (labels[order[16:18]] == VALID).all()
    assert (labels[order[18:]] == TEST).all()


def test_mmrec_rule_without_timestamps_is_seeded_and_keeps_counts():
    users = _users([6, 15])
    a, b = mmrec_split(users, 5), mmrec_split(users, 5)
    np.testing.assert_array_equal(a, b)
    assert [(a[users == 0] == s).sum() for s in (TRAIN, VALID, TEST)] == [4, 1, 1]
    assert [(a[users == 1] == s).sum() for s in (TRAIN, VALID, TEST)] == [12, 1, 2]


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown split"):
        split_labels(np.zeros(3, dtype=np.int64), "temporal", 0)


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=30), seed=st.integers(0, 2**31))
def test_every_user_keeps_a_training_row_and_holdouts_match_the_rules(counts, seed):
    users = np.random.default_rng(seed).permutation(_users(counts))  # rows in any order
    ts = np.random.default_rng(seed + 1).integers(0, 50, len(users))  # with ties
    rand = random_split(users, seed)
    mm = mmrec_split(users, seed, ts)
    for u, n in enumerate(counts):
        r, m = rand[users == u], mm[users == u]
        assert (r == TRAIN).sum() >= 1 and (m == TRAIN).sum() >= 1
        if n >= 3:
            hold = max(1, n // 10)
            assert ((r == VALID).sum(), (r == TEST).sum()) == (hold, hold)
        if 3 <= n < 10:
            assert ((m == VALID).sum(), (m == TEST).sum()) == (1, 1)
        if n >= 10:
            assert (m != TRAIN).sum() == round(0.2 * n)
        # MMRec holds out the latest rows: nothing held out is older than a training row.
        if (m != TRAIN).any():
            assert ts[users == u][m != TRAIN].min() >= ts[users == u][m == TRAIN].max()
