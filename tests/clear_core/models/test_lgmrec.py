"""LGMRec: local (collaborative + modality) graph embeddings, a global hypergraph embedding per
modality, and the cross-modal hypergraph contrast; + CLEAR."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches

from clear_core.errors import ConfigError
from clear_core.models import build_model, resolve_params
from clear_core.models.self_supervised import info_nce_rows


def test_defaults_follow_mmrec_and_features_are_frozen_behind_a_bias_free_map():
    p = resolve_params("lgmrec")
    assert (p["hyper_num"], p["keep_rate"], p["alpha"], p["trainable_features"]) == (4, 0.5, 0.3, False)
    model = build_model("lgmrec", tiny_dataset(), {})
    trained = {n for n, q in model.named_parameters() if q.requires_grad}
    assert "encoders.image.weight" in trained and "encoders.image.bias" not in trained
    assert not model.encoders["image"].bias.any()


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("lgmrec", ds, {})
    losses = train_epochs(model, ds, 5, lr=0.01)
    assert losses[-1] < losses[0] * 0.9, losses


def test_contrast_rows_on_a_hand_worked_case():
    # Anchor (1,0), positive (0,1), candidates {(0,1), (1,0)}, τ = 1:
    # -log(e^0 / (e^0 + e^1)) = log(1 + e).
    rows = info_nce_rows(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 2.0]]),
                         torch.tensor([[0.0, 5.0], [1.0, 0.0]]), 1.0)
    assert float(rows[0]) == pytest.approx(math.log(1 + math.e))



@pytest.mark.parametrize("temperature", [0.2, 0.0125])
def test_contrast_rows_equal_the_logsumexp_form_on_both_sides_of_the_overflow_guard(temperature):
    # τ = 0.2 takes the plain sum of exps; τ = 0.0125 (logits up to ±80, where a sum of exps
    # could overflow float32) takes the logsumexp path. Both must give the same loss.
    g = torch.Generator().manual_seed(0)
    a, p, c = (torch.randn(n, 8, generator=g) for n in (16, 16, 300))
    expected = (torch.logsumexp(torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(c, dim=1).T
                                / temperature, dim=1)
                - (torch.nn.functional.normalize(a, dim=1) * torch.nn.functional.normalize(p, dim=1)).sum(dim=1)
                / temperature)
    rows = info_nce_rows(a, p, c, temperature)
    assert torch.isfinite(rows).all()
    torch.testing.assert_close(rows, expected, rtol=1e-5, atol=1e-4)

@pytest.mark.parametrize("modalities", [(("image", 24), ("text", 16)), (("audio", 16), ("image", 24))],
                         ids=["amazon-image-text", "tiktok-audio-image"])
def test_hypergraph_contrast_is_a_sum_over_the_batch_against_every_row(modalities):
    # Anchored on the image embeddings with the other modality's rows as negatives, as the
    # reference's ssl_triple_loss(uv_embs[users], ut_embs[users], ut_embs), also where the other
    # modality's name sorts first (TikTok's audio).
    ds = tiny_dataset(modalities)
    torch.manual_seed(0)
    model = build_model("lgmrec", ds, {"hyperedge_noise": False, "keep_rate": 1.0, "reg_weight": 0.0})
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    model.train()
    model.cl_weight = 1.0
    with_cl = model.loss(users, pos, neg)
    model.cl_weight = 0.0
    without = model.loss(users, pos, neg)
    _, hyper = model.forward_all()
    other = next(name for name, _ in modalities if name != "image")
    (ui, ii), (ut, it) = hyper["image"], hyper[other]

    def by_hand(anchor, positive, table):
        a, p, t = F.normalize(anchor), F.normalize(positive), F.normalize(table)
        pos_score = torch.exp((a * p).sum(1) / 0.2)
        all_score = torch.exp(a @ t.T / 0.2).sum(1)
        return -torch.log(pos_score / all_score).sum()

    expected = by_hand(ui[users], ut[users], ut) + by_hand(ii[pos], it[pos], it)
    torch.testing.assert_close(with_cl - without, expected, rtol=1e-4, atol=1e-5)


def test_hypergraph_embedding_is_two_step_message_passing_through_soft_hyperedges():
    ds = tiny_dataset()
    model = build_model("lgmrec", ds, {"hyperedge_noise": False, "keep_rate": 1.0})
    model.train()
    items = torch.randn(ds.n_items, 64)
    users_out, items_out = model.hypergraph("image", items)
    logits = model.raw("image") @ model.hyperedges["image"]
    h_i = torch.softmax(logits / 0.2, dim=1)
    adj = torch.zeros(ds.n_users, ds.n_items)
    adj[torch.as_tensor(ds.train[:, 0]), torch.as_tensor(ds.train[:, 1])] = 1.0
    h_u = torch.softmax(adj @ logits / 0.2, dim=1)
    torch.testing.assert_close(items_out, h_i @ (h_i.T @ items), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(users_out, h_u @ (h_i.T @ items), rtol=1e-4, atol=1e-5)


def test_scoring_is_deterministic_though_training_draws_gumbel_noise():
    ds = tiny_dataset()
    model = build_model("lgmrec", ds, {})
    torch.testing.assert_close(all_scores(model, ds), all_scores(model, ds), rtol=0, atol=0)
    model.train()
    a, _ = model.forward_all()
    b, _ = model.forward_all()
    assert not torch.equal(a, b)


def test_needs_two_modalities_and_one_linear_encoder():
    full = tiny_dataset()
    one = dataclasses.replace(full, features={"image": full.features["image"]})
    with pytest.raises(ConfigError) as info:
        build_model("lgmrec", one, {"encoder_layers": 2})
    text = str(info.value)
    assert "at least two modalities" in text and "encoder_layers" in text


def test_plugin_is_switched_on_by_configuration():
    ds = tiny_dataset()
    model = build_model("lgmrec", ds, {"projection": "fixed", "redundancy_rank": 2})
    losses = train_epochs(model, ds, 3)
    assert int(model.projection.refreshed_at) == 3 and losses[-1] < losses[0]
    assert torch.isfinite(all_scores(model, ds)).all()


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    assert_resume_matches(tiny_dataset(), "lgmrec", {"embedding_size": 16}, tmp_path)
