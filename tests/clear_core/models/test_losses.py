"""The shared losses: BPR is the mean of -log σ(pos - neg), finite for any score gap; the
embedding penalty is MMRec's EmbLoss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_core.models.losses import bpr_loss, embedding_penalty


def test_bpr_is_log_2_at_a_tie_and_vanishes_when_the_positive_wins_by_far():
    assert bpr_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(np.log(2))
    assert bpr_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == pytest.approx(0, abs=1e-6)


def test_bpr_is_the_batch_mean_and_stays_finite_with_its_gradient_when_the_negative_wins_by_far():
    pos = torch.tensor([-500.0, 0.0], requires_grad=True)
    neg = torch.tensor([500.0, 0.0])
    loss = bpr_loss(pos, neg)
    assert loss.item() == pytest.approx((1000.0 + np.log(2)) / 2)
    loss.backward()
    assert torch.isfinite(pos.grad).all()
    torch.testing.assert_close(pos.grad, torch.tensor([-0.5, -0.25]))


def test_embedding_penalty_sums_frobenius_norms_over_the_batch_size():
    a, b = torch.full((2, 2), 1.0), torch.full((2, 2), 2.0)
    # Frobenius norms 2 and 4, divided by the batch size 2
    assert embedding_penalty(a, b).item() == pytest.approx(3.0)
