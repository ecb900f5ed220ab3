"""CLEAR's cross-modal null-space projection (paper Sections 3.2-3.3, Algorithm 1 lines 2-10).

Given the MLP-transformed features of two modalities, ``A`` (N x d_a, the paper's V) and
``B`` (N x d_b, the paper's T), the cross-modal covariance ``C = (1/N) Ā^T B̄`` of the
mean-centred features is decomposed by SVD, ``C = U Σ W^T``. Its top-``k`` singular pairs are
the directions in which the two modalities carry the same information (redundancy). Soft
projectors ``P_a = I - λ U_k U_k^T`` and ``P_b = I - λ W_k W_k^T`` shrink those directions by
``1 - λ`` and leave the orthogonal complement untouched; by Theorem 5 the covariance of the
projected features has singular values ``(1-λ)^2 σ_i`` for ``i <= k`` and ``σ_i`` otherwise.

Names used in code and configuration (paper symbol in brackets):

* ``redundancy_rank`` (k): how many singular directions are suppressed;
* ``projection_strength`` (λ): 0 leaves features unchanged, 1 removes the directions;
* ``refresh_every`` (τ): epochs between recomputations of the projector;
* ``mode``: ``"fixed"`` (the paper: k fixed), ``"dynamic"`` (the ablation of Section 4.3: at
  each refresh k is the smallest rank whose singular-value energy ``Σ_{i<=k} σ_i² / Σ σ_i²``
  reaches ``energy_ratio``) or ``"none"`` (no projection, the "w/o null-space" ablation).

Refresh cadence. Algorithm 1 line 2 reads ``e mod τ = 0 or e = 1``, which for τ = 5 refreshes at
epochs 1, 5, 10, ... (the first interval is shorter than the others). We refresh at epochs
1, 1+τ, 1+2τ, ... instead, so that every projector is used for exactly τ epochs.
With τ = 1 (the paper's default, "at the beginning of each training epoch") both agree.

Projection is applied as ``X - λ (X U_k) U_k^T`` rather than ``X (I - λ U_k U_k^T)``: the same
numbers in O(N d k) instead of O(N d²), and only the ``d x k`` bases are stored. The bases are
buffers computed from detached tensors, so no gradient reaches them and a checkpoint restores
exactly the projector a run was using.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clear_core.errors import ConfigError
from clear_core.param_rules import range_problems, rank_problem, value_problem

MODES = ("fixed", "dynamic", "none")


def cross_covariance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``C = (1/N) Āᵀ B̄`` of mean-centred ``a`` (N x d_a) and ``b`` (N x d_b): a d_a x d_b matrix."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"expected two (N, d) feature matrices with the same N, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    n = a.shape[0]
    a_c = a - a.mean(dim=0, keepdim=True)
    b_c = b - b.mean(dim=0, keepdim=True)
    return a_c.T @ b_c / n


def singular_decomposition(
    c: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of a detached covariance: ``(U, σ, W)`` with ``C = U diag(σ) Wᵀ``, σ descending.

    Computed in float64 so that near-repeated singular values do not swap vectors between
    the two bases because of rounding.
    """
    u, s, vh = torch.linalg.svd(c.detach().double(), full_matrices=False)
    return u.to(c.dtype), s.to(c.dtype), vh.T.to(c.dtype)


def energy_rank(singular_values: torch.Tensor, energy_ratio: float) -> int:
    """Smallest k with ``Σ_{i<=k} σ_i² / Σ σ_i² >= energy_ratio`` (at least 1)."""
    energy = singular_values.double() ** 2
    total = float(energy.sum())
    if total <= 0.0:
        return 1
    cumulative = torch.cumsum(energy, 0) / total
    # A tolerance keeps ratio=1.0 reachable despite rounding in the cumulative sum.
    reached = torch.nonzero(cumulative >= energy_ratio - 1e-12)
    k = int(reached[0]) + 1 if len(reached) else len(singular_values)
    return max(1, min(k, len(singular_values)))


def soft_project(x: torch.Tensor, basis: torch.Tensor, strength: float) -> torch.Tensor:
    """``x (I - λ B Bᵀ)`` for an orthonormal ``basis`` B (d x k), differentiable in ``x``."""
    if basis.shape[1] == 0 or strength == 0.0:
        return x
    # One fused multiply-add instead of a product, a scale and a subtraction: fewer kernels
    # per batch, which is what a GPU step of these small models is bound by.
    return torch.addmm(x, x @ basis, basis.T, alpha=-strength)


def soft_projector(basis: torch.Tensor, strength: float) -> torch.Tensor:
    """The explicit d x d matrix ``I - λ B Bᵀ`` (for diagnostics; training uses :func:`soft_project`)."""
    d = basis.shape[0]
    return torch.eye(d, dtype=basis.dtype, device=basis.device) - strength * basis @ basis.T


def validate_projection(
    *,
    mode: Any,
    redundancy_rank: Any,
    projection_strength: Any,
    refresh_every: Any,
    energy_ratio: Any,
    dims: tuple[int, int] | None = None,
    source: str = "projection",
) -> None:
    """Raise one ConfigError listing every bad projection setting (rules in
    :mod:`clear_core.param_rules`; ``dims``: the two feature sizes k is taken from)."""
    problems = []
    if mode not in MODES:
        problems.append(f"projection: expected one of {', '.join(MODES)}, got {mode!r}")
    problems += range_problems({
        "redundancy_rank": redundancy_rank, "projection_strength": projection_strength,
        "refresh_every": refresh_every, "energy_ratio": energy_ratio,
    })
    if dims is not None and mode != "none" and not value_problem("redundancy_rank", redundancy_rank):
        detail = f"feature sizes {dims[0]} and {dims[1]}"
        if (p := rank_problem(redundancy_rank, min(dims), "min(d_a, d_b)", detail)):
            problems.append(p)
    if problems:
        raise ConfigError(problems, source=source)


def refresh_due(epoch: int, refresh_every: int) -> bool:
    """True at epochs 1, 1+τ, 1+2τ, ... (1-based epochs)."""
    return epoch >= 1 and (epoch - 1) % refresh_every == 0


class CrossModalProjection(nn.Module):
    """Holds the cached bases U_k (``basis_a``) and W_k (``basis_b``) and applies the projectors.

    ``basis_a``/``basis_b`` are buffers of fixed shape (``d x k`` in fixed mode, ``d x
    min(d_a, d_b)`` in dynamic mode, where only the first ``rank`` columns are used), so a
    checkpoint saved at any epoch loads into a freshly built module. ``spectrum`` keeps the
    singular values of the last refresh for diagnostics.
    """

    def __init__(
        self,
        dim_a: int,
        dim_b: int,
        *,
        mode: str = "fixed",
        redundancy_rank: int = 4,
        projection_strength: float = 0.9,
        refresh_every: int = 1,
        energy_ratio: float = 0.9,
    ) -> None:
        super().__init__()
        validate_projection(
            mode=mode,
            redundancy_rank=redundancy_rank,
            projection_strength=projection_strength,
            refresh_every=refresh_every,
            energy_ratio=energy_ratio,
            dims=(dim_a, dim_b),
        )
        self.mode = mode
        self.redundancy_rank = redundancy_rank
        self.projection_strength = float(projection_strength)
        self.refresh_every = refresh_every
        self.energy_ratio = float(energy_ratio)
        full = min(dim_a, dim_b)
        width = 0 if mode == "none" else (redundancy_rank if mode == "fixed" else full)
        self.register_buffer("basis_a", torch.zeros(dim_a, width))
        self.register_buffer("basis_b", torch.zeros(dim_b, width))
        self.register_buffer("spectrum", torch.zeros(full))
        self.register_buffer("rank", torch.zeros((), dtype=torch.long))
        # Epoch of the last refresh (0 = never): lets a resumed run know whether the
        # cached projector is valid without recomputing it.
        self.register_buffer("refreshed_at", torch.zeros((), dtype=torch.long))
        # Host copies of ``rank`` and ``refreshed_at``: every forward pass needs them, and
        # reading a CUDA buffer would wait for the GPU at every batch. The buffers stay the
        # checkpointed truth; a load copies them back here.
        self._rank = 0
        self._refreshed_at = 0
        self.register_load_state_dict_post_hook(_mirror_to_host)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def needs_refresh(self, epoch: int) -> bool:
        """Due at epochs 1, 1+τ, 1+2τ, ... unless already refreshed at ``epoch`` (once per due
        epoch, however often it is asked), and always before the first refresh."""
        if not self.active:
            return False
        if self._refreshed_at == 0:
            return True
        return refresh_due(epoch, self.refresh_every) and self._refreshed_at != epoch

    @torch.no_grad()
    def refresh(self, a: torch.Tensor, b: torch.Tensor, epoch: int) -> None:
        """Recompute U_k, W_k from the current (transformed) features ``a`` and ``b``."""
        if not self.active:
            return
        a = a.detach()
        b = b.detach()
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise ConfigError(
                f"projection refresh at epoch {epoch}: features contain NaN or infinite values "
                "(training diverged; lower the learning rate)"
            )
        u, s, w = singular_decomposition(cross_covariance(a.double(), b.double()))
        k = self.redundancy_rank if self.mode == "fixed" else energy_rank(s, self.energy_ratio)
        width = self.basis_a.shape[1]
        new_a = torch.zeros_like(self.basis_a)
        new_b = torch.zeros_like(self.basis_b)
        new_a[:, :k] = u[:, :k].to(new_a.dtype)
        new_b[:, :k] = w[:, :k].to(new_b.dtype)
        self.basis_a.copy_(new_a)
        self.basis_b.copy_(new_b)
        spectrum = torch.zeros_like(self.spectrum)
        spectrum[: len(s)] = s.to(spectrum.dtype)
        self.spectrum.copy_(spectrum)
        self.rank.fill_(min(k, width))
        self.refreshed_at.fill_(epoch)
        self._rank, self._refreshed_at = min(k, width), epoch

    def bases(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The active bases U_k (d_a x k) and W_k (d_b x k)."""
        return self.basis_a[:, : self._rank], self.basis_b[:, : self._rank]

    def current_bases(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(U_k, W_k)`` to project with now, or None (mode ``none``, or not refreshed yet)."""
        if not self.active or self._refreshed_at == 0:
            return None
        return self.bases()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a P_a, b P_b)``; identity when mode is ``none`` or before the first refresh."""
        bases = self.current_bases()
        if bases is None:
            return a, b
        u_k, w_k = bases
        return (
            soft_project(a, u_k.to(a.dtype), self.projection_strength),
            soft_project(b, w_k.to(b.dtype), self.projection_strength),
        )

    def diagnostics(self) -> dict[str, float]:
        """What the last refresh found (empty before the first, and in mode ``none``):
        ``rank`` (the k in use), ``leading_singular_value`` (σ_1 of C) and
        ``suppressed_energy_share`` (Σ_{i<=k} σ_i² / Σ σ_i², the share of C's energy in the
        suppressed directions). Read from buffers: no recomputation."""
        if not self.active or self._refreshed_at == 0:
            return {}
        energy = self.spectrum.double() ** 2
        total = float(energy.sum())
        return {
            "rank": float(self._rank),
            "leading_singular_value": float(self.spectrum[0]),
            "suppressed_energy_share": float(energy[: self._rank].sum()) / total if total > 0 else 0.0,
        }

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, redundancy_rank={self.redundancy_rank}, "
            f"projection_strength={self.projection_strength}, refresh_every={self.refresh_every}"
        )


def _mirror_to_host(module: CrossModalProjection, incompatible_keys: Any) -> None:
    module._rank = int(module.rank)
    module._refreshed_at = int(module.refreshed_at)


__all__ = [
    "MODES",
    "CrossModalProjection",
    "cross_covariance",
    "energy_rank",
    "refresh_due",
    "singular_decomposition",
    "soft_project",
    "soft_projector",
    "validate_projection",
]
