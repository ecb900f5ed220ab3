"""MRdIB's terms (clear_core/mrdib.py) on cases small enough to work out by hand.

The equations are those of the module docstring (our instantiation of the paper's objectives; its
full text was not available): every expected number below is derived in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from clear_core.mrdib import MRdIB, cross_correlation, gaussian_kl, redundancy


def test_kl_to_the_standard_normal_is_half_of_mu2_plus_sigma2_minus_log_sigma2_minus_1():
    mean = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    log_var = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    # row 1: ½[(1 + 1 - 0 - 1) + (0 + 1 - 0 - 1)] = ½
    # row 2: ½[(0 + 2 - ln 2 - 1) + (4 + 1 - 0 - 1)] = ½(5 - ln 2)
    expected = (0.5 + 0.5 * (5.0 - math.log(2.0))) / 2
    assert gaussian_kl(mean, log_var).item() == pytest.approx(expected, rel=1e-6)
    # The prior itself costs nothing.
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_redundancy_is_half_the_squared_cross_correlation():
    a = torch.tensor([[1.0], [2.0], [3.0]])
    assert redundancy(a, 2 * a + 5).item() == pytest.approx(0.5)  # ρ = 1
    assert redundancy(a, -a).item() == pytest.approx(0.5)  # ρ = -1: overlap, whatever the sign
    # centred a = (-1, 0, 1), centred b = (1/3, -2/3, 1/3): orthogonal, ρ = 0
    assert redundancy(a, torch.tensor([[1.0], [0.0], [1.0]])).item() == pytest.approx(0.0, abs=1e-7)
    # Two columns against one: R = [[1], [ρ(y, x)]], y = (1, 0, 0) -> centred (2/3, -1/3, -1/3),
    # ρ(y, x) = (-2/3 + 0 - 1/3) / (sqrt(2/3) sqrt(2)) = -sqrt(3)/2, so ½(1 + 3/4) = 7/8.
    two = torch.tensor([[1.0, 1.0], [2.0, 0.0], [3.0, 0.0]])
    torch.testing.assert_close(cross_correlation(two, a), torch.tensor([[1.0], [-math.sqrt(3) / 2]]))
    assert redundancy(two, a).item() == pytest.approx(7 / 8, rel=1e-6)


def _hand_set_plugin() -> MRdIB:
    """Two modalities in 2-d, one user, every weight set by hand."""
    plugin = MRdIB(["image", "text"], 2, 1, kl_weight=0.5, unique_weight=2.0, redundancy_weight=3.0,
                   synergy_weight=4.0)
    with torch.no_grad():
        for head in plugin.log_variance.values():  # log σ² = 0: σ = 1
            head.weight.zero_()
            head.bias.zero_()
        plugin.target_users.copy_(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]]))
        plugin.fusion.weight.copy_(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]))  # [I I]
        plugin.fusion.bias.zero_()
    return plugin


def test_each_term_on_a_hand_worked_batch():
    plugin = _hand_set_plugin()
    users = torch.tensor([0])
    # Rows: the positive, then the negative. Samples taken equal to the means (given explicitly).
    feats = {"image": torch.tensor([[2.0, 0.0], [1.0, 0.0]]), "text": torch.tensor([[0.0, 0.0], [0.0, 1.0]])}
    terms = plugin.terms(feats, users, samples=feats)
    # KL with σ = 1: ½ μ² per row, averaged over the 2 rows, summed over modalities:
    # image (2 + ½)/2 = 1.25, text (0 + ½)/2 = 0.25.
    assert terms["kl"].item() == pytest.approx(1.5)
    # Unique: image decoder p = (1, 0): 2 - 1 = 1 -> -log σ(1) = log(1 + e^-1);
    #         text decoder p = (0, 1): 0 - 1 = -1 -> log(1 + e).
    assert terms["unique"].item() == pytest.approx(math.log1p(math.exp(-1)) + math.log1p(math.e), rel=1e-6)
    # Redundancy: image column 0 = (2, 1), text column 1 = (0, 1): ρ = -1; the constant columns
    # correlate with nothing. ½ · 1.
    assert terms["redundancy"].item() == pytest.approx(0.5, rel=1e-6)
    # Synergy: fused = LeakyReLU(image + text): pos (2, 0), neg (1, 1); decoder (1, 1): 2 - 2 = 0
    # -> log 2.
    assert terms["synergy"].item() == pytest.approx(math.log(2.0), rel=1e-6)
    # The plug-in's loss weighs them with β, α_u, α_r, α_s.
    expected = 0.5 * 1.5 + 2.0 * terms["unique"].item() + 3.0 * 0.5 + 4.0 * math.log(2.0)
    assert plugin.loss(feats, users, samples=feats).item() == pytest.approx(expected, rel=1e-6)


def test_the_kl_term_reads_the_learned_variance():
    plugin = _hand_set_plugin()
    with torch.no_grad():
        plugin.log_variance["image"].bias.fill_(math.log(2.0))  # σ² = 2 for image, σ² = 1 for text
    means = {"image": torch.zeros(2, 2), "text": torch.zeros(2, 2)}
    # image: ½ Σ_j (2 - ln 2 - 1) = 1 - ln 2 per row; text: 0.
    terms = plugin.terms(means, torch.tensor([0]), samples=means)
    assert terms["kl"].item() == pytest.approx(1.0 - math.log(2.0), rel=1e-6)


def test_the_bottleneck_samples_in_training_and_returns_the_mean_in_evaluation():
    plugin = MRdIB(["image"], 4, 3, kl_weight=1.0, unique_weight=1.0, redundancy_weight=1.0, synergy_weight=1.0)
    with torch.no_grad():
        plugin.log_variance["image"].bias.fill_(math.log(0.25))  # σ = 0.5
    means = {"image": torch.full((5000, 4), 3.0)}
    plugin.eval()
    assert plugin.compress(means)["image"] is means["image"]
    plugin.train()
    torch.manual_seed(0)
    z = plugin.compress(means)["image"]
    assert z.mean().item() == pytest.approx(3.0, abs=0.02)
    assert z.std().item() == pytest.approx(0.5, abs=0.02)


def test_the_auxiliary_loss_trains_the_bottleneck_and_the_features():
    plugin = MRdIB(["image", "text"], 4, 3, kl_weight=1.0, unique_weight=1.0, redundancy_weight=1.0,
                   synergy_weight=1.0)
    means = {m: torch.randn(6, 4, requires_grad=True) for m in ("image", "text")}
    plugin.loss(means, torch.tensor([0, 1, 2])).backward()
    assert all(means[m].grad is not None and means[m].grad.abs().sum() > 0 for m in means)
    assert all(p.grad is not None for p in plugin.parameters())
