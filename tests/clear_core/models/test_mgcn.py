"""MGCN: purified modality views on similarity-weighted kNN graphs, fused with the user-item
view, and the side-vs-content InfoNCE; + CLEAR."""

from __future__ import annotations

import math

import pytest
import torch
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches_uninterrupted

from clear_core.item_graph import similarity_knn_graph
from clear_core.models import build_model, resolve_params
from clear_core.models.self_supervised import info_nce


def test_defaults_follow_mmrec():
    p = resolve_params("mgcn")
    assert (p["n_ui_layers"], p["n_layers"], p["knn_k"], p["temperature"]) == (2, 1, 10, 0.2)


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("mgcn", ds, {})
    losses = train_epochs(model, ds, 6, lr=0.01)
    assert losses[-1] < losses[0] * 0.9, losses


def test_info_nce_on_a_hand_worked_case():
    # Two orthogonal unit rows matched with themselves, τ = 0.5: each row's positive has cosine
    # 1 and its one negative cosine 0, so the loss is -log(e^2 / (e^2 + e^0)) = log(1 + e^-2).
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert float(info_nce(a, a, 0.5)) == pytest.approx(math.log(1 + math.exp(-2)))
    # Swapping the rows of the second view makes the negatives the positives: log(1 + e^2).
    assert float(info_nce(a, a.flip(0), 0.5)) == pytest.approx(math.log(1 + math.exp(2)))


def test_similarity_knn_graph_keeps_similarities_and_normalises_by_their_row_sums():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    dense = similarity_knn_graph(x, 2).to_dense()
    c = 1 / math.sqrt(2)
    # Each row keeps itself (1) and its most similar other row (cos 1/√2): row sums 1 + 1/√2
    # (row 1 keeps one of its two equal neighbours).
    deg = 1 + c
    assert dense[0, 0] == pytest.approx(1 / deg) and dense[0, 1] == pytest.approx(c / deg)
    assert dense[0, 2] == 0 and (dense > 0).sum() == 6


def test_contrastive_term_is_infonce_of_side_against_content_views():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("mgcn", ds, {"reg_weight": 0.0, "cl_weight": 1.0, "temperature": 0.3})
    users, pos, neg = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11])
    with_cl = model.loss(users, pos, neg)
    model.cl_weight = 0.0
    without = model.loss(users, pos, neg)
    content, side = model.forward_views()
    items = pos + ds.n_users
    expected = info_nce(side[items], content[items], 0.3) + info_nce(side[users], content[users], 0.3)
    torch.testing.assert_close(with_cl - without, expected, rtol=1e-5, atol=1e-6)


def test_scores_are_content_plus_side_views():
    ds = tiny_dataset()
    model = build_model("mgcn", ds, {})
    content, side = model.forward_views()
    final = (content + side).detach()
    torch.testing.assert_close(all_scores(model, ds), final[: ds.n_users] @ final[ds.n_users :].T)


def test_three_modalities_and_the_plugin():
    ds = tiny_dataset((("audio", 12), ("image", 24), ("text", 16)))
    model = build_model("mgcn", ds, {"projection": "fixed", "redundancy_rank": 2})
    losses = train_epochs(model, ds, 3)
    assert int(model.projection.refreshed_at) == 3 and losses[-1] < losses[0]
    assert torch.isfinite(all_scores(model, ds)).all()


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    assert_resume_matches_uninterrupted(tiny_dataset(), "mgcn", {"embedding_size": 16}, tmp_path)
