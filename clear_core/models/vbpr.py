"""VBPR (He & McAuley, AAAI'16) as MMRec implements it but with the paper's squared L2, and VBPR + CLEAR.

Item = [item ID embedding ; Σ_m φ_m(x_m)] (a linear map of the concatenated features equals the
sum of per-modality linear maps), user = one embedding of twice the size; score = dot product;
loss = BPR + reg_weight · mean squared norm of the batch's user, positive and negative vectors.
With ``projection: fixed`` the projected pair of φ_m outputs is de-redundanced before the sum
(paper Table 3, "VBPR + CLEAR").

Departures, and why:
* The regulariser is the paper's squared L2 (the mean over the batch of ‖u‖² + ‖p‖² + ‖n‖²).
  MMRec's VBPR uses its ``EmbLoss``, the sum of the three matrices' plain (unsquared) Frobenius
  norms divided by the batch size, a penalty whose pull on each row shrinks as the batch grows.
  On TikTok that choice decides the result: at reg_weight 0.01, trained through the same trainer
  on seeds 7, 42 and 123 (``benchmarks/reference_quality.py``), ours reaches test Recall@20
  0.0635 and MMRec's 0.0222, and ours with ``EmbLoss`` in place of the squared penalty falls to
  0.0200, MMRec's level (benchmarks/RESULTS.md).
* The item's visual part is a sum of per-modality linear maps, equal in function to MMRec's one
  map of the concatenated features; the encoders start Xavier-uniform with zero biases where
  MMRec draws the one map Xavier-normal (:mod:`clear_core.models.multimodal`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.models import register
from clear_core.models.losses import bpr_loss
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender


@register
class VBPR(MultimodalRecommender):
    name = "vbpr"
    params = {**MULTIMODAL_PARAMS, "reg_weight": float}

    # reg_weight's range is checked with every other parameter's (clear_core.param_rules).

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        self.reg_weight = params["reg_weight"]
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, 2 * d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self._items: torch.Tensor | None = None

    def item_representations(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``[ID embedding, encoded features summed over modalities]`` of the items ``item_ids``
        (all items when None): the vectors users are scored against."""
        feats = self.encode(item_ids)
        visual = torch.stack([feats[m] for m in self.modality_names]).sum(dim=0)
        ids = self.item_embedding if item_ids is None else self.item_embedding.index_select(0, item_ids)
        return torch.cat([ids, visual], dim=1)

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        both = self.item_representations(torch.cat([pos_items, neg_items]))
        pos_e, neg_e = both[: len(pos_items)], both[len(pos_items) :]
        user_e = self.user_embedding.index_select(0, users)
        loss = bpr_loss((user_e * pos_e).sum(-1), (user_e * neg_e).sum(-1))
        reg = (user_e.square().sum(-1) + pos_e.square().sum(-1) + neg_e.square().sum(-1)).mean()
        return loss + self.reg_weight * reg

    def prepare_scoring(self) -> None:
        self._items = self.item_representations()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        items = self._items if self._items is not None else self.item_representations()
        return self.user_embedding[users] @ items.T

    def finish_scoring(self) -> None:
        self._items = None
