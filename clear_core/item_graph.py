"""The kNN item-item graph of the multimodal models (FREEDOM, CLEAR): built once from the raw
features of each modality, chunked, and mixed over modalities; and its propagation step.

The graphs are torch sparse tensors on the device of their inputs. The user-item graph and its
edge dropout are in :mod:`clear_core.graph`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F

from clear_core.graph import quiet_sparse_notices

#: Rows of the similarity matrix computed at once: keeps the kNN graph of a catalogue of
#: ``n`` items at O(chunk * n) memory instead of the O(n²) of a full similarity matrix, which
#: does not fit for large catalogues.
DEFAULT_CHUNK = 2048


def knn_neighbours(
    features: torch.Tensor, k: int, chunk_size: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Top-``k`` cosine neighbours of every row (self included, as FREEDOM does): (n, k) indices.

    Similarities are computed ``chunk_size`` rows at a time so memory is O(chunk * n).
    """
    n = features.shape[0]
    k = min(k, n)
    unit = F.normalize(features.float(), dim=1)
    out = torch.empty(n, k, dtype=torch.long, device=features.device)
    for start in range(0, n, chunk_size):
        block = unit[start : start + chunk_size] @ unit.T
        out[start : start + chunk_size] = torch.topk(block, k, dim=1).indices
    return out


def knn_item_graph(features: torch.Tensor, k: int, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Unit-weight kNN graph of the items, ``D^{-1/2} A D^{-1/2}`` with row degrees on both sides
    (FREEDOM's rule, kept as FREEDOM computes it: float32 with a 1e-7 epsilon; every row has
    ``k`` edges, so no degree is 0)."""
    n = features.shape[0]
    nbrs = knn_neighbours(features, k, chunk_size)
    rows = torch.arange(n, device=features.device).repeat_interleave(nbrs.shape[1])
    cols = nbrs.reshape(-1)
    values = torch.ones(len(rows), dtype=torch.float32, device=features.device)
    deg = torch.zeros(n, device=features.device).index_add_(0, rows, values)
    inv = (deg + 1e-7).pow(-0.5)
    with quiet_sparse_notices():
        return torch.sparse_coo_tensor(
            torch.stack([rows, cols]), values * inv[rows] * inv[cols], (n, n), check_invariants=False
        ).coalesce()


def similarity_knn_graph(features: torch.Tensor, k: int, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """kNN graph weighted by the cosine similarities themselves (self included), normalised
    ``D^{-1/2} S D^{-1/2}`` with ``D`` the row sums of the kept similarities: MMRec's
    ``build_knn_normalized_graph(..., norm_type='sym')`` (MGCN), chunked like :func:`knn_neighbours`.
    A row whose kept similarities sum to 0 or less gets weight 0 (MMRec masks the inf)."""
    n = features.shape[0]
    k = min(k, n)
    unit = F.normalize(features.float(), dim=1)
    values = torch.empty(n, k, dtype=torch.float32, device=features.device)
    cols = torch.empty(n, k, dtype=torch.long, device=features.device)
    for start in range(0, n, chunk_size):
        values[start : start + chunk_size], cols[start : start + chunk_size] = torch.topk(
            unit[start : start + chunk_size] @ unit.T, k, dim=1
        )
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    values, cols = values.reshape(-1), cols.reshape(-1)
    deg = torch.zeros(n, device=features.device).index_add_(0, rows, values)
    inv = torch.where(deg > 0, deg.clamp_min(1e-30).rsqrt(), torch.zeros_like(deg))
    with quiet_sparse_notices():
        return torch.sparse_coo_tensor(
            torch.stack([rows, cols]), inv[rows] * values * inv[cols], (n, n), check_invariants=False
        ).coalesce()


def mixed_item_graph(
    features: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    k: int,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """``Σ_m w_m kNN(features_m)``: FREEDOM's frozen item-item graph (0.1 image + 0.9 text)."""
    total = None
    for m, w in weights.items():
        if w == 0.0:
            continue
        g = knn_item_graph(features[m], k, chunk_size) * w
        total = g if total is None else total + g
    if total is None:
        raise ValueError("mixed_item_graph: every modality weight is 0")
    return total.coalesce()


class _SparseMMWithTranspose(torch.autograd.Function):
    """``adj @ dense`` whose backward uses a precomputed ``adj_t`` (CSR): the generic sparse
    backward would transpose and coalesce ``adj`` at every step."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, adj_t: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, torch.sparse.mm(ctx.adj_t, grad.contiguous())


def to_csr_pair(adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse matrix and its transpose, both CSR (for :func:`propagate_with_transpose`)."""
    coo = adj.coalesce()
    with quiet_sparse_notices():
        return coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()


def propagate_with_transpose(adj: torch.Tensor, adj_t: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``adj @ dense``, differentiable in ``dense`` with the cheap backward ``adj_t @ grad``."""
    return _SparseMMWithTranspose.apply(adj, adj_t, dense)
