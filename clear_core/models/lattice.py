"""LATTICE (Zhang et al., ACM MM 2021, "Mining Latent Structures for Multimedia Recommendation")
as MMRec implements it (enoche/MMRec ``src/models/lattice.py``, after CRIPAC-DIG/LATTICE),
with its default ``cf_model: lightgcn``.

* Original item graphs, built once from each modality's raw features: cosine kNN (``knn_k``,
  self included) keeping the similarities as weights, then ``D^-1/2 S D^-1/2`` with row-sum
  degrees (MMRec's ``build_knn_neighbourhood`` + ``compute_normalized_laplacian``).
* Learned item graph: the same construction on the encoded features ``φ_m(x_m)`` (the
  ``image_trs`` / ``text_trs`` linear maps, i.e. :meth:`encode`, so CLEAR's projection plugs in),
  mixed ``Σ_m softmax(w)_m S_m`` with learnable modality weights ``w`` and normalised after the
  mix; the item graph is ``(1 - λ) · learned + λ · Σ_m softmax(w)_m · original_m`` with
  λ = ``original_graph_weight``.
* When the graph is built: at the first batch of every epoch, WITH gradients (that batch is the
  only one through which the encoders, the trainable raw features and ``w`` learn); the other
  batches of the epoch reuse it detached. Scoring rebuilds it from the current weights.
* Items: LightGCN over the user-item graph normalised ``D^-1 (A + I)`` (self-loops, row
  normalisation: MMRec's ``get_adj_mat``), mean of layers 0..``n_layers``, plus the L2-normalised
  item-graph propagation ``normalize(S^L h)`` of the item ID embedding (``item_graph_layers``).
* Loss: BPR + ``reg_weight`` · ½ (‖u‖² + ‖p‖² + ‖n‖²) / batch on the final embeddings.

Departures, and why:
* The modality encoders start Xavier-uniform with zero biases, where MMRec keeps nn.Linear's own
  draw: one initialisation for every model (:mod:`clear_core.models.multimodal`, which gives
  the measured effect).
* The kNN graphs are sparse (k entries a row) and built in chunks, where MMRec keeps dense
  n_items² matrices: the same entries and gradients, O(n_items · k) memory.
* MMRec divides the L2 term by the configured batch size (2048); here by the batch's length,
  which differs only for the last, shorter batch of an epoch.
* MMRec's LATTICE decays its learning rate by 0.96^(epoch/50) (``learning_rate_scheduler``); the
  trainer uses one constant rate for every model (the model contract has no optimiser hook), a
  difference of under 4 % in the rate for the first 50 epochs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import quiet_sparse_notices
from clear_core.item_graph import DEFAULT_CHUNK, propagate_with_transpose, to_csr_pair
from clear_core.models import register
from clear_core.models.losses import bpr_loss
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender
from clear_core.param_rules import knn_problem


def knn_edges(features: torch.Tensor, k: int, chunk_size: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of every item's ``k`` most cosine-similar items (self included)."""
    n = features.shape[0]
    k = min(k, n)
    with torch.no_grad():
        unit = F.normalize(features.detach().float(), dim=1)
        cols = torch.empty(n, k, dtype=torch.long, device=features.device)
        for start in range(0, n, chunk_size):
            cols[start : start + chunk_size] = torch.topk(unit[start : start + chunk_size] @ unit.T, k, dim=1).indices
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    return rows, cols.reshape(-1)


def cosine_values(features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, chunk_size: int = 1 << 16) -> torch.Tensor:
    """Cosine similarity of the item pairs ``(rows, cols)``, differentiable in ``features``."""
    unit = F.normalize(features, dim=1)
    if not features.requires_grad:
        # Raw features can be wide (4,096-d images): gather them a chunk of pairs at a time.
        return torch.cat([
            (unit.index_select(0, rows[s : s + chunk_size]) * unit.index_select(0, cols[s : s + chunk_size])).sum(-1)
            for s in range(0, len(rows), chunk_size)
        ])
    return (unit.index_select(0, rows) * unit.index_select(0, cols)).sum(-1)


def normalise_weighted(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """``D^-1/2 S D^-1/2`` entries with row-sum degrees (entries repeated in ``rows, cols`` add
    up); a row whose degree is not positive gets 0, where MMRec gets 0 for 0 and NaN below."""
    degree = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    inv = torch.where(degree > 0, degree.clamp_min(1e-30).rsqrt(), torch.zeros_like(degree))
    return values * inv.index_select(0, rows) * inv.index_select(0, cols)


def sparse_propagate(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``S @ x`` for the entries ``(rows, cols, values)``, differentiable in ``values`` and ``x``
    (gathers with ``index_select`` so that the backward is deterministic, see models/base.py)."""
    messages = values.unsqueeze(1) * x.index_select(0, cols)
    return torch.zeros_like(x).index_add(0, rows, messages)


def row_normalised_with_self_loops(train: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """``D^-1 (A + I)`` of the user-item graph (users first), as a COO tensor."""
    pairs = np.unique(np.asarray(train, dtype=np.int64).reshape(-1, 2), axis=0)
    n = n_users + n_items
    loops = np.arange(n)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1] + n_users, loops])
    cols = np.concatenate([pairs[:, 1] + n_users, pairs[:, 0], loops])
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    values = 1.0 / degree[rows]
    with quiet_sparse_notices():
        return torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(values).float(), (n, n)
        ).coalesce()


@register
class Lattice(MultimodalRecommender):
    name = "lattice"
    params = {
        **MULTIMODAL_PARAMS,
        "n_layers": int,
        "item_graph_layers": int,
        "knn_k": int,
        "knn_chunk_size": int,
        "original_graph_weight": float,
        "reg_weight": float,
    }

    def check_params(self, dataset: Dataset, params) -> list[str]:
        # Value ranges (knn_k, layers, original_graph_weight, ...) live in param_rules; only
        # what needs the data is checked here.
        problem = knn_problem(params["knn_k"], dataset.n_items, dataset.name)
        return [problem] if problem else []

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        self.n_layers = params["n_layers"]
        self.item_graph_layers = params["item_graph_layers"]
        self.knn_k = params["knn_k"]
        self.knn_chunk_size = params["knn_chunk_size"]
        self.original_graph_weight = params["original_graph_weight"]
        self.reg_weight = params["reg_weight"]
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        # Equal logits: softmax gives every modality the same share at the start (MMRec: [0.5, 0.5]).
        n_mod = len(self.modality_names)
        self.modality_logits = nn.Parameter(torch.full((n_mod,), 1.0 / n_mod))
        adj = row_normalised_with_self_loops(dataset.train, self.n_users, self.n_items)
        adjacency, adjacency_t = to_csr_pair(adj)
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.register_buffer("adjacency_t", adjacency_t, persistent=False)
        for m in self.modality_names:
            raw = self.input_features(dataset, m)
            rows, cols = knn_edges(raw, self.knn_k, self.knn_chunk_size)
            values = normalise_weighted(rows, cols, cosine_values(raw, rows, cols), self.n_items)
            self.register_buffer(f"original_{m}", torch.stack([rows, cols]), persistent=False)
            self.register_buffer(f"original_values_{m}", values, persistent=False)
        self._train_graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- the item graph -----------------------------------------------------------------------
    def item_graph(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Entries ``(rows, cols, values)`` of ``(1-λ) learned + λ original`` from the current
        weights; ``values`` carries gradients to the encoders and the modality weights."""
        feats = self.encode()
        weight = torch.softmax(self.modality_logits, dim=0)
        rows, cols, values = [], [], []
        for i, m in enumerate(self.modality_names):
            r, c = knn_edges(feats[m], self.knn_k, self.knn_chunk_size)
            rows.append(r)
            cols.append(c)
            values.append(weight[i] * cosine_values(feats[m], r, c))
        r, c = torch.cat(rows), torch.cat(cols)
        learned = normalise_weighted(r, c, torch.cat(values), self.n_items)
        all_rows, all_cols, all_values = [r], [c], [(1.0 - self.original_graph_weight) * learned]
        for i, m in enumerate(self.modality_names):
            edges = getattr(self, f"original_{m}")
            all_rows.append(edges[0])
            all_cols.append(edges[1])
            all_values.append(self.original_graph_weight * weight[i] * getattr(self, f"original_values_{m}"))
        return torch.cat(all_rows), torch.cat(all_cols), torch.cat(all_values)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._train_graph = None  # rebuilt, with gradients, by the epoch's first batch

    # --- forward ------------------------------------------------------------------------------
    def propagate(self, graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols, values = graph
        h = self.item_embedding
        for _ in range(self.item_graph_layers):
            h = sparse_propagate(rows, cols, values, h)
        x = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        total = x
        for _ in range(self.n_layers):
            x = propagate_with_transpose(self.adjacency, self.adjacency_t, x)
            total = total + x
        users, items = (total / (self.n_layers + 1)).split([self.n_users, self.n_items])
        return users, items + F.normalize(h, dim=1)

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        if self._train_graph is None:
            graph = self.item_graph()
            self._train_graph = tuple(t.detach() for t in graph)
        else:
            graph = self._train_graph
        user_all, item_all = self.propagate(graph)
        u = user_all.index_select(0, users)
        p, n = item_all.index_select(0, torch.cat([pos_items, neg_items])).split(len(users))
        ranking = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = 0.5 * (u.square().sum() + p.square().sum() + n.square().sum()) / len(users)
        return ranking + self.reg_weight * reg

    # --- scoring ------------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        self._cache = self.propagate(self.item_graph())

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            with torch.no_grad():
                self.prepare_scoring()
        user_all, item_all = self._cache
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None
