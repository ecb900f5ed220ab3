"""CLEAR: Algorithm 1 trains, refreshes its projector on schedule, checkpoints it, and scores."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from multimodal_support import all_scores, tiny_dataset, train_epochs

from clear_core.errors import ConfigError
from clear_core.models import build_model


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("clear", ds, {"redundancy_rank": 2})
    losses = train_epochs(model, ds, 6)
    assert losses[-1] < losses[0] * 0.97, losses


def test_scores_every_item_for_every_user():
    ds = tiny_dataset()
    model = build_model("clear", ds, {})
    scores = all_scores(model, ds)
    assert scores.shape == (ds.n_users, ds.n_items)
    assert torch.isfinite(scores).all()


def test_projector_refreshes_at_epochs_1_and_every_tau_after():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("clear", ds, {"refresh_every": 2, "redundancy_rank": 2})
    seen = []
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    train = torch.as_tensor(ds.train)
    for epoch in range(1, 6):
        model.on_epoch_start(epoch)
        seen.append(int(model.projection.refreshed_at))
        loss = model.loss(train[:256, 0], train[:256, 1], torch.randint(0, ds.n_items, (256,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert seen == [1, 1, 3, 3, 5]


def test_refresh_projection_says_whether_it_refreshed_and_on_epoch_start_does_not_repeat_it():
    ds = tiny_dataset()
    model = build_model("clear", ds, {"refresh_every": 2, "redundancy_rank": 2})
    assert [model.refresh_projection(e) for e in (1, 1, 2, 3)] == [True, False, False, True]
    before = model.projection.bases()[0].clone()
    model.on_epoch_start(3)  # already refreshed at epoch 3: only the edge dropout is new
    assert int(model.projection.refreshed_at) == 3
    torch.testing.assert_close(model.projection.bases()[0], before)


def test_projection_actually_reduces_cross_covariance_of_the_encoded_pair():
    ds = tiny_dataset()
    model = build_model("clear", ds, {"redundancy_rank": 3, "projection_strength": 1.0})
    model.on_epoch_start(1)
    from clear_core.projection import cross_covariance

    feats = model.transformed_features()
    before = torch.linalg.svdvals(cross_covariance(feats["before"]["image"], feats["before"]["text"]))
    after = torch.linalg.svdvals(cross_covariance(feats["after"]["image"], feats["after"]["text"]))
    # With λ = 1 the top-3 directions vanish: the new leading value is the old 4th.
    torch.testing.assert_close(after[0], before[3], rtol=1e-4, atol=1e-6)


def test_checkpoint_restores_the_projector_and_the_scores():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("clear", ds, {"refresh_every": 10, "edge_dropout": 0.0})
    train_epochs(model, ds, 2)
    state = model.state_dict()
    assert "projection.basis_a" in state and "projection.basis_b" in state
    assert not any(key.startswith(("adjacency", "item_graph", "features_")) for key in state)
    torch.manual_seed(1)
    resumed = build_model("clear", ds, {"refresh_every": 10, "edge_dropout": 0.0})
    resumed.load_state_dict(state)
    assert not resumed.projection.needs_refresh(3)
    torch.testing.assert_close(all_scores(resumed, ds), all_scores(model, ds))


def test_edge_dropout_prunes_the_training_graph_but_scoring_uses_the_full_graph():
    ds = tiny_dataset()
    model = build_model("clear", ds, {"edge_dropout": 0.8})
    model.train()
    model.on_epoch_start(1)
    kept = model.training_adjacency()._nnz()
    full = model.adjacency._nnz()
    assert 0.15 * full <= kept <= 0.25 * full
    model.eval()
    assert model.training_adjacency() is model.adjacency


@pytest.mark.parametrize("mode", ["none", "dynamic"])
def test_ablations_train(mode):
    ds = tiny_dataset()
    model = build_model("clear", ds, {"projection": mode})
    losses = train_epochs(model, ds, 2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert model.projection.active == (mode != "none")


def test_three_modalities_and_a_configured_pair():
    ds = tiny_dataset((("audio", 12), ("image", 24), ("text", 16)))
    model = build_model("clear", ds, {"projected_pair": ["text", "audio"], "id_channel": True})
    assert model.projected_pair == ["text", "audio"]
    assert model.channels == ["audio", "image", "text", "id"]
    train_epochs(model, ds, 1)
    assert model.projection.basis_a.abs().sum() > 0
    assert all_scores(model, ds).shape == (ds.n_users, ds.n_items)


def test_every_bad_parameter_is_reported_at_once():
    ds = tiny_dataset()
    with pytest.raises(ConfigError) as err:
        build_model(
            "clear",
            ds,
            {
                "redundancy_rank": 65,
                "projection_strength": -0.1,
                "refresh_every": 0,
                "projected_pair": ["image", "sound"],
                "edge_dropout": 1.0,
                "modality_weights": {"image": 1.0},
            },
        )
    text = str(err.value)
    for field in ("redundancy_rank", "projection_strength", "refresh_every", "projected_pair",
                  "edge_dropout", "modality_weights"):
        assert field in text, field


@pytest.mark.parametrize("model_name", ["clear", "freedom"])
def test_feature_centering_takes_the_shared_item_vector_out_of_encoders_and_knn_graph(model_name):
    base = tiny_dataset()
    # A large vector shared by every item, as in TikTok's features.
    shifted = dataclasses.replace(base, features={m: f + 5.0 for m, f in base.features.items()})
    centred = build_model(model_name, shifted, {"feature_centering": True})
    for m in centred.modality_names:
        assert centred.raw(m).mean(dim=0).abs().max() < 1e-5
    # Centred, the kNN graph no longer sees the shift; uncentred, the shift decides it.
    reference = build_model(model_name, base, {"feature_centering": True})
    torch.testing.assert_close(centred.item_graph.to_dense(), reference.item_graph.to_dense(), atol=1e-5, rtol=0)
    plain = build_model(model_name, shifted, {"feature_centering": False})
    assert not torch.allclose(plain.item_graph.to_dense(), centred.item_graph.to_dense(), atol=1e-3)


@pytest.mark.parametrize("model_name", ["clear", "freedom", "vbpr"])
def test_encoded_centering_removes_every_shared_component_from_what_enters_the_model(model_name):
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(model_name, ds, {"encoded_centering": True})
    model.on_epoch_start(1)
    with torch.no_grad():
        before = model.encode()
        # A bias is a vector every item shares, as is anything trainable features learn in common.
        for enc in model.encoders.values():
            enc.bias.add_(3.0)
        after = model.encode()
        subset = torch.tensor([4, 0, 7])
        some = model.encode(subset)
    for m in model.modality_names:
        assert after[m].mean(dim=0).abs().max() < 1e-5
        torch.testing.assert_close(after[m], before[m], atol=1e-5, rtol=0)
        # Batch-only callers (VBPR, FREEDOM's modality loss) see the rows of the full centring.
        torch.testing.assert_close(some[m], after[m][subset])
    plain = build_model(model_name, ds, {"encoded_centering": False})
    m = plain.modality_names[0]
    with torch.no_grad():
        plain.encoders[m].bias.add_(3.0)
        shifted = plain.encode()[m]
    assert shifted.mean(dim=0).abs().max() > 1.0


def test_single_modality_dataset_needs_projection_none():
    full = tiny_dataset()
    ds = dataclasses.replace(full, features={"image": full.features["image"]})
    with pytest.raises(ConfigError, match="one modality"):
        build_model("clear", ds, {})
    assert build_model("clear", ds, {"projection": "none"}) is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_same_code_runs_on_cuda():
    ds = tiny_dataset()
    model = build_model("clear", ds, {}).to("cuda")
    model.on_epoch_start(1)
    users = torch.arange(8, device="cuda")
    loss = model.loss(users, users % ds.n_items, (users + 1) % ds.n_items)
    loss.backward()
    assert all_scores(model, ds).device.type == "cuda"


@pytest.mark.parametrize("encoder_layers", [1, 2])  # 1: the fused node; 2: the MLP, op by op
@pytest.mark.parametrize("centering", [False, True])
def test_encode_is_encoder_then_centring_then_projection_of_the_pair(encoder_layers, centering):
    from clear_core.projection import soft_project

    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("clear", ds, {"encoder_layers": encoder_layers, "encoded_centering": centering,
                                      "redundancy_rank": 2, "projection_strength": 0.7})
    model.on_epoch_start(1)
    bases = dict(zip(model.projected_pair, model.projection.bases(), strict=True))
    got = model.encode()
    for m in model.modality_names:
        want = model.encoders[m](model.raw(m))
        if centering:
            want = want - want.mean(dim=0, keepdim=True)
        want = soft_project(want, bases[m], 0.7)
        torch.testing.assert_close(got[m], want, msg=lambda msg, m=m: f"{m}: {msg}")
    losses = train_epochs(model, ds, 4)
    assert losses[-1] < losses[0], losses
