"""The kNN item-item graph of the multimodal models and its propagation step."""

from __future__ import annotations

import torch

from clear_core.item_graph import knn_item_graph, propagate_with_transpose, to_csr_pair


def test_knn_graph_rows_have_k_unit_edges_normalised():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(2))
    g = knn_item_graph(x, 4, chunk_size=7).to_dense()
    assert ((g > 0).sum(dim=1) == 4).all()
    # Every item is its own nearest cosine neighbour (FREEDOM keeps the self-loop).
    assert (torch.diagonal(g) > 0).all()


def test_item_graph_propagation_gradient_matches_the_dense_transpose():
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
