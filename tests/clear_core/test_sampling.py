"""Negative sampling: never a training positive of the user, only items seen in training,
uniform, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_core.errors import DataError
from clear_core.sampling import NegativeSampler


def random_train(seed=0, n_users=50, n_items=40, per_user=12):
    rng = np.random.default_rng(seed)
    return np.array(
        [(u, i) for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False)]
    )


def test_negatives_are_never_the_users_training_items():
    train = random_train()
    sampler = NegativeSampler(train, 40)
    users = torch.from_numpy(np.repeat(np.arange(50), 200))
    neg = sampler.sample(users, torch.Generator().manual_seed(1))
    positives = {(int(u), int(i)) for u, i in train}
    assert not any((int(u), int(i)) in positives for u, i in zip(users, neg, strict=True))


def test_negatives_come_only_from_items_seen_in_training():
    train = np.array([(0, 0), (0, 1), (1, 2), (1, 3), (2, 1)])  # items 4..9 never trained
    sampler = NegativeSampler(train, 10)
    neg = sampler.sample(torch.zeros(500, dtype=torch.long), torch.Generator().manual_seed(0))
    assert set(neg.tolist()) == {2, 3}


def test_draws_are_uniform_over_allowed_items():
    train = np.array([(0, 0)] + [(1, i) for i in range(1, 11)])  # user 0 may draw items 1..10
    sampler = NegativeSampler(train, 11)
    neg = sampler.sample(torch.zeros(20000, dtype=torch.long), torch.Generator().manual_seed(2))
    counts = np.bincount(neg.numpy(), minlength=11)[1:]
    assert counts.min() > 1700 and counts.max() < 2300  # expected 2000 each, sd ~42


def test_same_generator_state_gives_same_negatives():
    sampler = NegativeSampler(random_train(), 40)
    users = torch.arange(50).repeat(10)
    a = sampler.sample(users, torch.Generator().manual_seed(5))
    b = sampler.sample(users, torch.Generator().manual_seed(5))
    c = sampler.sample(users, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_user_with_almost_every_item_falls_back_to_exact_complement():
    n_items = 300
    train = np.array([(0, i) for i in range(n_items) if i != 123] + [(1, 123)])
    neg = NegativeSampler(train, n_items).sample(
        torch.zeros(5, dtype=torch.long), torch.Generator().manual_seed(0)
    )
    assert neg.tolist() == [123] * 5


def test_user_who_has_every_training_item_is_a_data_error():
    train = np.array([(0, 0), (0, 1), (1, 1)])
    with pytest.raises(DataError, match="user 0 has interacted with every training item"):
        NegativeSampler(train, 2, source="toy/train")
