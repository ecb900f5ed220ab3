"""LightGCN (He et al., SIGIR 2020): ID embeddings propagated over the symmetric-normalised
user-item graph without transforms or non-linearities; the final embedding is the mean of
the ego embedding and of every layer's output."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import normalized_adjacency, symmetric_propagate
from clear_core.models import register
from clear_core.models.base import Recommender
from clear_core.models.losses import bpr_loss, embedding_penalty
from clear_core.models.mf import xavier_table
from clear_core.param_rules import check_ranges


@register
class LightGCN(Recommender):
    """``n_layers`` propagation steps; ``reg_weight`` scales the penalty on the batch's EGO
    (layer-0) embeddings, as in MMRec."""

    name: ClassVar[str] = "lightgcn"
    params: ClassVar[dict[str, Any]] = {
        "embedding_size": int,
        "n_layers": int,
        "reg_weight": float,
    }

    def __init__(
        self, dataset: Dataset, *, embedding_size: int, n_layers: int, reg_weight: float
    ) -> None:
        super().__init__(
            dataset, embedding_size=embedding_size, n_layers=n_layers, reg_weight=reg_weight
        )
        check_ranges(
            {"embedding_size": embedding_size, "n_layers": n_layers, "reg_weight": reg_weight},
            source="model 'lightgcn'",
        )
        self.n_layers = n_layers
        self.reg_weight = reg_weight
        # One table (users first, then items) so propagation needs no concatenation per step;
        # each part gets its own Xavier scale as with two tables.
        self.embedding = nn.Parameter(
            torch.cat([xavier_table(self.n_users, embedding_size),
                       xavier_table(self.n_items, embedding_size)])
        )
        # Derived from the data, so not part of the checkpoint (persistent=False).
        self.register_buffer(
            "adjacency",
            normalized_adjacency(dataset.train, self.n_users, self.n_items),
            persistent=False,
        )
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _layer_sum(self) -> torch.Tensor:
        x = self.embedding
        total = x
        for _ in range(self.n_layers):
            x = symmetric_propagate(self.adjacency, x)
            total = total + x
        return total

    def propagate(self) -> torch.Tensor:
        """Final embeddings of every node: mean over layers 0..n_layers."""
        return self._layer_sum() / (self.n_layers + 1)

    def loss(self, users, pos_items, neg_items):
        # One gather for users, positives and negatives: its backward builds one dense
        # gradient instead of three; the mean over layers is taken on the gathered rows only.
        nodes = torch.cat([users, pos_items + self.n_users, neg_items + self.n_users])
        final = self._layer_sum().index_select(0, nodes) / (self.n_layers + 1)
        u, p, n = final.split(users.shape[0])
        ranking = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        ego_u, ego_p, ego_n = self.embedding.index_select(0, nodes).split(users.shape[0])
        return ranking + self.reg_weight * embedding_penalty(ego_u, ego_p, ego_n)

    def prepare_scoring(self) -> None:
        final = self.propagate()
        self._cache = (final[: self.n_users], final[self.n_users :])

    def score(self, users):
        if self._cache is None:
            self.prepare_scoring()
        user_final, item_final = self._cache
        return user_final[users] @ item_final.T

    def finish_scoring(self) -> None:
        self._cache = None
