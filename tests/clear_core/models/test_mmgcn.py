"""MMGCN: per-modality GCN with mean aggregation, ID embeddings added at every layer,
concatenating combination, the mean over modalities; ID table and preferences frozen as in
MMRec unless asked; + CLEAR."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches

from clear_core.errors import ConfigError
from clear_core.models import build_model, resolve_params


def test_defaults_follow_mmrec():
    p = resolve_params("mmgcn")
    assert (p["embedding_size"], p["latent_size"], p["n_layers"]) == (64, 256, 3)
    assert p["concatenate"] is True and p["trainable_embeddings"] is False and p["projection"] == "none"


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("mmgcn", ds, {})
    losses = train_epochs(model, ds, 5)
    assert losses[-1] < losses[0] * 0.95, losses


def test_id_table_and_preferences_are_frozen_unless_asked():
    ds = tiny_dataset()
    frozen = build_model("mmgcn", ds, {})
    names = {n for n, _ in frozen.named_parameters()}
    assert not any("id_embedding" in n or "preference" in n for n in names)
    before = frozen.id_embedding.clone()
    train_epochs(frozen, ds, 1)
    assert torch.equal(frozen.id_embedding, before)
    assert "id_embedding" in frozen.state_dict()  # random, so saved with the model
    trained = build_model("mmgcn", ds, {"trainable_embeddings": True})
    names = {n for n, _ in trained.named_parameters()}
    assert "id_embedding" in names and "preferences.image" in names


def test_forward_is_mmgcns_layers_with_mean_aggregation():
    ds = tiny_dataset()
    model = build_model("mmgcn", ds, {"embedding_size": 4, "latent_size": 6, "n_layers": 2})
    adj = torch.zeros(ds.n_users + ds.n_items, ds.n_users + ds.n_items)
    train = torch.as_tensor(ds.train)
    adj[train[:, 0], train[:, 1] + ds.n_users] = 1.0
    adj[train[:, 1] + ds.n_users, train[:, 0]] = 1.0
    mean = adj / adj.sum(1, keepdim=True).clamp_min(1)
    with torch.no_grad():
        feats = model.encode()
        outs = []
        for m in model.modality_names:
            x = F.normalize(torch.cat([model.preference(m), feats[m]]), dim=1)
            for layer in model.layers[m]:
                h = F.leaky_relu(mean @ (x @ layer.conv))
                x_hat = F.leaky_relu(layer.linear(x)) + model.id_embedding
                x = F.leaky_relu(layer.gate(torch.cat([h, x_hat], dim=1)))
            outs.append(x)
        torch.testing.assert_close(model.propagate(), sum(outs) / len(outs), rtol=1e-5, atol=1e-6)


def test_loss_is_bpr_plus_the_id_and_preference_penalties():
    ds = tiny_dataset()
    model = build_model("mmgcn", ds, {"embedding_size": 8, "latent_size": 8, "reg_weight": 0.5})
    users, pos, neg = torch.tensor([0, 1, 1]), torch.tensor([2, 3, 4]), torch.tensor([5, 6, 7])
    with torch.no_grad():
        nodes = model.propagate()
        u, p, n = nodes[users], nodes[ds.n_users + pos], nodes[ds.n_users + neg]
        ranking = -torch.log(torch.sigmoid((u * p).sum(-1) - (u * n).sum(-1))).mean()
        # MMRec: mean over (user, item) pairs of e_u^2 + e_i^2, users repeated for pos and neg
        ids = model.id_embedding
        pairs_u = ids[users.repeat_interleave(2)]
        pairs_i = ids[torch.stack([pos, neg], 1).reshape(-1) + ds.n_users]
        reg = (pairs_u ** 2 + pairs_i ** 2).mean() + sum((model.preference(m) ** 2).mean() for m in model.modality_names)
        torch.testing.assert_close(model.loss(users, pos, neg), ranking + 0.5 * reg)


def test_element_wise_combination_when_not_concatenating():
    ds = tiny_dataset()
    model = build_model("mmgcn", ds, {"concatenate": False, "latent_size": 16})
    assert model.layers["image"][0].gate.in_features == 16
    losses = train_epochs(model, ds, 3)
    assert losses[-1] < losses[0]


def test_plugin_is_switched_on_by_configuration():
    ds = tiny_dataset()
    model = build_model("mmgcn", ds, {"projection": "fixed", "redundancy_rank": 2})
    losses = train_epochs(model, ds, 3)
    assert int(model.projection.refreshed_at) == 3 and model.encode()["image"].shape[1] == 256
    assert losses[-1] < losses[0]
    assert torch.isfinite(all_scores(model, ds)).all()


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    assert_resume_matches(tiny_dataset(), "mmgcn", {"latent_size": 32}, tmp_path, epochs=3, batch_size=256)


def test_a_raw_modality_enters_its_gcn_at_its_feature_width_as_mmrecs_text():
    ds = tiny_dataset()
    model = build_model("mmgcn", ds, {"raw_modalities": ["text"], "latent_size": 16, "embedding_size": 8})
    text_width = ds.features["text"].shape[1]
    assert model.preference("text").shape == (ds.n_users, text_width) and model.preference("image").shape[1] == 16
    assert model.layers["text"][0].conv.shape == (text_width, text_width)
    # The text encoder is not read: changing it leaves every representation as it was.
    before = model.propagate().detach()
    with torch.no_grad():
        model.encoders["text"].weight.add_(1.0)
        torch.testing.assert_close(model.propagate(), before)
        model.encoders["image"].weight.add_(1.0)
        assert not torch.allclose(model.propagate(), before)
    torch.manual_seed(0)
    fresh = build_model("mmgcn", ds, {"raw_modalities": ["text"]})
    # Its GCN input is fixed (raw features, frozen preference), so it learns slower than encoded.
    losses = train_epochs(fresh, ds, 10)
    assert losses[-1] < losses[0] * 0.95, losses


def test_the_plugins_are_refused_on_a_raw_modality_with_every_bad_field_named():
    ds = tiny_dataset()
    with pytest.raises(ConfigError) as err:
        build_model("mmgcn", ds, {"raw_modalities": ["text", "sound"], "projection": "fixed", "mrdib": True})
    message = str(err.value)
    assert "raw_modalities: unknown modality sound" in message
    assert "text is fed raw, so CLEAR's projection" in message and "MRdIB compresses" in message
    # A projection on a pair without the raw modality is allowed.
    three = tiny_dataset((("image", 24), ("text", 16), ("audio", 12)))
    model = build_model("mmgcn", three, {"raw_modalities": ["audio"], "projection": "fixed", "redundancy_rank": 2})
    assert model.projected_pair == ["image", "text"]
