"""MF-BPR: parameters come from YAML and are type-checked; scores are dot products; BPR
training raises the positive above the negative."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_core.data.dataset import Dataset
from clear_core.errors import ConfigError
from clear_core.models import available_models, build_model, resolve_params


def tiny_dataset() -> Dataset:
    train = np.array([(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3)])
    return Dataset("tiny", 3, 4, train, np.array([(0, 2)]), np.array([(1, 3)]))


def test_registered_with_yaml_defaults():
    assert "mf" in available_models()
    params = resolve_params("mf")
    assert set(params) == {"embedding_size", "reg_weight"} and params["embedding_size"] == 64


def test_unknown_and_mistyped_parameters_are_reported_together():
    with pytest.raises(ConfigError) as err:
        build_model("mf", tiny_dataset(), {"embeding_size": 8, "reg_weight": "high"})
    text = str(err.value)
    assert "embeding_size: unknown field" in text and "reg_weight: expected float" in text


def test_scores_are_user_item_dot_products():
    torch.manual_seed(0)
    model = build_model("mf", tiny_dataset(), {"embedding_size": 8})
    users = torch.tensor([2, 0])
    expected = model.user_embedding[users] @ model.item_embedding.T
    assert model.score(users).shape == (2, 4)
    torch.testing.assert_close(model.score(users), expected)


def test_training_steps_lower_the_loss_and_rank_positive_above_negative():
    torch.manual_seed(0)
    model = build_model("mf", tiny_dataset(), {"embedding_size": 8, "reg_weight": 0.0})
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 0])
    first = model.loss(users, pos, neg).item()
    for _ in range(50):
        opt.zero_grad()
        model.loss(users, pos, neg).backward()
        opt.step()
    assert model.loss(users, pos, neg).item() < first / 4
    scores = model.score(users)
    assert (scores[[0, 1], pos] > scores[[0, 1], neg]).all()
