"""The normalised user-item graph, its degree-sensitive edge dropout and its propagation step."""

from __future__ import annotations

import numpy as np
import torch

from clear_core.graph import (
    degree_sensitive_keep,
    dropped_adjacency,
    edge_weights,
    normalized_adjacency,
    symmetric_propagate,
    user_item_adjacency,
)


def dense_reference(train, n_users, n_items):
    n = n_users + n_items
    a = np.zeros((n, n))
    for u, i in train:
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    d = a.sum(1)
    inv = np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d > 0)
    return inv[:, None] * a * inv[None, :]


TRAIN = np.array([(0, 0), (0, 1), (1, 1), (2, 2), (2, 0), (2, 1)])


def test_matches_dense_symmetric_normalisation_users_first_then_items():
    adj = normalized_adjacency(TRAIN, 4, 4)  # user 3 and item 3 have no edges
    assert adj.layout == torch.sparse_csr and adj.shape == (8, 8)
    dense = adj.to_dense().double().numpy()
    np.testing.assert_allclose(dense, dense_reference(TRAIN, 4, 4), rtol=1e-6)
    np.testing.assert_array_equal(dense, dense.T)
    assert not dense[3].any() and not dense[7].any()


def test_duplicate_rows_count_once():
    dup = np.concatenate([TRAIN, TRAIN[:2]])
    assert torch.equal(normalized_adjacency(dup, 3, 3).to_dense(), normalized_adjacency(TRAIN, 3, 3).to_dense())


def test_propagation_gradient_equals_dense_autograd():
    adj = normalized_adjacency(TRAIN, 3, 3)
    x = torch.randn(6, 4, requires_grad=True)
    weights = torch.randn(6, 4)
    (symmetric_propagate(adj, symmetric_propagate(adj, x)) * weights).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    dense = adj.to_dense()
    (dense @ (dense @ x_ref) * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def _star_and_pairs():
    # User 0 links to items 0..9 (a hub); users 1..10 each link to one private item 10..19.
    users = torch.tensor([0] * 10 + list(range(1, 11)))
    items = torch.tensor(list(range(10)) + list(range(10, 20)))
    return users, items


def test_edges_between_low_degree_nodes_survive_more_often():
    users, items = _star_and_pairs()
    w = edge_weights(users, items, 11, 20)
    torch.testing.assert_close(w[:10], torch.full((10,), 10**-0.5))
    torch.testing.assert_close(w[10:], torch.ones(10))
    torch.manual_seed(0)
    kept = torch.zeros(20)
    for _ in range(400):
        kept[degree_sensitive_keep(w, 0.5)] += 1
    assert kept[10:].mean() > 1.5 * kept[:10].mean()


def test_keep_count_is_exact_and_without_replacement():
    w = torch.rand(1000) + 0.1
    keep = degree_sensitive_keep(w, 0.2)
    assert len(keep) == 200 and len(set(keep.tolist())) == 200
    assert len(degree_sensitive_keep(w, 1.0)) == 1000


def test_one_rule_float64_inverse_roots_rounded_once_and_no_epsilon():
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 15, 80), rng.integers(0, 12, 80)], 1), axis=0)
    expected = torch.from_numpy(dense_reference(pairs, 15, 12)).float()  # float64, rounded once
    assert torch.equal(normalized_adjacency(pairs, 15, 12).to_dense(), expected)
    t = torch.as_tensor(pairs)
    assert torch.equal(user_item_adjacency(t[:, 0], t[:, 1], 15, 12).to_dense(), expected)
    # No dropout: the epoch's graph is the full graph, to the bit.
    full = dropped_adjacency(t[:, 0], t[:, 1], edge_weights(t[:, 0], t[:, 1], 15, 12), 15, 12, 0.0)
    assert torch.equal(full.to_dense(), expected)


def test_dropped_adjacency_is_symmetric_and_renormalised():
    users, items = _star_and_pairs()
    torch.manual_seed(1)
    adj = dropped_adjacency(users, items, edge_weights(users, items, 11, 20), 11, 20, 0.5).to_dense()
    torch.testing.assert_close(adj, adj.T)
    assert int((adj > 0).sum()) == 20  # 10 kept edges, both directions
