"""MRdIB's terms (clear_core/mrdib.py) on cases small enough to work out by hand.

The equations are those of the module docstring (the paper's objectives as a reading note of its
full text gives them, instantiated by us): every expected number below is derived in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from clear_core.mrdib import (
    MRdIB,
    critic,
    cross_correlation,
    donsker_varadhan,
    gaussian_kl,
    redundancy,
    reversed_call,
)


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


def _hand_set_plugin(estimator: str = "correlation") -> MRdIB:
    """Two modalities in 2-d, one user, every weight set by hand."""
    plugin = MRdIB(["image", "text"], 2, 1, kl_weight=0.5, unique_weight=2.0, redundancy_weight=3.0,
                   synergy_weight=4.0, redundancy_estimator=estimator)
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


def test_mine_is_the_donsker_varadhan_bound_on_shuffled_pairs():
    # f(a, b) = ReLU(a + b) on 1-d samples: the critic of a 1-d pair is 2 -> 1 -> 1.
    f = critic(1)
    with torch.no_grad():
        f[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
        f[0].bias.zero_()
        f[2].weight.fill_(1.0)
        f[2].bias.zero_()
    plugin = MRdIB(["image", "text"], 1, 1, kl_weight=0.0, unique_weight=0.0, redundancy_weight=1.0,
                   synergy_weight=0.0)
    plugin.critics["image__text"].load_state_dict(f.state_dict())
    z = {"image": torch.tensor([[1.0], [2.0]]), "text": torch.tensor([[0.0], [2.0]])}
    # Joint rows (1, 0), (2, 2): f = 1, 4, mean 2.5. Shuffled by (1, 0): (1, 2), (2, 0): f = 3, 2,
    # log mean exp = log((e^3 + e^2) / 2).
    expected = 2.5 - math.log((math.exp(3) + math.exp(2)) / 2)
    terms = plugin.terms(z, torch.tensor([0]), samples=z, shuffle=torch.tensor([1, 0]))
    assert terms["redundancy"].item() == pytest.approx(expected, rel=1e-6)
    assert donsker_varadhan(torch.tensor([1.0, 4.0]), torch.tensor([3.0, 2.0])).item() == pytest.approx(expected, rel=1e-6)
    # No synergy weight, no fused decoder: the paper's synergy term is the backbone's own loss.
    assert "synergy" not in terms and plugin.fusion is None and plugin.target_users.shape[0] == 2


def test_the_critic_ascends_the_bound_that_the_features_descend():
    # One backward through reversed_call: the critic's gradient is the negative of the plain
    # one (it maximises the bound), the inputs' is unchanged (the encoders minimise it).
    torch.manual_seed(0)
    f = critic(3)
    x = torch.randn(5, 6, requires_grad=True)
    plain = f(x).square().sum()
    g_params = torch.autograd.grad(plain, list(f.parameters()) + [x])
    reversed_out = reversed_call(f, x).square().sum()
    torch.testing.assert_close(reversed_out, plain)
    g_reversed = torch.autograd.grad(reversed_out, list(f.parameters()) + [x])
    for a, b in zip(g_params[:-1], g_reversed[:-1], strict=True):
        torch.testing.assert_close(b, -a)
    torch.testing.assert_close(g_reversed[-1], g_params[-1])


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


def test_each_decoder_user_table_starts_as_a_backbone_user_table():
    # Xavier on an n_users x d table: bound sqrt(6 / (n_users + d)) per table, not the bound of
    # the stacked tensor (which would count n_users x d as its fan-in).
    torch.manual_seed(0)
    plugin = MRdIB(["image", "text"], 16, 500, kl_weight=1.0, unique_weight=1.0, redundancy_weight=1.0,
                   synergy_weight=0.0)
    bound = math.sqrt(6 / (500 + 16))
    for table in plugin.target_users:
        assert table.abs().max().item() <= bound
        assert table.abs().max().item() > 0.9 * bound
