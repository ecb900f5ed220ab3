"""FREEDOM: frozen kNN item graph, degree-sensitive pruning, auxiliary feature BPR; + CLEAR."""

from __future__ import annotations

import pytest
import torch
from multimodal_support import all_scores, tiny_dataset, train_epochs

from clear_core.errors import ConfigError
from clear_core.item_graph import knn_neighbours
from clear_core.models import build_model, resolve_params


def test_defaults_follow_protocol():
    p = resolve_params("freedom")
    assert (p["knn_k"], p["n_layers"], p["item_graph_layers"], p["projection"]) == (10, 2, 1, "none")
    assert p["modality_weights"]["image"] == 0.1 and p["modality_weights"]["text"] == 0.9


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("freedom", ds, {})
    losses = train_epochs(model, ds, 8, lr=0.02)
    assert losses[-1] < losses[0] * 0.97, losses


def test_item_graph_mixes_the_two_knn_graphs_with_the_configured_weights():
    ds = tiny_dataset()
    model = build_model("freedom", ds, {"knn_k": 3})
    dense = model.item_graph.to_dense()
    img = knn_neighbours(torch.as_tensor(ds.features["image"]), 3)
    txt = knn_neighbours(torch.as_tensor(ds.features["text"]), 3)
    # Each row holds 0.1 x (1/3) on its image neighbours and 0.9 x (1/3) on its text ones.
    row = 4
    expected = torch.zeros(ds.n_items)
    expected[img[row]] += 0.1 / 3
    expected[txt[row]] += 0.9 / 3
    torch.testing.assert_close(dense[row], expected)


def test_audio_takes_texts_part_on_image_audio_data():
    ds = tiny_dataset((("audio", 12), ("image", 24)))
    model = build_model("freedom", ds, {})
    assert model._weights == pytest.approx({"audio": 0.9, "image": 0.1})
    with pytest.raises(ConfigError, match="modality_weights: no weight for modality audio"):
        build_model("freedom", ds, {"modality_weights": {"image": 1.0, "text": 1.0}})


def test_plugin_is_switched_on_by_configuration():
    ds = tiny_dataset()
    model = build_model("freedom", ds, {"projection": "fixed", "redundancy_rank": 2})
    losses = train_epochs(model, ds, 3, lr=0.02)
    assert int(model.projection.refreshed_at) == 3
    assert losses[-1] < losses[0]
    assert torch.isfinite(all_scores(model, ds)).all()


def test_knn_is_chunk_size_invariant():
    x = torch.randn(57, 9, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(knn_neighbours(x, 5, chunk_size=7), knn_neighbours(x, 5, chunk_size=4096))


def test_encoded_centering_cannot_change_freedom_and_says_so(caplog):
    # The features enter only as BPR differences of two items' scores: a mean subtracted from
    # every item's encoding cancels there, so the loss is the same and the user is told.
    ds = tiny_dataset()
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    losses = {}
    for centred in (False, True):
        torch.manual_seed(0)
        model = build_model("freedom", ds, {"encoded_centering": centred, "reg_weight": 0.5})
        model.train()
        model.on_epoch_start(1)
        losses[centred] = model.loss(users, pos, neg)
    torch.testing.assert_close(losses[True], losses[False])
    assert "encoded_centering has no effect" in caplog.text
