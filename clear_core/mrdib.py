"""MRdIB as a plug-in: an information bottleneck on the encoded modality features, and the
objectives that shape unique, redundant and synergistic information (Wang et al., "Multimodal
Representation-disentangled Information Bottleneck for Multimodal Recommendation", arXiv
2509.20225).

What this is based on. Neither the paper's full text nor the authors' code was reachable from here.
The equations below follow a detailed reading note of the full paper (GitHub
stephenZkang/recommended-paper-weekly-reading, ``notes/2509/4-week/005-MRdIB.md``; a secondary,
apparently generated summary) and the abstract; where the note is silent the choice is ours and
says so. According to the note, with z_i ~ q(z_i | x_i) per modality and Y the recommendation target:

* L_MIB = E[-log p(y | z_1, z_2)] + α_1 Σ_i KL(q(z_i | x_i) ‖ N(0, I)): the first term is the
  backbone's own recommendation loss read on the sampled z (the model reads z_m in training);
  the second is the compression term.
* L_U = E[Σ_i -log p(y | z_i)], an independent decoder per modality (unique information).
* L_R = E_p(z1,z2)[f(z_1, z_2)] - log E_p(z1)p(z2)[e^f(z_1, z_2)], MINE's Donsker-Varadhan
  bound on I(Z_1; Z_2) with a critic network f, minimised (redundant information).
* L_S = E[-log p(y | z_1, z_2)] (synergistic information): the same joint prediction as L_MIB's
  first term, so it has no weight of its own.
* Total: L_MIB + α_2 L_R + α_3 L_U, each α searched over {1e-4, 1e-3, 5e-3, 1e-2, 5e-2}; the
  best point reported for MGCN is α_1 = 5e-3, α_2 = 5e-2, α_3 = 5e-3 (our defaults).

Where it sits: like CLEAR's projection, on h_m, the features of modality m after their first
learned transform (:meth:`MultimodalRecommender.encode`), so every multimodal model gets it with
no code of its own. Our instantiation, symbol by symbol:

1. Bottleneck: q(z_m | x) = N(h_m, diag σ_m²) with log σ_m² = g_m(h_m), g_m a linear head
   (ours; the note does not say how σ is parameterised). In training the model reads
   z_m = h_m + σ_m ⊙ ε (reparameterised); in evaluation the mean h_m.
   ``L_kl = Σ_m mean_i KL(N(h_m,i, σ_m,i²) ‖ N(0, I))``, weight ``mrdib_kl_weight`` (α_1).
2. Decoders: q(y | X) scores the (positive, negative) pair of the batch with its own user vectors
   p_u^X, ``ℓ(X) = mean -log σ(<p_u^X, X_pos> - <p_u^X, X_neg>)`` (BPR, the backbones' -log p(y|.)).
   ``L_U = Σ_m ℓ(z_m)``, weight ``mrdib_unique_weight`` (α_3).
3. Redundancy, ``mrdib_redundancy_estimator``:
   * ``mine`` (the paper's): per pair of modalities a critic f (an MLP on [z_a; z_b]) and
     ``L_R = mean f(z_a, z_b) - log mean exp f(z_a, z_b[π])`` over the batch's item rows, π a
     random permutation of the rows (samples of the product of marginals, as MINE draws them).
     The encoders minimise it; the critic must maximise it to keep the bound tight. Both happen
     in the one optimiser step the trainer takes: the critic's parameters enter through a
     gradient reversal (:func:`reversed_call`), so its gradient is the ascent direction.
   * ``correlation`` (our first instantiation, kept as an ablation): ``½ ‖R(h_a, h_b)‖_F²``, R the
     d x d cross-correlation of the means over the batch's items, the Gaussian I(h_a; h_b) to
     second order. No critic, only linear dependence.
   Weight ``mrdib_redundancy_weight`` (α_2).
4. Synergy: the paper's L_S is the backbone's own loss on z (weight 1, built in). An extra
   fused decoder, ``ℓ(LeakyReLU(W_f [z_1; ...; z_M] + b_f))`` with weight
   ``mrdib_synergy_weight`` (α_s), was our first reading of the abstract; it is off by default
   (0) and is built only when its weight is positive.

Loss added to the model's own: ``α_1 L_kl + α_3 L_U + α_2 L_R (+ α_s L_fused)``.

Departures, and why:

* The decoders q(y | z) have their own user vectors instead of the backbone's users: a plug-in at
  the encoder output has no generic access to them (VBPR's users are 2d wide, CLEAR's one
  d-vector per modality).
* The auxiliary terms are computed on the batch's positive and negative items only (as the
  backbone's BPR), from a sample of z drawn for them, independent of the one the backbone read.
* MINE's moving-average correction of the bound's gradient bias is not used (the note does not
  mention one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clear_core.models.losses import bpr_loss
from clear_core.param_rules import MRDIB_REDUNDANCY_ESTIMATORS

#: The plug-in's parameters, shared by every multimodal model (defaults: configs/plugins.yaml;
#: their ranges: :mod:`clear_core.param_rules`).
MRDIB_PARAMS: dict[str, Any] = {
    "mrdib": bool,
    "mrdib_kl_weight": float,
    "mrdib_unique_weight": float,
    "mrdib_redundancy_weight": float,
    "mrdib_redundancy_estimator": str,
    "mrdib_synergy_weight": float,
}
#: log σ² the bottleneck starts from (σ = 0.1): training starts near the deterministic model and
#: the KL term, not the initialisation, decides how much noise each modality carries.
INITIAL_LOG_VARIANCE = math.log(1e-2)
#: Bounds on log σ², so that exp() can neither overflow nor make the KL's -log σ² term explode.
LOG_VARIANCE_RANGE = (-12.0, 6.0)


def gaussian_kl(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """``mean_i KL(N(μ_i, diag σ_i²) ‖ N(0, I)) = mean_i ½ Σ_j (μ_ij² + σ_ij² - log σ_ij² - 1)``."""
    return 0.5 * (mean.square() + log_variance.exp() - log_variance - 1.0).sum(dim=-1).mean()


def cross_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The d_a x d_b Pearson correlations between the columns of ``a`` and ``b`` over their rows."""
    a_c = a - a.mean(dim=0, keepdim=True)
    b_c = b - b.mean(dim=0, keepdim=True)
    a_n = a_c / a_c.square().sum(dim=0, keepdim=True).sqrt().clamp_min(eps)
    b_n = b_c / b_c.square().sum(dim=0, keepdim=True).sqrt().clamp_min(eps)
    return a_n.T @ b_n


def redundancy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``½ ‖R(a, b)‖_F²``: Gaussian I(a; b) to second order in the correlations."""
    return 0.5 * cross_correlation(a, b).square().sum()


def donsker_varadhan(joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """MINE's bound ``mean(joint) - log mean(exp(marginal))`` on I(A; B) from the critic's
    outputs on paired rows (samples of p(a, b)) and on shuffled rows (of p(a) p(b))."""
    return joint.mean() - (torch.logsumexp(marginal, dim=0) - math.log(marginal.numel()))


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def reversed_call(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """``module(*inputs)`` with the gradient of ``module``'s own parameters negated (the inputs'
    is not): minimising a loss through it trains the module to maximise that loss."""
    params = {name: _ReverseGradient.apply(p) for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, inputs)


def critic(dim: int) -> nn.Sequential:
    """MINE's statistics network f(z_a, z_b) on the concatenated pair: 2d -> d -> 1."""
    net = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))
    for layer in (net[0], net[2]):
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return net


class MRdIB(nn.Module):
    """Bottleneck heads g_m, the decoders' user vectors p_u^X, the MINE critics (one per pair of
    modalities) and, only with a positive ``synergy_weight``, the fused decoder W_f; see the
    module docstring. ``modalities`` fixes the order of the pairs and of the concatenation."""

    def __init__(
        self,
        modalities: list[str],
        dim: int,
        n_users: int,
        *,
        kl_weight: float,
        unique_weight: float,
        redundancy_weight: float,
        synergy_weight: float,
        redundancy_estimator: str = "mine",
    ) -> None:
        super().__init__()
        # How L_R estimates the overlap of two modalities (module docstring, item 3).
        if redundancy_estimator not in MRDIB_REDUNDANCY_ESTIMATORS:
            raise ValueError(f"redundancy_estimator: expected one of {MRDIB_REDUNDANCY_ESTIMATORS}, "
                             f"got {redundancy_estimator!r}")
        self.modalities = list(modalities)
        self.kl_weight = float(kl_weight)
        self.unique_weight = float(unique_weight)
        self.redundancy_weight = float(redundancy_weight)
        self.synergy_weight = float(synergy_weight)
        self.redundancy_estimator = redundancy_estimator
        self.pairs = [(a, b) for i, a in enumerate(self.modalities) for b in self.modalities[i + 1 :]]
        self.log_variance = nn.ModuleDict()
        for m in self.modalities:
            head = nn.Linear(dim, dim)
            nn.init.zeros_(head.weight)
            nn.init.constant_(head.bias, INITIAL_LOG_VARIANCE)
            self.log_variance[m] = head
        # One user table per representation a decoder reads: the M modalities (then the fusion).
        fused = self.synergy_weight > 0
        # Xavier per table, as a backbone's user table (n_users x d): on the stacked 3-d tensor
        # torch would count n_users x d as fan-in and start the decoders 8x smaller on TikTok.
        self.target_users = nn.Parameter(torch.stack([
            nn.init.xavier_uniform_(torch.empty(n_users, dim)) for _ in range(len(self.modalities) + int(fused))
        ]))
        self.critics = nn.ModuleDict(
            {self.pair_key(a, b): critic(dim) for a, b in self.pairs} if redundancy_estimator == "mine" else {}
        )
        self.fusion: nn.Linear | None = None
        if fused:
            self.fusion = nn.Linear(len(self.modalities) * dim, dim)
            nn.init.xavier_uniform_(self.fusion.weight)
            nn.init.zeros_(self.fusion.bias)

    @staticmethod
    def pair_key(a: str, b: str) -> str:
        return f"{a}__{b}"

    def log_variances(self, means: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """log σ_m² = g_m(h_m), clamped to :data:`LOG_VARIANCE_RANGE`."""
        return {m: self.log_variance[m](means[m]).clamp(*LOG_VARIANCE_RANGE) for m in self.modalities}

    def sample(
        self, means: Mapping[str, torch.Tensor], log_variances: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """z_m = h_m + σ_m ⊙ ε, ε ~ N(0, I) from torch's global generator (seeded and
        checkpointed by the trainer)."""
        if log_variances is None:
            log_variances = self.log_variances(means)
        return {
            m: means[m] + torch.exp(0.5 * log_variances[m]) * torch.randn_like(means[m])
            for m in self.modalities
        }

    def compress(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the model reads: samples in training, the means h_m in evaluation."""
        return self.sample(means) if self.training else means

    def decoder_loss(
        self, which: int, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        """ℓ(X): BPR of the decoder's user vectors ``which`` on the representation's pos/neg rows."""
        p_u = self.target_users[which].index_select(0, users)
        return bpr_loss((p_u * pos).sum(-1), (p_u * neg).sum(-1))

    def mutual_information(self, a: str, b: str, za: torch.Tensor, zb: torch.Tensor,
                           shuffle: torch.Tensor) -> torch.Tensor:
        """MINE's bound on I(z_a; z_b) over the rows, the critic's gradient reversed."""
        f = self.critics[self.pair_key(a, b)]
        joint = reversed_call(f, torch.cat([za, zb], dim=1)).squeeze(1)
        marginal = reversed_call(f, torch.cat([za, zb.index_select(0, shuffle)], dim=1)).squeeze(1)
        return donsker_varadhan(joint, marginal)

    def terms(
        self,
        means: Mapping[str, torch.Tensor],
        users: torch.Tensor,
        samples: Mapping[str, torch.Tensor] | None = None,
        shuffle: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The unweighted terms for a batch: ``means`` hold h_m of the positives (first
        ``len(users)`` rows) then the negatives. ``samples`` (z_m) are drawn when not given, and
        so is ``shuffle``, the permutation of the rows that pairs them for MINE's marginal term."""
        log_variances = self.log_variances(means)
        if samples is None:
            samples = self.sample(means, log_variances)
        n = len(users)
        zero = torch.zeros((), device=users.device)
        kl = sum(gaussian_kl(means[m], log_variances[m]) for m in self.modalities)
        unique = sum(
            self.decoder_loss(i, users, samples[m][:n], samples[m][n:]) for i, m in enumerate(self.modalities)
        )
        if self.redundancy_estimator == "mine":
            rows = len(samples[self.modalities[0]])
            if shuffle is None:
                shuffle = torch.randperm(rows, device=users.device)
            red = sum((self.mutual_information(a, b, samples[a], samples[b], shuffle) for a, b in self.pairs), zero)
        else:
            red = sum((redundancy(means[a], means[b]) for a, b in self.pairs), zero)
        out = {"kl": kl, "unique": unique, "redundancy": red}
        if self.fusion is not None:
            fused = F.leaky_relu(self.fusion(torch.cat([samples[m] for m in self.modalities], dim=1)))
            out["synergy"] = self.decoder_loss(len(self.modalities), users, fused[:n], fused[n:])
        return out

    def loss(
        self,
        means: Mapping[str, torch.Tensor],
        users: torch.Tensor,
        samples: Mapping[str, torch.Tensor] | None = None,
        shuffle: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``α_1 L_kl + α_3 L_U + α_2 L_R (+ α_s L_fused)`` (arguments as :meth:`terms`)."""
        t = self.terms(means, users, samples, shuffle)
        loss = self.kl_weight * t["kl"] + self.unique_weight * t["unique"] + self.redundancy_weight * t["redundancy"]
        return loss + self.synergy_weight * t["synergy"] if "synergy" in t else loss

    def diagnostics(self) -> dict[str, float]:
        """Mean bottleneck log σ² bias per modality (how much noise the KL has let in)."""
        return {f"mean_log_variance_bias/{m}": float(self.log_variance[m].bias.detach().mean()) for m in self.modalities}

    def extra_repr(self) -> str:
        return (
            f"kl_weight={self.kl_weight}, unique_weight={self.unique_weight}, "
            f"redundancy_weight={self.redundancy_weight} ({self.redundancy_estimator}), "
            f"synergy_weight={self.synergy_weight}"
        )


__all__ = [
    "INITIAL_LOG_VARIANCE",
    "LOG_VARIANCE_RANGE",
    "MRDIB_PARAMS",
    "MRdIB",
    "cross_correlation",
    "donsker_varadhan",
    "gaussian_kl",
    "redundancy",
    "reversed_call",
]
