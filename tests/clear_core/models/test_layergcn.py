"""LayerGCN: layer refinement by cosine similarity to the ego layer, alternating edge pruning,
summed BPR + ½ L2 on the ego embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches_uninterrupted

from clear_core.errors import ConfigError
from clear_core.models import build_model, resolve_params


def test_defaults_follow_mmrec():
    p = resolve_params("layergcn")
    assert (p["embedding_size"], p["n_layers"]) == (64, 4)
    assert p["edge_dropout"] in (0.0, 0.1, 0.2)


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("layergcn", ds, {})
    losses = train_epochs(model, ds, 6)
    # BPR is summed over the batch (as MMRec's LayerGCN): the loss starts near 512 ln 2
    assert losses[-1] < losses[0] * 0.97, losses


def test_each_layer_is_rescaled_by_its_cosine_to_the_ego_layer_and_the_output_sums_layers_1_to_L():
    ds = tiny_dataset()
    model = build_model("layergcn", ds, {"n_layers": 2, "edge_dropout": 0.0})
    adj = model.adjacency.to_dense()
    ego = model.embedding.detach()
    x1 = adj @ ego
    x1 = (x1 * ego).sum(-1, keepdim=True) / (x1.norm(dim=1, keepdim=True) * ego.norm(dim=1, keepdim=True)) * x1
    x2 = adj @ x1
    x2 = F.cosine_similarity(x2, ego, dim=-1).unsqueeze(-1) * x2
    with torch.no_grad():
        torch.testing.assert_close(model.propagate(model.adjacency), x1 + x2, rtol=1e-5, atol=1e-6)


def test_loss_is_the_summed_bpr_plus_half_the_squared_ego_norms():
    ds = tiny_dataset()
    model = build_model("layergcn", ds, {"n_layers": 1, "edge_dropout": 0.0, "reg_weight": 0.3})
    users, pos, neg = torch.tensor([0, 1, 1]), torch.tensor([2, 3, 4]), torch.tensor([5, 6, 7])
    with torch.no_grad():
        final = model.propagate(model.adjacency)
        u, p, n = final[users], final[model.n_users + pos], final[model.n_users + neg]
        bpr = sum(-torch.log(torch.sigmoid((u[i] * p[i]).sum() - (u[i] * n[i]).sum())) for i in range(3))
        ego = model.embedding
        l2 = 0.5 * sum(ego[r].square().sum() for r in [*users, *(model.n_users + pos), *(model.n_users + neg)])
        torch.testing.assert_close(model.loss(users, pos, neg), bpr + 0.3 * l2)


def test_pruning_alternates_degree_sensitive_and_uniform_and_keeps_the_full_graph_for_scoring():
    ds = tiny_dataset()
    model = build_model("layergcn", ds, {"edge_dropout": 0.5})
    n_edges = len(model.train_users)
    seen = []
    for epoch in (1, 2):
        torch.manual_seed(0)
        model.on_epoch_start(epoch)
        adj = model._epoch_adjacency
        # both directions of half the edges survive
        assert adj._nnz() == 2 * int(n_edges * 0.5)
        seen.append(adj.to_dense())
    # same random stream, other weights: the two epochs keep different edges
    assert not torch.equal(seen[0] != 0, seen[1] != 0)
    model.eval()
    assert model.training_adjacency() is model.adjacency


def test_bad_parameters_are_listed_together_and_layergcn_needs_a_layer():
    with pytest.raises(ConfigError) as err:
        build_model("layergcn", tiny_dataset(), {"reg_weight": -1.0, "edge_dropout": 1.0})
    assert "reg_weight" in str(err.value) and "edge_dropout" in str(err.value)
    with pytest.raises(ConfigError, match="n_layers: expected >= 1"):
        build_model("layergcn", tiny_dataset(), {"n_layers": 0})


def test_scores_are_finite_and_cover_every_item():
    ds = tiny_dataset()
    model = build_model("layergcn", ds, {})
    train_epochs(model, ds, 1)
    scores = all_scores(model, ds)
    assert scores.shape == (ds.n_users, ds.n_items) and torch.isfinite(scores).all()


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    # Edge pruning draws from the global RNG every epoch: the checkpoint must restore it.
    assert_resume_matches_uninterrupted(tiny_dataset(), "layergcn", {"embedding_size": 16}, tmp_path)
