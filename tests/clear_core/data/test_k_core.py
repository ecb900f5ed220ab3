"""Iterative k-core: a fixpoint where every user and item keeps at least k rows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clear_core.data.k_core import filter_k_core, k_core_mask, read_id_map, reindex, write_id_maps


def _naive_k_core(pairs, k):
    rows = set(pairs)
    while True:
        du, di = {}, {}
        for u, i in rows:
            du[u] = du.get(u, 0) + 1
            di[i] = di.get(i, 0) + 1
        keep = {(u, i) for u, i in rows if du[u] >= k and di[i] >= k}
        if keep == rows:
            return rows
        rows = keep


pairs_strategy = st.lists(
    st.tuples(st.integers(0, 14), st.integers(0, 11)), min_size=1, max_size=150, unique=True
)


@settings(max_examples=60, deadline=None)
@given(pairs=pairs_strategy, k=st.integers(1, 5))
def test_k_core_is_a_fixpoint_and_matches_the_definition(pairs, k):
    users = np.array([p[0] for p in pairs])
    items = np.array([p[1] for p in pairs])
    mask = k_core_mask(users, items, k)
    if mask.any():
        assert np.bincount(users[mask]).max() >= k
        assert (np.bincount(users[mask])[np.unique(users[mask])] >= k).all()
        assert (np.bincount(items[mask])[np.unique(items[mask])] >= k).all()
    # Applying the filter again removes nothing, and the result is the largest such set.
    assert k_core_mask(users[mask], items[mask], k).all() if mask.any() else True
    kept = {p for p, m in zip(pairs, mask, strict=True) if m}
    assert kept == _naive_k_core(pairs, k)


def test_removal_cascades():
    # Item 9 has one row, so it goes; that leaves user 0 with one row, so user 0 goes too.
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([9, 1, 1, 2, 1, 2])
    mask = k_core_mask(users, items, 2)
    assert mask.tolist() == [False, False, True, True, True, True]


def test_reindex_gives_contiguous_ids_and_maps_back():
    raw_u = np.array(["bob", "amy", "bob", "cid"])
    raw_i = np.array(["B2", "B1", "B1", "B2"])
    r = reindex(raw_u, raw_i)
    assert r.user.tolist() == [1, 0, 1, 2] and r.item.tolist() == [1, 0, 0, 1]
    np.testing.assert_array_equal(r.user_ids[r.user], raw_u)
    np.testing.assert_array_equal(r.item_ids[r.item], raw_i)


def test_k_core_then_reindex_with_string_ids(tmp_path):
    raw_u = np.array(["u1"] * 3 + ["u2"] * 3 + ["u3"])
    raw_i = np.array(["a", "b", "c", "a", "b", "c", "a"])
    mask, kept = filter_k_core(raw_u, raw_i, 2)
    assert mask.tolist() == [True] * 6 + [False]
    assert kept.user_ids.tolist() == ["u1", "u2"]
    names = write_id_maps(tmp_path, kept.user_ids, kept.item_ids)
    assert read_id_map(tmp_path / names["items"]).tolist() == ["a", "b", "c"]
