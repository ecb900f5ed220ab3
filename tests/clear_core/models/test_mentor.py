"""MENTOR: per-modality preference GCNs fused with learned user weights over a kNN item graph,
and its multi-level self-supervision (alignment, feature mask, graph perturbation); + CLEAR."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches_uninterrupted

from clear_core.models import build_model, resolve_params
from clear_core.models.mentor import distribution_alignment, perturb
from clear_core.models.self_supervised import info_nce

QUIET = {"align_weight": 0.0, "mask_weight_f": 0.0, "mask_weight_g": 0.0, "reg_weight": 0.0}
BATCH = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11]))


def build(**over):
    torch.manual_seed(0)
    return build_model("mentor", tiny_dataset(), {"embedding_size": 8, "perturbation_eps": 0.0, **over})


def test_defaults_follow_the_reference():
    p = resolve_params("mentor")
    assert (p["encoder_layers"], p["mask_weight_f"], p["align_weight"], p["perturbation_eps"]) == (2, 1.5, 0.1, 0.1)
    model = build_model("mentor", tiny_dataset(), {})
    assert model.encoders["image"][0].out_features == 4 * 64  # the reference's 4 x dim_latent hidden layer


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("mentor", ds, {"embedding_size": 16})
    losses = train_epochs(model, ds, 5, lr=0.01)
    assert losses[-1] < losses[0] * 0.95, losses


def test_ranking_term_is_bpr_in_base_two():
    model = build(**QUIET)
    loss = model.loss(*BATCH)
    final = model.forward_all()["fused"]
    users, pos, neg = BATCH
    n = model.n_users
    x = (final[users] * final[pos + n]).sum(-1) - (final[users] * final[neg + n]).sum(-1)
    torch.testing.assert_close(loss, -torch.log2(torch.sigmoid(x)).mean())


def test_distribution_alignment_on_a_hand_worked_case():
    # means 1, 1, 4 and unbiased variances 2, 0, 0:
    # (a,b) |2-0| + 0, (a,c) 2 + 3, (b,c) 0 + 3  ->  10.
    a, b, c = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[4.0], [4.0]])
    assert float(distribution_alignment([a, b, c])) == pytest.approx(10.0)


def test_alignment_term_uses_guide_fused_and_each_modality_table():
    with_align = build(**{**QUIET, "align_weight": 0.5})
    base = build(**QUIET)
    diff = with_align.loss(*BATCH) - base.loss(*BATCH)
    tables = base.forward_all()["tables"]
    assert len(tables) == 2 + 2  # guide, fused, image, text
    torch.testing.assert_close(diff, 0.5 * distribution_alignment(tables))


def test_feature_mask_term_adds_its_value_and_no_gradient():
    grads = {}
    for weight in (0.0, 1.5):
        model = build(**{**QUIET, "mask_weight_f": weight, "dropout": 0.0})
        loss = model.loss(*BATCH)
        loss.backward()
        grads[weight] = (float(loss.detach()), model.item_id.grad.clone())
    final = build(**QUIET).forward_all()["fused"].detach()
    model = build(**QUIET)
    n = model.n_users
    mask = sum(1 - F.cosine_similarity(part, model.mask_mlp(part)).mean() for part in (final[:n], final[n:]))
    assert grads[1.5][0] - grads[0.0][0] == pytest.approx(1.5 * float(mask), rel=1e-4)
    torch.testing.assert_close(grads[1.5][1], grads[0.0][1])


def test_graph_perturbation_term_is_infonce_between_the_noisy_branches_over_all_nodes():
    with_g = build(**{**QUIET, "mask_weight_g": 0.1, "temperature": 0.4})
    base = build(**QUIET)
    diff = with_g.loss(*BATCH) - base.loss(*BATCH)
    n1, n2 = base.forward_all()["noisy"]
    n = base.n_users
    expected = info_nce(n1[:n], n2[:n], 0.4) + info_nce(n1[n:], n2[n:], 0.4)
    torch.testing.assert_close(diff, 0.1 * expected, rtol=1e-4, atol=1e-6)


def test_perturbation_moves_each_row_by_eps_along_the_sign_of_h():
    h = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 1.0, 3.0]])
    moved = perturb(h, 0.1)
    delta = moved - h
    torch.testing.assert_close(delta.norm(dim=1), torch.full((2,), 0.1))
    assert torch.all(delta * torch.sign(h) >= 0)
    assert torch.equal(perturb(h, 0.0), h)


def test_gcn_is_normalised_input_plus_two_propagations():
    model = build()
    gcn = model.gcns["image"]
    items = torch.randn(model.n_items, 8)
    x = F.normalize(torch.cat([gcn.preference, items]))
    adj = model.adjacency.to_dense()
    torch.testing.assert_close(gcn(model.adjacency, items), x + adj @ x + adj @ adj @ x, rtol=1e-4, atol=1e-5)


def test_scores_use_current_weights_and_are_deterministic():
    ds = tiny_dataset()
    model = build()
    a, b = all_scores(model, ds), all_scores(model, ds)
    assert torch.equal(a, b) and a.shape == (ds.n_users, ds.n_items)
    final = model.fused(model.modality_reps()).detach()
    torch.testing.assert_close(a, final[: ds.n_users] @ final[ds.n_users :].T)


def test_plugin_is_switched_on_by_configuration():
    ds = tiny_dataset()
    model = build_model("mentor", ds, {"embedding_size": 16, "projection": "fixed", "redundancy_rank": 2})
    losses = train_epochs(model, ds, 3, lr=0.01)
    assert int(model.projection.refreshed_at) == 3 and losses[-1] < losses[0]


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    assert_resume_matches_uninterrupted(tiny_dataset(), "mentor", {"embedding_size": 8}, tmp_path, epochs=3)
