"""DualGNN: per-modality GCN on normalised [preference ; MLP(feature)], per-user modality
weights, the user co-occurrence graph (top-k, softmax, padded every epoch), log2 BPR; + CLEAR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches_uninterrupted

from clear_core.errors import ConfigError
from clear_core.models import build_model, resolve_params
from clear_core.models.dualgnn import co_occurrence_neighbours, padded_user_graph


def test_defaults_follow_mmrec():
    p = resolve_params("dualgnn")
    assert (p["embedding_size"], p["user_graph_k"], p["n_layers"]) == (64, 40, 2)
    assert p["trainable_features"] is False and p["projection"] == "none"


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("dualgnn", ds, {})
    losses = train_epochs(model, ds, 5)
    assert losses[-1] < losses[0] * 0.95, losses


def test_co_occurrence_keeps_the_top_k_users_by_shared_items_ties_to_the_lower_id():
    # user 0 shares 2 items with user 1, 1 with users 2 and 3; user 4 shares nothing
    train = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 1], [3, 0], [4, 5]])
    nbrs, counts, found = co_occurrence_neighbours(train, 5, 6, k=2)
    assert nbrs[0].tolist() == [1, 2] and counts[0].tolist() == [2.0, 1.0]
    assert found.tolist() == [2, 2, 2, 2, 0]
    # user 2 shares item 1 with users 0 and 1 (count 1 each), nothing with 3
    assert nbrs[2].tolist() == [0, 1]


def test_short_neighbour_lists_are_padded_from_the_growing_list_and_softmaxed():
    nbrs = torch.tensor([[7, 9, 0, 0], [3, 0, 0, 0], [0, 0, 0, 0]])
    counts = torch.tensor([[2.0, 1.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    found = torch.tensor([2, 1, 0])
    padded, weights = padded_user_graph(nbrs, counts, found, torch.Generator().manual_seed(0))
    assert set(padded[0].tolist()) <= {7, 9} and padded[0, :2].tolist() == [7, 9]
    assert padded[1].tolist() == [3, 3, 3, 3]
    torch.testing.assert_close(weights[1], torch.full((4,), 0.25))
    padded_counts = torch.where(padded[0] == 7, 2.0, 1.0)
    torch.testing.assert_close(weights[0], torch.softmax(padded_counts, 0))
    assert weights[2].abs().sum() == 0  # no neighbour: aggregates nothing


def test_forward_is_the_weighted_modality_sum_plus_the_user_graph_aggregation():
    ds = tiny_dataset()
    model = build_model("dualgnn", ds, {"embedding_size": 8, "n_layers": 2})
    torch.manual_seed(0)
    model.on_epoch_start(1)
    adj = model.adjacency.to_dense()
    graph = model._user_graph[0].to_dense()
    with torch.no_grad():
        feats = model.encode()
        outs = []
        for m in model.modality_names:
            x = torch.cat([model.preferences[m], model.second_layers[m](torch.nn.functional.leaky_relu(feats[m]))])
            x = x / x.norm(dim=1, keepdim=True)
            outs.append(x + adj @ x + adj @ adj @ x)
        w = model.user_modality_weights
        users = sum(w[:, i : i + 1] * o[: ds.n_users] for i, o in enumerate(outs))
        items = sum(o[ds.n_users :] for o in outs)
        got_users, got_items = model.propagate()
        torch.testing.assert_close(got_users, users + graph @ users, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_items, items, rtol=1e-5, atol=1e-6)


def test_loss_is_log2_bpr_plus_the_preference_and_weight_penalties():
    ds = tiny_dataset()
    model = build_model("dualgnn", ds, {"embedding_size": 8, "reg_weight": 0.2})
    users, pos, neg = torch.tensor([0, 1, 1]), torch.tensor([2, 3, 4]), torch.tensor([5, 6, 7])
    torch.manual_seed(0)
    model.on_epoch_start(1)
    with torch.no_grad():
        u_all, i_all = model.propagate()
        diff = (u_all[users] * i_all[pos]).sum(-1) - (u_all[users] * i_all[neg]).sum(-1)
        ranking = -torch.log2(torch.sigmoid(diff)).mean()
        reg = sum((model.preferences[m][users] ** 2).mean() for m in model.modality_names)
        reg = reg + (model.user_modality_weights ** 2).mean()
        torch.testing.assert_close(model.loss(users, pos, neg), ranking + 0.2 * reg)
    assert math.isclose(float(ranking), float(-torch.nn.functional.logsigmoid(diff).mean() / math.log(2)), rel_tol=1e-5)


def test_encoder_is_the_wide_first_mlp_layer_and_only_one_layer_is_accepted():
    ds = tiny_dataset()
    model = build_model("dualgnn", ds, {"embedding_size": 8})
    assert model.encoders["image"].out_features == 32 and model.second_layers["image"].in_features == 32
    with pytest.raises(ConfigError, match="encoder_layers"):
        build_model("dualgnn", ds, {"encoder_layers": 2})


def test_plugin_is_switched_on_by_configuration():
    ds = tiny_dataset()
    model = build_model("dualgnn", ds, {"projection": "fixed", "redundancy_rank": 2})
    losses = train_epochs(model, ds, 3)
    assert int(model.projection.refreshed_at) == 3 and model.encode()["image"].shape[1] == 256
    assert losses[-1] < losses[0]
    assert torch.isfinite(all_scores(model, ds)).all()


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    # The user graph's padding is redrawn every epoch from the global RNG.
    assert_resume_matches_uninterrupted(tiny_dataset(), "dualgnn", {"embedding_size": 16}, tmp_path)
