"""LATTICE: weighted kNN item graphs (original, frozen; learned, rebuilt each epoch with
gradients at its first batch), row-normalised user-item graph with self-loops; + CLEAR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches_uninterrupted

from clear_core.models import build_model, resolve_params


def dense_knn_laplacian(features: torch.Tensor, k: int) -> torch.Tensor:
    """MMRec's build_sim -> build_knn_neighbourhood -> compute_normalized_laplacian, dense."""
    unit = features / features.norm(dim=1, keepdim=True)
    sim = unit @ unit.T
    val, ind = torch.topk(sim, k, dim=-1)
    adj = torch.zeros_like(sim).scatter_(-1, ind, val)
    return mixed_laplacian(adj)


def mixed_laplacian(adj: torch.Tensor) -> torch.Tensor:
    d = adj.sum(-1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return torch.diag(d) @ adj @ torch.diag(d)


def dense(graph, n):
    rows, cols, values = graph
    return torch.zeros(n, n).index_put_((rows, cols), values, accumulate=True)


def test_defaults_follow_mmrec():
    p = resolve_params("lattice")
    assert (p["knn_k"], p["n_layers"], p["item_graph_layers"], p["original_graph_weight"]) == (10, 2, 1, 0.9)
    assert p["trainable_features"] is True and p["projection"] == "none"


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("lattice", ds, {})
    losses = train_epochs(model, ds, 5)
    assert losses[-1] < losses[0] * 0.95, losses


def test_item_graph_is_the_lambda_mix_of_learned_and_original_weighted_knn_graphs():
    ds = tiny_dataset()
    model = build_model("lattice", ds, {"knn_k": 4, "original_graph_weight": 0.3})
    with torch.no_grad():
        model.modality_logits.copy_(torch.tensor([0.2, -0.4]))
        w = torch.softmax(model.modality_logits, 0)
        feats = model.encode()
        raw = {m: torch.as_tensor(ds.features[m]).float() for m in model.modality_names}
        learned = mixed_laplacian(sum(
            w[i] * torch.zeros(ds.n_items, ds.n_items).scatter_(
                -1, *reversed(torch.topk(F.normalize(feats[m]) @ F.normalize(feats[m]).T, 4, dim=-1)))
            for i, m in enumerate(model.modality_names)))
        original = sum(w[i] * dense_knn_laplacian(raw[m], 4) for i, m in enumerate(model.modality_names))
        expected = 0.7 * learned + 0.3 * original
        torch.testing.assert_close(dense(model.item_graph(), ds.n_items), expected, rtol=1e-5, atol=1e-6)


def test_user_item_graph_is_row_normalised_with_self_loops():
    ds = tiny_dataset()
    model = build_model("lattice", ds, {})
    adj = model.adjacency.to_dense()
    n = ds.n_users + ds.n_items
    torch.testing.assert_close(adj.sum(1), torch.ones(n))
    degree = (adj > 0).sum(1).float()  # neighbours + self
    torch.testing.assert_close(adj.diagonal(), 1.0 / degree)
    torch.testing.assert_close(model.adjacency_t.to_dense(), adj.T)


def test_item_graph_learns_only_through_the_first_batch_of_each_epoch():
    ds = tiny_dataset()
    model = build_model("lattice", ds, {})
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    encoder = model.encoders[model.modality_names[0]].weight
    model.train()
    model.on_epoch_start(1)
    for batch in range(2):
        model.zero_grad(set_to_none=True)
        model.loss(users, pos, neg).backward()
        got_gradient = encoder.grad is not None and bool(encoder.grad.abs().sum() > 0)
        assert got_gradient == (batch == 0)
        assert (model.modality_logits.grad is not None) == (batch == 0)
    model.on_epoch_start(2)
    model.zero_grad(set_to_none=True)
    model.loss(users, pos, neg).backward()
    assert encoder.grad is not None


def test_item_vector_adds_the_normalised_item_graph_propagation():
    ds = tiny_dataset()
    model = build_model("lattice", ds, {"n_layers": 0, "item_graph_layers": 1})
    with torch.no_grad():
        graph = model.item_graph()
        _, items = model.propagate(graph)
        h = dense(graph, ds.n_items) @ model.item_embedding
        torch.testing.assert_close(items, model.item_embedding + F.normalize(h, dim=1), rtol=1e-5, atol=1e-6)


def test_plugin_is_switched_on_by_configuration():
    ds = tiny_dataset()
    model = build_model("lattice", ds, {"projection": "fixed", "redundancy_rank": 2})
    losses = train_epochs(model, ds, 3)
    assert int(model.projection.refreshed_at) == 3
    assert losses[-1] < losses[0]
    assert torch.isfinite(all_scores(model, ds)).all()


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    assert_resume_matches_uninterrupted(tiny_dataset(), "lattice", {"embedding_size": 16}, tmp_path)
