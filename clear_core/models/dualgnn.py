"""DualGNN (Wang et al., IEEE TMM 2021, "DualGNN: Dual Graph Neural Network for Multimedia
Recommendation") as MMRec implements it (enoche/MMRec ``src/models/dualgnn.py`` and
``preprocessing/dualgnn-gen-u-u-matrix.py``), ``construction: weighted_sum``.

* Per modality m: item features go through an MLP ``Linear(d_m, 4d) → LeakyReLU → Linear(4d, d)``
  (the first linear map is :meth:`encode`, so CLEAR's projection plugs in there); users carry a
  modality preference ``P_m`` (n_users x d). ``x = normalize([P_m ; MLP(x_m)])`` row-wise, and the
  output is ``x + Â x + Â² x`` over the symmetric-normalised user-item graph ``D^-1/2 A D^-1/2``
  (the sum of layers 0..``n_layers``; MMRec runs its single GCN layer twice). Features are frozen.
* Items: the sum of their modality outputs. Users: ``Σ_m w_{u,m} · out_m[u]`` with free per-user
  weights ``w_u`` (initialised to a softmax of Xavier-normal draws, then trained unconstrained).
* User co-occurrence graph, computed once: two users are linked by the number of training items
  they share. Each user keeps its ``user_graph_k`` (MMRec: 40) most co-occurring users with
  softmax(counts) weights. A user with fewer, but some, neighbours is padded to k EVERY EPOCH by
  drawing, one at a time, a uniform element of its growing list (MMRec's ``topk_sample``); the
  softmax then runs over the padded list. A user with none aggregates nothing.
  ``u ← u + Σ_k s_{u,k} u_k``.
* Loss: ``-mean(log2 σ(pos - neg))`` (base-2 log, as MMRec) + ``reg_weight`` · (Σ_m mean(P_m[batch
  users]²) + mean(w²)).

Departures, and why:
* The modality encoders start Xavier-uniform with zero biases, where MMRec keeps nn.Linear's own
  draw: one initialisation for every model (:mod:`clear_core.models.multimodal`, which gives
  the measured effect).
* MMRec also builds "dropped-modality" edge lists and an item weight table ``weight_i``; its
  forward never reads either (only ``reg_weight · mean(weight_i²)``, whose gradient touches
  nothing else), so they are left out.
* Ties between equal co-occurrence counts go to the lower user id (MMRec: whatever
  ``torch.topk`` returns).
* MMRec scores with the embeddings of the last training batch (before its optimiser step); here
  scoring recomputes them with the current weights and the epoch's user graph.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import normalized_adjacency, quiet_sparse_notices, symmetric_propagate
from clear_core.item_graph import propagate_with_transpose, to_csr_pair
from clear_core.models import register
from clear_core.models.losses import bpr_loss
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender


def co_occurrence_neighbours(
    train: np.ndarray, n_users: int, n_items: int, k: int, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every user's ``k`` users sharing the most training items with it: ``(neighbours, counts,
    found)``, (n_users, k) each and (n_users,); ties go to the lower user id, self excluded.
    Rows of ``neighbours`` / ``counts`` beyond ``found`` are padding (count 0)."""
    pairs = np.unique(np.asarray(train, dtype=np.int64).reshape(-1, 2), axis=0)
    rows, cols = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    with quiet_sparse_notices():
        interactions = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), torch.ones(len(rows)), (n_users, n_items)
        ).coalesce().to_sparse_csr()
    k = min(k, max(n_users - 1, 1))
    neighbours = torch.zeros(n_users, k, dtype=torch.long)
    counts = torch.zeros(n_users, k)
    found = torch.zeros(n_users, dtype=torch.long)
    # Tie-break key: count first, then the lower user id (exact in float64).
    id_key = (n_users - 1 - torch.arange(n_users, dtype=torch.float64)) / n_users
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        block = torch.zeros(stop - start, n_items)
        in_block = (rows >= start) & (rows < stop)
        block[rows[in_block] - start, cols[in_block]] = 1.0
        shared = torch.sparse.mm(interactions, block.T).T.double()  # (block, n_users)
        local = torch.arange(stop - start)
        shared[local, local + start] = 0.0
        top = torch.topk(shared + id_key, k, dim=1).indices
        neighbours[start:stop] = top
        counts[start:stop] = shared.gather(1, top).float()
        found[start:stop] = (shared > 0).sum(1).clamp_max(k)
    counts[torch.arange(k).unsqueeze(0) >= found.unsqueeze(1)] = 0.0
    return neighbours, counts, found


def padded_user_graph(
    neighbours: torch.Tensor, counts: torch.Tensor, found: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's ``(neighbours, weights)``: users with ``0 < found < k`` are padded by drawing a
    uniform element of their growing list, one at a time; weights are the softmax of the padded
    counts (zero rows for users with no neighbour)."""
    n_users, k = neighbours.shape
    nbrs, cnts = neighbours.clone(), counts.clone()
    short = ((found > 0) & (found < k)).nonzero(as_tuple=True)[0]
    if len(short):
        length = found[short].clone()
        for _ in range(k - int(found[short].min())):
            active = length < k
            if not active.any():
                break
            users, current = short[active], length[active]
            pick = (torch.rand(len(users), generator=generator) * current).long().clamp_max(current - 1)
            nbrs[users, current] = nbrs[users, pick]
            cnts[users, current] = cnts[users, pick]
            length[active] += 1
    weights = torch.softmax(cnts, dim=1)
    weights[found == 0] = 0.0
    return nbrs, weights


@register
class DualGNN(MultimodalRecommender):
    name = "dualgnn"
    params = {**MULTIMODAL_PARAMS, "n_layers": int, "user_graph_k": int, "reg_weight": float}

    def encoded_size(self, params) -> int:
        return 4 * params["embedding_size"]  # MMRec's MLP: d_m -> 4 x dim_latent

    def check_params(self, dataset: Dataset, params) -> list[str]:
        problems = []
        if params["encoder_layers"] != 1:
            problems.append("encoder_layers: DualGNN's encoder is the first layer of its own MLP; expected 1")
        return problems  # value ranges (n_layers, user_graph_k, reg_weight): param_rules

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        self.n_layers = params["n_layers"]
        self.reg_weight = params["reg_weight"]
        self.second_layers = nn.ModuleDict({m: nn.Linear(4 * d, d) for m in self.modality_names})
        self.preferences = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users, d))) for m in self.modality_names
        })
        n_mod = len(self.modality_names)
        self.user_modality_weights = nn.Parameter(
            torch.softmax(nn.init.xavier_normal_(torch.empty(self.n_users, n_mod, 1)), dim=1).squeeze(-1)
        )
        self.register_buffer(
            "adjacency", normalized_adjacency(dataset.train, self.n_users, self.n_items), persistent=False
        )
        neighbours, counts, found = co_occurrence_neighbours(
            dataset.train, self.n_users, self.n_items, params["user_graph_k"]
        )
        self.register_buffer("user_neighbours", neighbours, persistent=False)
        self.register_buffer("user_counts", counts, persistent=False)
        self.register_buffer("user_found", found, persistent=False)
        self._user_graph: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- the user co-occurrence graph --------------------------------------------------------
    def sample_user_graph(self) -> None:
        """This epoch's padded user graph as a sparse (n_users x n_users) matrix and transpose."""
        nbrs, weights = padded_user_graph(self.user_neighbours.cpu(), self.user_counts.cpu(), self.user_found.cpu())
        k = nbrs.shape[1]
        rows = torch.arange(self.n_users).repeat_interleave(k)
        keep = weights.reshape(-1) > 0
        with quiet_sparse_notices():
            graph = torch.sparse_coo_tensor(
                torch.stack([rows[keep], nbrs.reshape(-1)[keep]]), weights.reshape(-1)[keep],
                (self.n_users, self.n_users),
            ).coalesce()  # a neighbour drawn twice: its weights add up, as the gather-sum does
        device = self.adjacency.device
        self._user_graph = tuple(g.to(device) for g in to_csr_pair(graph))

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.sample_user_graph()

    # --- forward ------------------------------------------------------------------------------
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.encode()
        x = torch.cat([
            F.normalize(torch.cat([self.preferences[m], self.second_layers[m](F.leaky_relu(feats[m]))]), dim=1)
            for m in self.modality_names
        ], dim=1)
        total = x
        for _ in range(self.n_layers):
            x = symmetric_propagate(self.adjacency, x)
            total = total + x
        users, items = total.split([self.n_users, self.n_items])
        n_mod, d = len(self.modality_names), self.embedding_size
        users = (users.view(self.n_users, n_mod, d) * self.user_modality_weights.unsqueeze(-1)).sum(1)
        items = items.view(self.n_items, n_mod, d).sum(1)
        if self._user_graph is None:
            self.sample_user_graph()
        elif self._user_graph[0].device != users.device:
            self._user_graph = tuple(g.to(users.device) for g in self._user_graph)
        graph, graph_t = self._user_graph
        return users + propagate_with_transpose(graph, graph_t, users), items

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate()
        u = user_all.index_select(0, users)
        p, n = item_all.index_select(0, torch.cat([pos_items, neg_items])).split(len(users))
        ranking = bpr_loss((u * p).sum(-1), (u * n).sum(-1)) / math.log(2.0)
        reg = sum(self.preferences[m].index_select(0, users).square().mean() for m in self.modality_names)
        reg = reg + self.user_modality_weights.square().mean()
        return ranking + self.reg_weight * reg

    # --- scoring ------------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        self._cache = self.propagate()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            with torch.no_grad():
                self.prepare_scoring()
        user_all, item_all = self._cache
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None
