"""The normalised user-item adjacency and its propagation step."""

from __future__ import annotations

import numpy as np
import torch

from clear_core.graph import normalized_adjacency, symmetric_propagate


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
