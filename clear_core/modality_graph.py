"""Graphs the multimodal models need: the kNN item-item graph (built once from raw features,
chunked) and degree-sensitive edge dropout of the user-item graph (FREEDOM, CLEAR).

All graphs are torch sparse COO tensors, symmetric-normalised, on the device of their inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F

from clear_core.graph import quiet_sparse_notices

#: Rows of the similarity matrix computed at once: keeps the kNN graph of a catalogue of
#: ``n`` items at O(chunk * n) memory instead of O(n²) (a complaint about MMRec, protocol.md).
DEFAULT_CHUNK = 2048


def normalise_sparse(rows: torch.Tensor, cols: torch.Tensor, size: tuple[int, int], values=None):
    """``D_r^{-1/2} A D_c^{-1/2}`` of the 0/1 (or weighted) matrix given by ``rows``/``cols``.

    Degrees are row sums for the rows and column sums for the columns, so for a symmetric
    ``A`` this is the usual symmetric normalisation; a small epsilon keeps empty rows at 0.
    """
    if values is None:
        values = torch.ones(len(rows), dtype=torch.float32, device=rows.device)
    row_deg = torch.zeros(size[0], dtype=values.dtype, device=rows.device).index_add_(0, rows, values)
    col_deg = torch.zeros(size[1], dtype=values.dtype, device=rows.device).index_add_(0, cols, values)
    inv_r = (row_deg + 1e-7).pow(-0.5)
    inv_c = (col_deg + 1e-7).pow(-0.5)
    norm = values * inv_r[rows] * inv_c[cols]
    with quiet_sparse_notices():
        return torch.sparse_coo_tensor(
            torch.stack([rows, cols]), norm, size, check_invariants=False
        ).coalesce()


def bipartite_edges(
    users: torch.Tensor, items: torch.Tensor, n_users: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of the user-item edges in the joint (users + items) node numbering."""
    items_shifted = items + n_users
    return torch.cat([users, items_shifted]), torch.cat([items_shifted, users])


def bipartite_adjacency(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int
) -> torch.Tensor:
    """Symmetric-normalised adjacency of the user-item graph, (n_users + n_items) square, in
    CSR layout like :func:`clear_core.graph.normalized_adjacency` (built here on the device
    of ``users``, which matters when it is rebuilt every epoch after edge dropout)."""
    n = n_users + n_items
    rows, cols = bipartite_edges(users, items, n_users)
    coo = normalise_sparse(rows, cols, (n, n))
    with quiet_sparse_notices():
        return coo.to_sparse_csr()


def user_item_matrix(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_users x n_items`` matrix with ``values`` on the training edges, and its transpose,
    both CSR (for :func:`propagate_with_transpose`): with ``values = edge_weights(...)`` it is the
    user-item block of the symmetric-normalised graph (MGCN's ``R``); with ones, the raw
    interaction matrix (LGMRec's ``adj``)."""
    with quiet_sparse_notices():
        coo = torch.sparse_coo_tensor(
            torch.stack([users, items]), values.float(), (n_users, n_items), check_invariants=False
        )
    return to_csr_pair(coo)


def edge_weights(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """``1 / sqrt(d_u d_i)`` per training edge: FREEDOM's degree-sensitive sampling weights."""
    ones = torch.ones(len(users), dtype=torch.float32, device=users.device)
    d_u = torch.zeros(n_users, device=users.device).index_add_(0, users, ones)
    d_i = torch.zeros(n_items, device=users.device).index_add_(0, items, ones)
    return (d_u[users] * d_i[items]).clamp_min(1.0).rsqrt()


def degree_sensitive_keep(
    weights: torch.Tensor, keep_ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``round(len * keep_ratio)`` edges sampled without replacement with probability
    proportional to ``weights`` (edges between low-degree nodes survive more often)."""
    n_keep = int(len(weights) * keep_ratio)
    if n_keep >= len(weights):
        return torch.arange(len(weights), device=weights.device)
    if n_keep <= 0:
        return torch.zeros(0, dtype=torch.long, device=weights.device)
    # Gumbel top-k (= sampling without replacement proportional to weights), vectorised and
    # free of torch.multinomial's 2**24 category limit.
    uniform = torch.rand(len(weights), generator=generator, device=weights.device)
    keys = weights.log() - torch.log(-torch.log(uniform.clamp(1e-20, 1.0)))
    return torch.topk(keys, n_keep).indices


def dropped_adjacency(
    users: torch.Tensor,
    items: torch.Tensor,
    weights: torch.Tensor,
    n_users: int,
    n_items: int,
    edge_dropout: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The user-item adjacency after degree-sensitive dropout of ``edge_dropout`` of the edges,
    renormalised on the kept edges (FREEDOM's ``pre_epoch_processing``)."""
    keep = degree_sensitive_keep(weights, 1.0 - edge_dropout, generator)
    return bipartite_adjacency(users[keep], items[keep], n_users, n_items)


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
    """Unit-weight kNN graph of the items, ``D^{-1/2} A D^{-1/2}`` with row degrees (FREEDOM)."""
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
