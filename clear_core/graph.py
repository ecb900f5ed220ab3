"""The user-item graph: its normalisation, its degree-sensitive edge dropout, its propagation.

The user-item graph is the bipartite adjacency over ``n_users + n_items`` nodes (users first,
then items), symmetrically normalised: ``D^-1/2 A D^-1/2`` (LightGCN, NGCF), with one numeric
rule for every caller (:func:`user_item_adjacency`). It is returned in CSR layout, whose CPU and
CUDA matrix products are row-parallel and therefore deterministic. The multimodal models also
redraw it every epoch with degree-sensitive edge dropout (:func:`dropped_adjacency`). The kNN
item-item graph is in :mod:`clear_core.item_graph`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def quiet_sparse_notices() -> Iterator[None]:
    """Silence torch's notices about sparse tensors that this project handles on purpose.

    "Sparse CSR tensor support is in beta": CSR products are exactly what we rely on, and they
    are tested. "Sparse invariant checks are implicitly disabled" (torch 2.11, at the first
    sparse constructor of a process): our graphs are built from validated, sorted indices.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        yield


def user_item_edges(
    users: torch.Tensor, items: torch.Tensor, n_users: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of the user-item edges in the joint node numbering (users, then items)."""
    items_shifted = items + n_users
    return torch.cat([users, items_shifted]), torch.cat([items_shifted, users])


def user_item_adjacency(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the user-item graph whose edges are ``(users[e], items[e])``, in
    CSR layout, on the device of ``users``.

    The one normalisation rule of the project: degrees are edge counts, the inverse square roots
    are taken in float64 and a node without edges gets 0 (not inf, and no epsilon), so its row
    and column stay empty; the products are rounded to ``dtype`` once, at the end. Edges are
    taken as given (an edge listed twice counts twice: :func:`normalized_adjacency` removes
    duplicates first).
    """
    n_nodes = n_users + n_items
    rows, cols = user_item_edges(users, items, n_users)
    # Sums of ones in float64 are exact whatever the order, so CUDA's atomic adds give the same
    # degrees as the CPU.
    ones = torch.ones(len(rows), dtype=torch.float64, device=rows.device)
    degree = torch.zeros(n_nodes, dtype=torch.float64, device=rows.device).index_add_(0, rows, ones)
    inv_sqrt = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    values = (inv_sqrt[rows] * inv_sqrt[cols]).to(dtype)
    with quiet_sparse_notices():
        coo = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), values, (n_nodes, n_nodes), check_invariants=False
        ).coalesce()
        return coo.to_sparse_csr()


def normalized_adjacency(
    train: np.ndarray, n_users: int, n_items: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """:func:`user_item_adjacency` of the training pairs ``train`` (``(n, 2)`` user, item rows),
    on the CPU; duplicate rows count once."""
    pairs = torch.from_numpy(np.unique(np.asarray(train, dtype=np.int64).reshape(-1, 2), axis=0))
    return user_item_adjacency(pairs[:, 0], pairs[:, 1], n_users, n_items, dtype=dtype)


def user_item_matrix(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_users x n_items`` matrix with ``values`` on the edges ``(users[e], items[e])``
    (duplicates summed) and its transpose, both CSR, for
    :func:`~clear_core.item_graph.propagate_with_transpose`: with ``values = edge_weights(...)``
    it is the user-item block of the symmetric-normalised graph (MGCN's ``R``); with ones, the
    raw interaction matrix (LGMRec's ``adj``)."""
    with quiet_sparse_notices():
        coo = torch.sparse_coo_tensor(
            torch.stack([users, items]), values.float(), (n_users, n_items), check_invariants=False
        ).coalesce()
        return coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()


# --- degree-sensitive edge dropout (FREEDOM, CLEAR) -------------------------------------------


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
    renormalised on the kept edges (FREEDOM's ``pre_epoch_processing``), built on the device of
    ``users`` since it is rebuilt every epoch."""
    keep = degree_sensitive_keep(weights, 1.0 - edge_dropout, generator)
    return user_item_adjacency(users[keep], items[keep], n_users, n_items)


# --- propagation --------------------------------------------------------------------------------


class _SymmetricSparseMM(torch.autograd.Function):
    """``adj @ dense`` for a SYMMETRIC sparse ``adj``: the backward is ``adj @ grad``.

    This avoids the transpose that the generic sparse backward builds at every step and
    keeps the backward deterministic (no scatter-add).
    """

    @staticmethod
    def forward(ctx, adj: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, torch.sparse.mm(ctx.adj, grad.contiguous())


def symmetric_propagate(adj: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """One propagation step ``adj @ dense`` with the cheap backward of a symmetric ``adj``."""
    return _SymmetricSparseMM.apply(adj, dense)
