"""LayerGCN (Zhou et al., DASFAA 2023, "Layer-refined Graph Convolutional Networks for
Recommendation") as MMRec implements it (enoche/MMRec ``src/models/layergcn.py``).

* Graph: the symmetric-normalised user-item graph ``D^-1/2 A D^-1/2`` (no self-loops), the
  full one at evaluation.
* Layer refinement: each propagation step ``x_l = Â x_{l-1}`` is rescaled row by row by its
  cosine similarity to the ego embedding, ``x_l ← cos(x_l, x_0) · x_l``, and the refined ``x_l``
  feeds the next step. The output is the SUM of layers 1..L; the ego layer is not part of it.
* Edge pruning each epoch: ``edge_dropout`` of the training edges are dropped and the kept
  ones renormalised. Epochs alternate between degree-sensitive sampling (weight
  ``1/sqrt(d_u d_i)``, odd epochs, the first one included) and uniform sampling (even epochs),
  as MMRec's ``pruning_random`` toggle does.
* Loss: BPR SUMMED over the batch (MMRec's LayerGCN sums, unlike its other models) +
  ``reg_weight`` · ½ Σ squared ego embeddings of the batch's users, positives and negatives
  (MMRec's ``L2Loss``, also not divided by the batch size).

Departures: MMRec keeps the sampling toggle as state that flips every epoch; here the epoch's
parity decides, which is the same sequence and survives a checkpoint resume. Sampling
without replacement uses Gumbel top-k (:func:`clear_core.graph.degree_sensitive_keep`)
instead of ``torch.multinomial`` / ``random.sample``: the same distribution, other draws.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.errors import ConfigError
from clear_core.graph import (
    dropped_adjacency,
    edge_weights,
    normalized_adjacency,
    symmetric_propagate,
)
from clear_core.models import register
from clear_core.models.base import Recommender
from clear_core.models.mf import xavier_table
from clear_core.param_rules import range_problems


@register
class LayerGCN(Recommender):
    name: ClassVar[str] = "layergcn"
    params: ClassVar[dict[str, Any]] = {
        "embedding_size": int,
        "n_layers": int,
        "reg_weight": float,
        "edge_dropout": float,
    }

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        problems = range_problems(params)
        if params["n_layers"] == 0:
            problems.append("n_layers: expected >= 1 for LayerGCN (its output sums layers 1..L), got 0")
        if problems:
            raise ConfigError(problems, source=f"model {self.name!r}")
        d = params["embedding_size"]
        self.n_layers = params["n_layers"]
        self.reg_weight = params["reg_weight"]
        self.edge_dropout = params["edge_dropout"]
        self.embedding = nn.Parameter(torch.cat([xavier_table(self.n_users, d), xavier_table(self.n_items, d)]))
        train = torch.as_tensor(dataset.train, dtype=torch.long)
        users, items = train[:, 0].contiguous(), train[:, 1].contiguous()
        self.register_buffer("train_users", users, persistent=False)
        self.register_buffer("train_items", items, persistent=False)
        self.register_buffer("edge_weight", edge_weights(users, items, self.n_users, self.n_items), persistent=False)
        self.register_buffer(
            "adjacency", normalized_adjacency(dataset.train, self.n_users, self.n_items), persistent=False
        )
        self._epoch_adjacency: torch.Tensor | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_epoch_start(self, epoch: int) -> None:
        if self.edge_dropout <= 0.0:
            self._epoch_adjacency = None
            return
        # Odd epochs degree-sensitive, even epochs uniform (MMRec starts degree-sensitive).
        weights = self.edge_weight if epoch % 2 == 1 else torch.ones_like(self.edge_weight)
        self._epoch_adjacency = dropped_adjacency(
            self.train_users, self.train_items, weights, self.n_users, self.n_items, self.edge_dropout
        )

    def training_adjacency(self) -> torch.Tensor:
        adj = self._epoch_adjacency
        if adj is None or not self.training or adj.device != self.adjacency.device:
            return self.adjacency
        return adj

    def propagate(self, adjacency: torch.Tensor) -> torch.Tensor:
        """Sum of the refined layers 1..L for every node (users first, then items)."""
        ego = self.embedding
        # cos(x, e) = <x, e> / (max(|x|, eps) max(|e|, eps)), F.cosine_similarity's formula with
        # the ego norms computed once for all layers (fewer element-wise passes per layer).
        ego_norm = torch.linalg.vector_norm(ego, dim=-1).clamp_min(1e-8)
        x, total = ego, None
        for _ in range(self.n_layers):
            x = symmetric_propagate(adjacency, x)
            cosine = (x * ego).sum(-1) / (torch.linalg.vector_norm(x, dim=-1).clamp_min(1e-8) * ego_norm)
            x = cosine.unsqueeze(-1) * x
            total = x if total is None else total + x
        return total

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        nodes = torch.cat([users, pos_items + self.n_users, neg_items + self.n_users])
        u, p, n = self.propagate(self.training_adjacency()).index_select(0, nodes).split(users.shape[0])
        ranking = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).sum()
        ego = self.embedding.index_select(0, nodes)
        return ranking + self.reg_weight * 0.5 * ego.square().sum()

    def prepare_scoring(self) -> None:
        final = self.propagate(self.adjacency)
        self._cache = (final[: self.n_users], final[self.n_users :])

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            with torch.no_grad():
                self.prepare_scoring()
        user_final, item_final = self._cache
        return user_final[users] @ item_final.T

    def finish_scoring(self) -> None:
        self._cache = None
