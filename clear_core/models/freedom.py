"""FREEDOM (Zhou & Shen, MM'23) as MMRec implements it, and FREEDOM + CLEAR.

* Item-item graph: cosine kNN (``knn_k``) on each raw modality, unit weights, symmetric
  normalisation, mixed by ``modality_weights`` (0.1 image + 0.9 text; audio plays text's part
  on TikTok), built once and frozen.
* Each epoch, degree-sensitive pruning drops ``edge_dropout`` of the user-item edges (sampled
  with weight 1/sqrt(d_u d_i)); the full graph is used at evaluation.
* Item = ID embedding propagated through ``n_layers`` LightGCN layers (mean of layers) +
  item-graph propagation of the ID embedding (``item_graph_layers``); users = LightGCN.
* Loss = BPR + reg_weight · Σ_m BPR(user, φ_m(x_pos), φ_m(x_neg)) over modalities, where
  φ_m is the linear projection of the (trainable, as in FREEDOM) raw features. With
  ``projection: fixed`` the projected pair of φ_m outputs is de-redundanced first ("FREEDOM +
  CLEAR", paper Table 3).

Departure: the modality encoders (``image_trs`` / ``text_trs``) start Xavier-uniform with zero
biases, where MMRec keeps nn.Linear's own draw (one initialisation for every model:
:mod:`clear_core.models.multimodal`). Trained through the same trainer beside MMRec's FREEDOM
(``benchmarks/reference_quality.py``) the two land within seed noise of each other.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.models import register
from clear_core.models.losses import bpr_loss
from clear_core.models.multimodal import (
    GRAPH_PARAMS,
    MULTIMODAL_PARAMS,
    GraphMixin,
    MultimodalRecommender,
    graph_problems,
    mix_weights,
)

log = logging.getLogger(__name__)


@register
class Freedom(GraphMixin, MultimodalRecommender):
    name = "freedom"
    params = {**MULTIMODAL_PARAMS, **GRAPH_PARAMS}

    def check_params(self, dataset: Dataset, params) -> list[str]:
        problems = graph_problems(params, dataset)
        self._weights, more = mix_weights(list(dataset.features), params["modality_weights"])
        return problems + more

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        if self.encoded_centering:
            # Accepted so that one sweep can set it for every model, but the features enter
            # only through BPR differences of two items, where the subtracted mean cancels.
            log.warning(
                "freedom: encoded_centering has no effect on this model (its features enter "
                "the loss only as differences between two items); it only costs a full encoding per batch"
            )
        d = self.embedding_size
        self.reg_weight = params["reg_weight"]
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.setup_graphs(dataset, params, self._weights)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def propagate(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_items = self.item_embedding
        for _ in range(self.item_graph_layers):
            h_items = self.propagate_items(h_items)
        ego = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        out = self.layer_mean(adjacency, ego)
        return out[: self.n_users], out[self.n_users :] + h_items

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate(self.training_adjacency())
        u = user_all.index_select(0, users)
        loss = bpr_loss(
            (u * item_all.index_select(0, pos_items)).sum(-1),
            (u * item_all.index_select(0, neg_items)).sum(-1),
        )
        if self.reg_weight == 0.0:
            return loss
        n_pos = len(pos_items)
        feats = self.encode(torch.cat([pos_items, neg_items]))
        aux = sum(
            bpr_loss((u * f[:n_pos]).sum(-1), (u * f[n_pos:]).sum(-1)) for f in feats.values()
        )
        return loss + self.reg_weight * aux

    def prepare_scoring(self) -> None:
        self._cache = self.propagate(self.adjacency)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self._cache if self._cache is not None else self.propagate(self.adjacency)
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None
