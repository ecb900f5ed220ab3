"""Interaction graphs as torch sparse tensors, built once per dataset.

The user-item graph is the bipartite adjacency over ``n_users + n_items`` nodes (users first,
then items), symmetrically normalised: ``D^-1/2 A D^-1/2`` (LightGCN, NGCF). It is returned in
CSR layout, whose CPU and CUDA matrix products are row-parallel and therefore deterministic.
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


def normalized_adjacency(
    train: np.ndarray, n_users: int, n_items: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the user-item graph of ``train`` (``(n, 2)`` user, item rows).

    A node without edges keeps an all-zero row (its degree term is taken as 0, not inf).
    Duplicate rows count once.
    """
    pairs = np.unique(np.asarray(train, dtype=np.int64).reshape(-1, 2), axis=0)
    users, items = pairs[:, 0], pairs[:, 1] + n_users
    n_nodes = n_users + n_items
    rows = np.concatenate([users, items])
    cols = np.concatenate([items, users])
    degree = np.bincount(rows, minlength=n_nodes).astype(np.float64)
    inv_sqrt = np.zeros_like(degree)
    nonzero = degree > 0
    inv_sqrt[nonzero] = degree[nonzero] ** -0.5
    values = inv_sqrt[rows] * inv_sqrt[cols]
    order = np.lexsort((cols, rows))
    with quiet_sparse_notices():
        coo = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([rows[order], cols[order]])),
            torch.from_numpy(values[order]).to(dtype),
            (n_nodes, n_nodes),
            check_invariants=False,  # built from validated, sorted indices just above
        ).coalesce()
        return coo.to_sparse_csr()


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
