"""Every model's batch gradient is bit-identical from one backward to the next on a multi-threaded
CPU, so that two trainings with the same seed give the same bits (what `make repro` relies on).

Advanced indexing (``table[idx]``) would break this: its backward accumulates repeated rows with
parallel atomic adds on CPU, and the order of those adds changes between calls.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from multimodal_support import tiny_dataset

from clear_core.models import available_models, build_model

REPEATS = 25


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _gradient_digests(model, users, pos, neg, start) -> dict[str, str]:
    # Every repeat from the same point: weights and buffers, the model's own state (MMSSL steps
    # its discriminator inside loss), the random stream (dropout, Gumbel and SimGCL noise) and
    # the first batch of the same epoch (some models build per-epoch state with gradients only in
    # an epoch's first batch: LATTICE's learned item graph).
    model.load_state_dict(copy.deepcopy(start["model"]))
    model.load_extra_state(copy.deepcopy(start["extra"]))
    torch.manual_seed(1)
    model.on_epoch_start(1)
    model.zero_grad(set_to_none=True)
    model.loss(users, pos, neg).backward()
    return {
        name: hashlib.sha256(p.grad.detach().numpy().tobytes()).hexdigest()
        for name, p in model.named_parameters()
        if p.grad is not None
    }


@pytest.mark.parametrize("name", available_models())
def test_batch_gradients_repeat_bit_for_bit_with_two_threads(name, two_threads):
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds, {})
    model.train()
    model.on_epoch_start(1)
    train = torch.as_tensor(ds.train)
    # A batch four times the user count: every user and item repeats, as in real batches.
    rows = train[torch.randint(0, len(train), (4 * ds.n_users,))]
    users, pos = rows[:, 0].contiguous(), rows[:, 1].contiguous()
    neg = torch.randint(0, ds.n_items, (len(rows),))

    start = {"model": copy.deepcopy(model.state_dict()), "extra": copy.deepcopy(model.extra_state_for_checkpoint())}
    first = _gradient_digests(model, users, pos, neg, start)
    assert first, f"{name}: no parameter received a gradient"
    for _ in range(REPEATS):
        assert _gradient_digests(model, users, pos, neg, start) == first
