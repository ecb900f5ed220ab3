"""SLMRec: per-channel LightGCN, concat fusion, in-batch InfoNCE, the FAC alignment chain and
Adam's weight decay written as a loss term; the CLEAR plug-in by configuration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches_uninterrupted

from clear_core.models import build_model, resolve_params
from clear_core.models.slmrec import chain_order, info_nce


def test_defaults_follow_mmrec():
    p = resolve_params("slmrec")
    assert (p["embedding_size"], p["n_layers"], p["temperature"], p["weight_decay"]) == (64, 3, 0.2, 1e-4)
    assert p["projection"] == "none" and p["trainable_features"] is False


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("slmrec", ds, {})
    losses = train_epochs(model, ds, 6)
    assert losses[-1] < losses[0] * 0.97, losses


def test_info_nce_on_a_hand_worked_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # logits / 0.5 = [[2, 2], [0, 2]]: row 0 -> log 2, row 1 -> -log(e^2 / (1 + e^2))
    expected = (math.log(2.0) + math.log1p(math.exp(-2.0))) / 2
    assert float(info_nce(a, b, 0.5)) == pytest.approx(expected, rel=1e-6)


def test_fac_chains_id_to_image_to_text_with_a_half_width_text_stage():
    ds = tiny_dataset()
    model = build_model("slmrec", ds, {"embedding_size": 4, "ssl_temperature": 0.5})
    assert chain_order(["text", "image"]) == ["image", "text"] and model.chain == ["image", "text"]
    assert model.chain_heads["text"].out_features == 2 and model.modality_heads["image"].out_features == 4
    torch.manual_seed(1)
    channels = torch.randn(3, 4 * len(model.channels))
    parts = dict(zip(model.channels, channels.split(4, dim=1), strict=True))

    def nce(x, y):  # the paper's InfoNCE, written out row by row
        logits = x @ y.T / 0.5
        return sum(-logits[i, i] + torch.logsumexp(logits[i], 0) for i in range(len(x))) / len(x)

    with torch.no_grad():
        x_iv = model.chain_heads["image"](parts["id"])
        v_loss = nce(x_iv, model.modality_heads["image"](parts["image"]))
        x_ivt = model.chain_heads["text"](x_iv)
        t_loss = nce(x_ivt, model.modality_heads["text"](parts["text"]))
        torch.testing.assert_close(model.fac_loss(channels), v_loss + t_loss)


def test_loss_is_infonce_plus_weighted_fac_plus_half_decay():
    ds = tiny_dataset()
    params = {"embedding_size": 8, "ssl_weight": 0.3, "weight_decay": 0.01, "temperature": 0.7}
    model = build_model("slmrec", ds, params)
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    with torch.no_grad():
        users_c, items_c = model.propagate()
        u = F.normalize(model.user_fusion(users_c[users]), dim=1)
        p = F.normalize(model.item_fusion(items_c[pos]), dim=1)
        decay = sum(0.5 * t.square().sum() for t in model.parameters())
        expected = info_nce(u, p, 0.7) + 0.3 * model.fac_loss(items_c[pos]) + 0.01 * decay
        torch.testing.assert_close(model.loss(users, pos, neg), expected)
        # the negatives are not read: SLMRec's negatives are the batch's other positives
        torch.testing.assert_close(model.loss(users, pos, torch.tensor([0, 0, 0])), expected)


def test_decay_term_has_the_gradient_of_adams_coupled_weight_decay():
    ds = tiny_dataset()
    model = build_model("slmrec", ds, {"embedding_size": 8})
    model.zero_grad()
    model.decay().backward()
    for p in model.parameters():
        torch.testing.assert_close(p.grad, p.detach())


def test_features_are_l2_normalised_rows():
    ds = tiny_dataset()
    model = build_model("slmrec", ds, {})
    torch.testing.assert_close(model.raw("image").norm(dim=1), torch.ones(ds.n_items))


def test_every_channel_propagates_the_same_user_table():
    ds = tiny_dataset()
    model = build_model("slmrec", ds, {"embedding_size": 8, "n_layers": 0})
    with torch.no_grad():
        users_c, items_c = model.propagate()
        for c in range(len(model.channels)):
            torch.testing.assert_close(users_c[:, 8 * c : 8 * (c + 1)], model.user_embedding)
        torch.testing.assert_close(items_c[:, :8], model.item_embedding)
        torch.testing.assert_close(items_c[:, 8:16], model.encode()[model.modality_names[0]])


def test_plugin_is_switched_on_by_configuration():
    ds = tiny_dataset()
    torch.manual_seed(0)
    plain = build_model("slmrec", ds, {})
    torch.manual_seed(0)
    plugged = build_model("slmrec", ds, {"projection": "fixed", "redundancy_rank": 2})
    for m in (plain, plugged):
        m.on_epoch_start(1)
    assert int(plugged.projection.rank) == 2
    assert not torch.allclose(all_scores(plain, ds), all_scores(plugged, ds))
    losses = train_epochs(plugged, ds, 3)
    assert losses[-1] < losses[0]


def test_runs_on_image_and_audio_like_tiktok():
    ds = tiny_dataset((("audio", 12), ("image", 24)))
    model = build_model("slmrec", ds, {})
    assert model.chain == ["image", "audio"] and model.chain_heads["audio"].out_features == 64
    train_epochs(model, ds, 1)
    assert torch.isfinite(all_scores(model, ds)).all()


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    assert_resume_matches_uninterrupted(tiny_dataset(), "slmrec", {"embedding_size": 16}, tmp_path)
