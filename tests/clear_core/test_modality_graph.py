"""Graphs of the multimodal models: degree-sensitive edge dropout and the kNN item graph."""

from __future__ import annotations

import numpy as np
import torch

from clear_core.graph import normalized_adjacency
from clear_core.modality_graph import (
    bipartite_adjacency,
    degree_sensitive_keep,
    dropped_adjacency,
    edge_weights,
    knn_item_graph,
)


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


def test_full_adjacency_matches_the_trainers_graph():
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 15, 80), rng.integers(0, 12, 80)], 1), axis=0)
    t = torch.as_tensor(pairs)
    mine = bipartite_adjacency(t[:, 0], t[:, 1], 15, 12).to_dense()
    theirs = normalized_adjacency(pairs, 15, 12).to_dense()
    torch.testing.assert_close(mine, theirs)


def test_dropped_adjacency_is_symmetric_and_renormalised():
    users, items = _star_and_pairs()
    torch.manual_seed(1)
    adj = dropped_adjacency(users, items, edge_weights(users, items, 11, 20), 11, 20, 0.5).to_dense()
    torch.testing.assert_close(adj, adj.T)
    assert int((adj > 0).sum()) == 20  # 10 kept edges, both directions


def test_knn_graph_rows_have_k_unit_edges_normalised():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(2))
    g = knn_item_graph(x, 4, chunk_size=7).to_dense()
    assert ((g > 0).sum(dim=1) == 4).all()
    # Every item is its own nearest cosine neighbour (FREEDOM keeps the self-loop).
    assert (torch.diagonal(g) > 0).all()


def test_item_graph_propagation_gradient_matches_the_dense_transpose():
    from clear_core.modality_graph import propagate_with_transpose, to_csr_pair

    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g = knn_item_graph(x.float(), 3).double()
    adj, adj_t = to_csr_pair(g)
    h = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    out = propagate_with_transpose(adj, adj_t, h)
    weights = torch.randn(20, 6, dtype=torch.float64)
    (out * weights).sum().backward()
    dense = g.to_dense()
    torch.testing.assert_close(out, dense @ h)
    torch.testing.assert_close(h.grad, dense.T @ weights)
