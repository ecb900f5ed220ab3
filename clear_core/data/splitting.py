"""The two per-user splits of the MMRec protocol, seeded and vectorised.

* ``random``: LATTICE's random per-user 8:1:1 (what the Baby, Sports and Clothing files use):
  each user's rows are shuffled; ``max(1, floor(0.1 n))`` go to valid, as many to test, the
  rest to train. (Checked against the published Baby files: 5-19 rows -> 1/1, 20-29 -> 2/2.)
* ``mmrec``: MMRec's rule: users with fewer than 10 rows send their last row to test and the
  one before to valid; others send 20 % (rounded) of their latest rows to valid+test, half
  each (test gets the later ones). "Last" is by timestamp when given, ties and missing
  timestamps broken by a seeded shuffle.

Labels are 0 train, 1 valid, 2 test (MMRec's ``x_label``).
"""

from __future__ import annotations

import numpy as np

SPLIT_METHODS = ("random", "mmrec")
TRAIN, VALID, TEST = 0, 1, 2


def _rank_within_user(users: np.ndarray, order_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its 0-based position among its user's rows by ``order_key``, and the
    user's row count."""
    order = np.lexsort((order_key, users))
    su = users[order]
    starts = np.r_[0, np.flatnonzero(su[1:] != su[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(su)])
    pos_sorted = np.arange(len(su)) - np.repeat(starts, counts)
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = pos_sorted
    n = np.empty(len(users), dtype=np.int64)
    n[order] = np.repeat(counts, counts)
    return rank, n


def random_split(users: np.ndarray, seed: int, ratio: float = 0.1) -> np.ndarray:
    """LATTICE's random per-user split; ``ratio`` of each user's rows to valid and to test."""
    users = np.asarray(users, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rank, n = _rank_within_user(users, rng.random(len(users)))
    n_hold = np.maximum(1, np.floor(n * ratio + 1e-9).astype(np.int64))
    # Users with fewer than 3 rows keep at least one in train, then fill test before valid.
    n_test = np.minimum(n_hold, np.maximum(n - 1, 0))
    n_valid = np.minimum(n_hold, np.maximum(n - 1 - n_test, 0))
    labels = np.full(len(users), TRAIN, dtype=np.int8)
    labels[rank < n_test] = TEST
    labels[(rank >= n_test) & (rank < n_test + n_valid)] = VALID
    return labels


def mmrec_split(
    users: np.ndarray, seed: int, timestamps: np.ndarray | None = None, holdout: float = 0.2
) -> np.ndarray:
    """MMRec's rule (see the module docstring)."""
    users = np.asarray(users, dtype=np.int64)
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(len(users))
    if timestamps is None:
        key = tiebreak
    else:
        # Sort by time, ties by the random draw: one lexsort on (tiebreak, time, user).
        ts = np.asarray(timestamps, dtype=np.float64)
        order = np.lexsort((tiebreak, ts))
        key = np.empty(len(users), dtype=np.float64)
        key[order] = np.arange(len(users))
    rank, n = _rank_within_user(users, key)
    from_end = n - 1 - rank  # 0 = latest row of the user
    small = n < 10
    n_hold = np.where(small, np.minimum(2, n - 1), np.rint(n * holdout).astype(np.int64))
    n_test = np.where(small, np.minimum(1, n - 1), n_hold - n_hold // 2)
    labels = np.full(len(users), TRAIN, dtype=np.int8)
    labels[from_end < n_test] = TEST
    labels[(from_end >= n_test) & (from_end < n_hold)] = VALID
    return labels


def split_labels(
    users: np.ndarray, method: str, seed: int, timestamps: np.ndarray | None = None
) -> np.ndarray:
    if method == "random":
        return random_split(users, seed)
    if method == "mmrec":
        return mmrec_split(users, seed, timestamps)
    raise ValueError(f"unknown split {method!r}; expected one of {SPLIT_METHODS}")
