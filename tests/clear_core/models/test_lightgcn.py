"""LightGCN: propagation is the mean of layers 0..L over the normalised graph, the graph is a
non-persistent buffer that moves with the model, and scoring caches the propagated tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_core.data.dataset import Dataset
from clear_core.errors import ConfigError
from clear_core.graph import normalized_adjacency
from clear_core.models import build_model


def tiny_dataset() -> Dataset:
    train = np.array([(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3), (3, 3)])
    return Dataset("tiny", 4, 4, train, np.array([(0, 2)]), np.array([(1, 3)]))


def make(**over):
    torch.manual_seed(0)
    return build_model("lightgcn", tiny_dataset(), {"embedding_size": 6, **over})


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_propagation_is_mean_of_layers_including_layer_zero(layers):
    model = make(n_layers=layers)
    adj = normalized_adjacency(tiny_dataset().train, 4, 4).to_dense()
    x = model.embedding.detach()
    expected = sum(torch.linalg.matrix_power(adj, k) @ x for k in range(layers + 1)) / (layers + 1)
    torch.testing.assert_close(model.propagate().detach(), expected)


def test_scores_use_propagated_user_and_item_tables_and_cache_is_dropped():
    model = make(n_layers=2)
    final = model.propagate().detach()
    model.eval()
    with torch.no_grad():
        model.prepare_scoring()
        got = model.score(torch.tensor([1, 3]))
        model.finish_scoring()
    torch.testing.assert_close(got, final[[1, 3]] @ final[4:].T)
    assert model._cache is None


def test_loss_penalises_ego_embeddings_not_propagated_ones():
    users, pos, neg = torch.tensor([0]), torch.tensor([1]), torch.tensor([2])
    plain, regular = make(reg_weight=0.0), make(reg_weight=1.0)
    ego = regular.embedding.detach()
    expected_penalty = sum(torch.linalg.vector_norm(ego[i]) for i in (0, 4 + 1, 4 + 2))
    diff = regular.loss(users, pos, neg) - plain.loss(users, pos, neg)
    assert diff.item() == pytest.approx(expected_penalty.item(), rel=1e-5)


def test_graph_is_not_in_the_state_dict_but_moves_with_the_model():
    model = make()
    assert "adjacency" not in model.state_dict()
    assert model.adjacency.device == model.embedding.device
    if torch.cuda.is_available():
        model = model.to("cuda")
        assert model.adjacency.is_cuda and model.score(torch.tensor([0], device="cuda")).is_cuda


def test_negative_layers_rejected_and_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="n_layers: expected an integer >= 0, got -1"):
        make(n_layers=-1)
    with pytest.raises(ConfigError, match="n_layers: expected int"):
        make(n_layers=2.5)
