"""What the paper plots to show redundancy, as plain data (dicts of floats and lists).

* :func:`covariance_spectrum` - the singular values of the cross-modal covariance C before
  and after the soft projection (paper Figure 5: "the dominant singular values are
  substantially suppressed, and the energy distribution becomes markedly flatter");
* :func:`neighbour_overlap` - how many of an item's top-K neighbours in one modality are also
  its top-K neighbours in the other, against the K/(n-1) expected by chance (Figure 1);
* :func:`dataset_diagnostics` / :func:`model_diagnostics` - both, from a dataset's raw
  features or from a trained model's transformed (encoder) features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from clear_core.data.dataset import Dataset
from clear_core.errors import ConfigError
from clear_core.param_rules import rank_problem
from clear_core.projection import cross_covariance, singular_decomposition, soft_project


def effective_rank(singular_values: torch.Tensor | np.ndarray) -> float:
    """``exp(entropy)`` of the normalised energies σ_i² / Σσ²: 1 for one direction, d for a flat
    spectrum. A flatter spectrum after projection has a larger effective rank."""
    s = torch.as_tensor(singular_values, dtype=torch.float64)
    energy = s**2
    total = float(energy.sum())
    if total <= 0:
        return 0.0
    p = energy[energy > 0] / total
    return float(math.exp(float(-(p * p.log()).sum())))


def spectrum_summary(s: torch.Tensor, k: int) -> dict[str, Any]:
    energy = s.double() ** 2
    total = float(energy.sum())
    return {
        "singular_values": [float(x) for x in s],
        "top_k_energy_share": float(energy[:k].sum()) / total if total > 0 else 0.0,
        "effective_rank": effective_rank(s),
        "frobenius_norm": math.sqrt(total),
    }


def covariance_spectrum(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    redundancy_rank: int,
    projection_strength: float,
    bases: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Spectrum of ``C(a, b)`` before and after projecting ``a`` and ``b``.

    Without ``bases`` the projector comes from C itself (top-``redundancy_rank`` singular
    vectors, as at a refresh); with ``bases`` (U_k, W_k of a trained model) those are used.
    """
    a = a.detach().double()
    b = b.detach().double()
    k_max = min(a.shape[1], b.shape[1])
    detail = f"feature sizes {a.shape[1]} and {b.shape[1]}"
    if (problem := rank_problem(redundancy_rank, k_max, "min(d_a, d_b)", detail)):
        raise ConfigError(problem)
    u, s, w = singular_decomposition(cross_covariance(a, b))
    if bases is None:
        u_k, w_k = u[:, :redundancy_rank], w[:, :redundancy_rank]
    else:
        u_k, w_k = (x.double() for x in bases)
    after = torch.linalg.svdvals(
        cross_covariance(soft_project(a, u_k, projection_strength), soft_project(b, w_k, projection_strength))
    )
    k = u_k.shape[1]
    return {
        "redundancy_rank": k,
        "projection_strength": projection_strength,
        "dims": [a.shape[1], b.shape[1]],
        "n_items": a.shape[0],
        "before": spectrum_summary(s, k),
        "after": spectrum_summary(after, k),
    }


def top_k_neighbours(x: torch.Tensor, k: int, chunk_size: int = 2048) -> torch.Tensor:
    """Cosine top-``k`` neighbours of every row, the row itself excluded: (n, k) indices."""
    n = x.shape[0]
    if not 1 <= k < n:
        raise ConfigError(f"neighbours: expected 1..{n - 1} for {n} items, got {k}")
    unit = F.normalize(x.detach().float(), dim=1)
    out = torch.empty(n, k, dtype=torch.long, device=x.device)
    for start in range(0, n, chunk_size):
        sim = unit[start : start + chunk_size] @ unit.T
        rows = torch.arange(sim.shape[0], device=x.device)
        sim[rows, rows + start] = -math.inf
        out[start : start + chunk_size] = torch.topk(sim, k, dim=1).indices
    return out


def neighbour_overlap(
    a: torch.Tensor, b: torch.Tensor, k: int = 10, chunk_size: int = 2048
) -> dict[str, Any]:
    """Share of each item's top-``k`` neighbours in ``a`` that are also top-``k`` in ``b``.

    Returns the mean share, its random expectation ``k / (n - 1)`` (neighbour sets drawn
    independently), their ratio, and a histogram of per-item overlap counts 0..k.
    """
    n = a.shape[0]
    na = top_k_neighbours(a, k, chunk_size)
    nb = top_k_neighbours(b, k, chunk_size)
    # Per item, count common entries of two k-sets: sort both and compare all pairs (k is small).
    common = (na.unsqueeze(2) == nb.unsqueeze(1)).any(dim=2).sum(dim=1)
    share = common.double() / k
    expected = k / (n - 1)
    mean = float(share.mean())
    return {
        "neighbours": k,
        "n_items": n,
        "mean_overlap": mean,
        "random_expectation": expected,
        "ratio_to_random": mean / expected,
        "histogram": [int(c) for c in torch.bincount(common, minlength=k + 1)],
    }


def _pair(modalities: list[str], pair: list[str] | None) -> list[str]:
    from clear_core.models.multimodal import default_pair

    pair = list(pair) if pair else default_pair(modalities)
    bad = [m for m in pair if m not in modalities]
    if len(pair) != 2 or len(set(pair)) != 2 or bad:
        raise ConfigError(
            f"projected_pair: expected two different modalities of {', '.join(modalities) or 'none'}, got {pair!r}"
        )
    return pair


def dataset_diagnostics(
    dataset: Dataset,
    *,
    redundancy_rank: int,
    projection_strength: float,
    neighbours: int,
    projected_pair: list[str] | None = None,
    chunk_size: int = 2048,
) -> dict[str, Any]:
    """Spectrum and neighbour overlap of the dataset's RAW features of the pair."""
    a_name, b_name = _pair(list(dataset.features), projected_pair)
    a = torch.as_tensor(np.asarray(dataset.features[a_name], dtype=np.float32))
    b = torch.as_tensor(np.asarray(dataset.features[b_name], dtype=np.float32))
    return {
        "source": "raw features",
        "dataset": dataset.name,
        "pair": [a_name, b_name],
        "spectrum": covariance_spectrum(
            a, b, redundancy_rank=redundancy_rank, projection_strength=projection_strength
        ),
        "neighbour_overlap": neighbour_overlap(a, b, neighbours, chunk_size),
    }


@torch.no_grad()
def model_diagnostics(
    model: torch.nn.Module,
    *,
    neighbours: int,
    redundancy_rank: int | None = None,
    projection_strength: float | None = None,
    chunk_size: int = 2048,
) -> dict[str, Any]:
    """The same from a trained multimodal model's encoder outputs.

    When the model projects (its ``projection`` buffers hold U_k, W_k), "after" uses exactly
    those bases; otherwise a projector is computed from the encoded features with the given
    (or default) rank and strength, to show what CLEAR would remove.
    """
    proj = model.projection
    if proj.active:
        a_name, b_name = model.projected_pair
    else:
        a_name, b_name = _pair(model.modality_names, None)
    a = model.encoders[a_name](model.raw(a_name))
    b = model.encoders[b_name](model.raw(b_name))
    if proj.active and int(proj.refreshed_at) > 0:
        spectrum = covariance_spectrum(
            a, b, redundancy_rank=int(proj.rank), projection_strength=proj.projection_strength,
            bases=proj.bases(),
        )
    else:
        spectrum = covariance_spectrum(
            a, b,
            redundancy_rank=redundancy_rank or proj.redundancy_rank,
            projection_strength=proj.projection_strength if projection_strength is None else projection_strength,
        )
    projected = model.encode()
    return {
        "source": "model encoder outputs",
        "model": model.name,
        "pair": [a_name, b_name],
        "spectrum": spectrum,
        "neighbour_overlap": neighbour_overlap(a, b, neighbours, chunk_size),
        "neighbour_overlap_projected": neighbour_overlap(
            projected[a_name], projected[b_name], neighbours, chunk_size
        ),
    }


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types (tensors and numpy scalars converted)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
