"""MF-BPR (Rendle et al., 2009): a user's score for an item is the dot product of their ID
embeddings, trained with the BPR loss."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.models import register
from clear_core.models.base import Recommender
from clear_core.models.losses import bpr_loss, embedding_penalty
from clear_core.param_rules import check_ranges


def xavier_table(rows: int, dim: int) -> torch.Tensor:
    return nn.init.xavier_uniform_(torch.empty(rows, dim))


@register
class MatrixFactorization(Recommender):
    """MF-BPR. ``embedding_size`` = latent dimension; ``reg_weight`` scales
    :func:`embedding_penalty` on the batch's user, positive and negative embeddings."""

    name: ClassVar[str] = "mf"
    params: ClassVar[dict[str, Any]] = {"embedding_size": int, "reg_weight": float}

    def __init__(self, dataset: Dataset, *, embedding_size: int, reg_weight: float) -> None:
        super().__init__(dataset, embedding_size=embedding_size, reg_weight=reg_weight)
        check_ranges({"embedding_size": embedding_size, "reg_weight": reg_weight}, source="model 'mf'")
        self.reg_weight = reg_weight
        self.user_embedding = nn.Parameter(xavier_table(self.n_users, embedding_size))
        self.item_embedding = nn.Parameter(xavier_table(self.n_items, embedding_size))

    def loss(self, users, pos_items, neg_items):
        u = self.user_embedding.index_select(0, users)
        p, n = self.item_embedding.index_select(0, torch.cat([pos_items, neg_items])).split(users.shape[0])
        ranking = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        return ranking + self.reg_weight * embedding_penalty(u, p, n)

    def score(self, users):
        return self.user_embedding[users] @ self.item_embedding.T
