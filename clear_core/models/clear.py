"""CLEAR (paper Sections 3.1-3.5, Algorithm 1): null-space projection of cross-modal redundancy
feeding per-modality graph convolution.

Per batch (Algorithm 1 lines 10-16):

1. every modality's raw features go through its encoder (φ_m); the ``projected_pair`` is
   projected with the cached ``P_a``/``P_b`` (refreshed at epochs 1, 1+τ, ...);
2. per-modality LightGCN propagation over the user-item graph with degree-sensitive edge
   dropout: users carry one preference embedding per modality (``E_u^m``), items start from
   their projected features; the output is the mean of layers 0..L. All channels propagate
   in ONE sparse product on the concatenated (n_users + n_items) x (C·d) matrix, which costs
   much less than C separate products;
3. users fuse their channels with learnable per-user weights (softmax of ``w_u``); items sum
   their channels, ``S_i``, plus item-item graph aggregation ``A_mm S`` over the frozen kNN
   graph of raw features (chunked);
4. loss = BPR + γ (‖H_m[u]‖² summed over modalities + ‖w_u‖²), averaged over the batch.

Options beyond the paper (defaults follow the paper): ``id_channel`` adds an item-ID channel
(learnable item embedding with its own user embedding, propagated and fused like a modality);
``encoder_layers`` picks a linear (1) or two-layer (2) encoder.

Where the paper is silent, choices are documented in ``configs/models/clear.yaml``: FREEDOM's
kNN item graph (k = 10, 0.1 image + 0.9 text) and edge dropout (0.8), and ``feature_scaling:
unit`` (each modality divided by its mean row norm, one scalar, so large-norm features do not
saturate BPR in the first epoch; cosine kNN and covariance directions are unchanged).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.models import register
from clear_core.models.fused_bpr import fused_bpr_loss
from clear_core.models.multimodal import (
    GRAPH_PARAMS,
    MULTIMODAL_PARAMS,
    GraphMixin,
    MultimodalRecommender,
    graph_problems,
    mix_weights,
)


@register
class Clear(GraphMixin, MultimodalRecommender):
    name = "clear"
    params = {**MULTIMODAL_PARAMS, **GRAPH_PARAMS, "id_channel": bool}

    def check_params(self, dataset: Dataset, params) -> list[str]:
        problems = graph_problems(params, dataset)
        self._weights, more = mix_weights(list(dataset.features), params["modality_weights"])
        return problems + more

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        self.reg_weight = params["reg_weight"]
        self.channels = self.modality_names + (["id"] if params["id_channel"] else [])
        n_channels = len(self.channels)
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, n_channels * d)))
        self.item_id_embedding = (
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
            if params["id_channel"]
            else None
        )
        # Zero logits = equal weights at the start; γ‖w_u‖² pulls them back towards equal.
        self.fusion_logits = nn.Parameter(torch.zeros(self.n_users, n_channels))
        self.setup_graphs(dataset, params, self._weights)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- forward ------------------------------------------------------------------------------
    def propagate(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel graph convolution: users (n_users, C, d) and items (n_items, C, d)."""
        feats = self.encode()
        item_in = [feats[m] for m in self.modality_names]
        if self.item_id_embedding is not None:
            item_in.append(self.item_id_embedding)
        ego = torch.cat([self.user_embedding, torch.cat(item_in, dim=1)], dim=0)
        out = self.layer_mean(adjacency, ego)
        n_channels = len(self.channels)
        # split, not two slices: its backward is one concatenation, not two zero-filled
        # full-size buffers and their sum.
        users, items = out.split([self.n_users, self.n_items])
        return (users.view(self.n_users, n_channels, self.embedding_size),
                items.view(self.n_items, n_channels, self.embedding_size))

    def item_representation(self, items_h: torch.Tensor) -> torch.Tensor:
        summed = items_h.sum(dim=1)
        h, total = summed, summed
        for _ in range(self.item_graph_layers):
            h = self.propagate_items(h)
            total = total + h
        return total

    def fuse(self, users_h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(logits, dim=1).unsqueeze(-1) * users_h).sum(dim=1)

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        users_h, items_h = self.propagate(self.training_adjacency())
        item_repr = self.item_representation(items_h)
        batch_h = users_h.index_select(0, users)
        logits = self.fusion_logits.index_select(0, users)
        # One gather for positives and negatives (one backward scatter instead of two), and the
        # rest in one autograd node: a GPU step of this size is bound by the number of kernels,
        # not by their work. fused_bpr.reference_loss spells out the same loss.
        pos_neg = item_repr.index_select(0, torch.cat([pos_items, neg_items]))
        return fused_bpr_loss(batch_h, logits, pos_neg.view(2, len(users), -1), self.reg_weight)

    # --- scoring ------------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        users_h, items_h = self.propagate(self.adjacency)
        all_users = torch.arange(self.n_users, device=users_h.device)
        self._cache = (self.fuse(users_h, self.fusion_logits[all_users]), self.item_representation(items_h))

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            with torch.no_grad():
                self.prepare_scoring()
        user_repr, item_repr = self._cache
        return user_repr[users] @ item_repr.T

    def finish_scoring(self) -> None:
        self._cache = None

    def transformed_features(self) -> dict[str, torch.Tensor]:
        """Encoder outputs before and after projection (for diagnostics)."""
        with torch.no_grad():
            before = {m: self.encoders[m](self.raw(m)) for m in self.modality_names}
            return {"before": before, "after": self.encode()}
