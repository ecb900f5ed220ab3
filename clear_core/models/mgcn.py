"""MGCN (Yu et al., MM'23, "Multi-View Graph Convolutional Network for Multimedia
Recommendation") as MMRec implements it (enoche/MMRec src/models/mgcn.py, from the authors'
demonph10/MGCN), and MGCN + CLEAR by configuration.

* Modality m: ``f_m = φ_m(x_m)`` (linear map of the trainable raw features) through
  :meth:`MultimodalRecommender.encode`, so ``projection: fixed`` applies to it.
* Behaviour-guided purifier: ``ē_m = e_i ⊙ σ(W_m f_m + b_m)`` (item ID embedding gated by the
  modality).
* Item-item view, per modality: ``n_layers`` propagations of ``ē_m`` over a kNN graph of the raw
  features, weighted by the cosine similarities and normalised ``D^{-1/2} S D^{-1/2}`` (built
  once, frozen; :func:`~clear_core.item_graph.similarity_knn_graph`); users get
  ``R ē_m`` with ``R`` the user-item block of the symmetric-normalised interaction graph.
* User-item view: LightGCN over ``n_ui_layers`` (mean of layers 0..L) of the ID embeddings.
* Behaviour-aware fuser: attention ``α = softmax_m(q(e_m))`` with ``q = W2 tanh(W1 ·)``, common
  ``c = Σ_m α_m e_m``, specific ``s_m = σ(P_m h) ⊙ (e_m - c)`` gated by the user-item view ``h``,
  side ``= (Σ_m s_m + c) / (M + 1)``; final embedding ``= h + side``.
* Loss: BPR + ``reg_weight`` · ½(‖u‖² + ‖p‖² + ‖n‖²)/B + ``cl_weight`` · [InfoNCE(side_items,
  content_items) + InfoNCE(side_users, content_users)] over the batch's positive items and
  users, temperature ``temperature`` (0.2 in the reference).

Departures: with more than two modalities the fuser sums over all of them (the reference is
written for image + text; with two the formulas are the same). MMRec's MGCN config decays the
learning rate by 0.96 every 50 epochs; the trainer here has no scheduler (a 4 % change after 50
epochs). The regulariser divides by the batch's size (the reference divides by the configured
batch size, which differs only on the last, shorter batch). The modality encoders start
Xavier-uniform with zero biases, where MMRec keeps nn.Linear's own draw (one initialisation for
every model: :mod:`clear_core.models.multimodal`, which gives the measured effect).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import (
    edge_weights,
    normalized_adjacency,
    symmetric_propagate,
    user_item_matrix,
)
from clear_core.item_graph import propagate_with_transpose, similarity_knn_graph, to_csr_pair
from clear_core.models import register
from clear_core.models.losses import bpr_loss
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender
from clear_core.models.self_supervised import info_nce
from clear_core.param_rules import knn_problem


def _gate(d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


@register
class MGCN(MultimodalRecommender):
    name = "mgcn"
    params = {
        **MULTIMODAL_PARAMS,
        "n_ui_layers": int,
        "n_layers": int,
        "knn_k": int,
        "knn_chunk_size": int,
        "reg_weight": float,
        "cl_weight": float,
        "temperature": float,
    }

    def check_params(self, dataset: Dataset, params) -> list[str]:
        # n_layers, knn_k, knn_chunk_size, reg_weight: clear_core.param_rules, checked by the base.
        problems = []
        if params["n_ui_layers"] < 0:
            problems.append(f"n_ui_layers: expected >= 0, got {params['n_ui_layers']}")
        if (p := knn_problem(params["knn_k"], dataset.n_items, dataset.name)):
            problems.append(p)
        if params["cl_weight"] < 0:
            problems.append(f"cl_weight: expected >= 0, got {params['cl_weight']}")
        return problems

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        self.n_ui_layers = params["n_ui_layers"]
        self.n_layers = params["n_layers"]
        self.reg_weight = params["reg_weight"]
        self.cl_weight = params["cl_weight"]
        self.temperature = params["temperature"]
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.feature_gates = nn.ModuleDict({m: _gate(d) for m in self.modality_names})
        self.preference_gates = nn.ModuleDict({m: _gate(d) for m in self.modality_names})
        self.query_common = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))

        pairs = np.unique(np.asarray(dataset.train, dtype=np.int64).reshape(-1, 2), axis=0)
        users, items = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
        self.register_buffer(
            "adjacency", normalized_adjacency(pairs, self.n_users, self.n_items), persistent=False
        )
        r, r_t = user_item_matrix(users, items, self.n_users, self.n_items,
                                  edge_weights(users, items, self.n_users, self.n_items))
        self.register_buffer("user_item", r, persistent=False)
        self.register_buffer("user_item_t", r_t, persistent=False)
        for m in self.modality_names:
            graph = similarity_knn_graph(self.input_features(dataset, m), params["knn_k"], params["knn_chunk_size"])
            g, g_t = to_csr_pair(graph)
            self.register_buffer(f"item_graph_{m}", g, persistent=False)
            self.register_buffer(f"item_graph_t_{m}", g_t, persistent=False)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(content, side)``: the user-item view and the fused modality view of every node
        (users first, then items)."""
        ego = torch.cat([self.user_embedding, self.item_embedding])
        total, h = ego, ego
        for _ in range(self.n_ui_layers):
            h = symmetric_propagate(self.adjacency, h)
            total = total + h
        content = total / (self.n_ui_layers + 1)

        views = []
        for m, f in self.encode().items():
            items = self.item_embedding * self.feature_gates[m](f)
            graph, graph_t = getattr(self, f"item_graph_{m}"), getattr(self, f"item_graph_t_{m}")
            for _ in range(self.n_layers):
                items = propagate_with_transpose(graph, graph_t, items)
            users = propagate_with_transpose(self.user_item, self.user_item_t, items)
            views.append(torch.cat([users, items]))
        weights = torch.softmax(torch.cat([self.query_common(v) for v in views], dim=-1), dim=-1)
        common = sum(weights[:, j : j + 1] * v for j, v in enumerate(views))
        specific = sum(
            self.preference_gates[m](content) * (v - common) for m, v in zip(self.modality_names, views, strict=True)
        )
        side = (specific + common) / (len(views) + 1)
        return content, side

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        content, side = self.forward_views()
        final = content + side
        pos_nodes, neg_nodes = pos_items + self.n_users, neg_items + self.n_users
        u, p, n = (final.index_select(0, x) for x in (users, pos_nodes, neg_nodes))
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        if self.reg_weight:
            loss = loss + self.reg_weight * 0.5 * (u.square().sum() + p.square().sum() + n.square().sum()) / len(users)
        if self.cl_weight:
            cl = info_nce(side.index_select(0, pos_nodes), content.index_select(0, pos_nodes), self.temperature)
            cl = cl + info_nce(side.index_select(0, users), content.index_select(0, users), self.temperature)
            loss = loss + self.cl_weight * cl
        return loss

    def prepare_scoring(self) -> None:
        content, side = self.forward_views()
        final = content + side
        self._cache = (final[: self.n_users], final[self.n_users :])

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            self.prepare_scoring()
        user_all, item_all = self._cache
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None
