"""BM3 (Zhou et al., WWW'23, "Bootstrap Latent Representations for Multi-modal Recommendation")
as MMRec implements it (enoche/MMRec src/models/bm3.py), and BM3 + CLEAR by configuration.

* Users and items: ID embeddings propagated through ``n_layers`` LightGCN layers over the
  symmetric-normalised user-item graph (mean of layers 0..L); the item's ID embedding is added
  to its propagated one (``h_i = mean_l e_i^(l) + e_i``). Built once, never dropped.
* Modality m: ``f_m = φ_m(x_m)``, the linear map of the (trainable, as MMRec's
  ``nn.Embedding.from_pretrained(freeze=False)``) raw features, taken through
  :meth:`MultimodalRecommender.encode`, so ``projection: fixed`` de-redundances the encoded pair
  before anything reads it (paper Table 3, "+ CLEAR").
* One shared ``predictor`` (linear, d -> d) makes the online views; the targets are the
  same embeddings, detached and passed through dropout (``dropout``): BM3's bootstrap, with
  no negative sampling. The trainer still hands over negatives; BM3 ignores them.
* Loss (paper eq. 9-11), over the batch's (user, positive item) pairs::

      L = [1 - cos(p(u), sg(drop(i)))] + [1 - cos(p(i), sg(drop(u)))]
          + cl_weight · Σ_m ([1 - cos(p(f_m,i), sg(drop(h_i)))] + [1 - cos(p(f_m,i), sg(drop(f_m,i)))])
          + reg_weight · (‖U‖_F + ‖H‖_F) / n_items

  where each ``1 - cos`` is averaged over the batch and the last term is MMRec's ``EmbLoss`` of
  the whole propagated user and item tables (not only the batch's rows), as in the reference.
* Scores: ``<p(u), p(i)>`` (predicted online embeddings, as ``full_sort_predict``).

Departures: the encoders are Xavier-uniform initialised with zero biases (MMRec: Xavier-normal
weights, nn.Linear's default biases), one initialisation shared by every multimodal model here;
the predictor is applied to the batch's rows only (it is row-wise, so the numbers are the same as
MMRec's whole-table call). The predictor itself is initialised as MMRec's, bias included: with
identical weights, loss, gradients and scores equal MMRec's to float rounding (checked on TikTok),
and trained through the same trainer the two land within seed noise of each other
(``benchmarks/reference_quality.py``; RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import normalized_adjacency, symmetric_propagate
from clear_core.models import register
from clear_core.models.losses import embedding_penalty
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender
from clear_core.models.self_supervised import cosine_alignment


@register
class BM3(MultimodalRecommender):
    name = "bm3"
    params = {**MULTIMODAL_PARAMS, "n_layers": int, "reg_weight": float, "cl_weight": float, "dropout": float}

    def check_params(self, dataset: Dataset, params) -> list[str]:
        # n_layers and reg_weight: clear_core.param_rules, checked by the shared base.
        problems = []
        if params["cl_weight"] < 0:
            problems.append(f"cl_weight: expected >= 0, got {params['cl_weight']}")
        if not 0.0 <= params["dropout"] < 1.0:
            problems.append(f"dropout: expected a number in [0, 1), got {params['dropout']}")
        return problems

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        self.n_layers = params["n_layers"]
        self.reg_weight = params["reg_weight"]
        self.cl_weight = params["cl_weight"]
        self.dropout = params["dropout"]
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        # Xavier-normal weight and nn.Linear's own bias draw (uniform ±1/√d), as the reference.
        # Not zero: at the start that bias (±1/8 at d = 64) is ten times p(u)'s other term, and
        # starting it at zero cost a quarter of test Recall@20 on TikTok (benchmarks/RESULTS.md).
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.register_buffer(
            "adjacency", normalized_adjacency(dataset.train, self.n_users, self.n_items), persistent=False
        )
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users, items)``: LightGCN mean of layers; items plus their ID embedding."""
        h = torch.cat([self.user_embedding, self.item_embedding])
        total = h
        for _ in range(self.n_layers):
            h = symmetric_propagate(self.adjacency, h)
            total = total + h
        total = total / (self.n_layers + 1)
        return total[: self.n_users], total[self.n_users :] + self.item_embedding

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """BM3's target view: the online embedding, detached, with dropout."""
        return F.dropout(x.detach(), self.dropout, training=True)

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate()
        u, i = user_all.index_select(0, users), item_all.index_select(0, pos_items)
        u_target, i_target = self.target(u), self.target(i)
        loss = cosine_alignment(self.predictor(u), i_target) + cosine_alignment(self.predictor(i), u_target)
        if self.cl_weight:
            aux = 0.0
            for f in self.encode(pos_items).values():
                f_online = self.predictor(f)
                aux = aux + cosine_alignment(f_online, i_target) + cosine_alignment(f_online, self.target(f))
            loss = loss + self.cl_weight * aux
        if self.reg_weight:
            loss = loss + self.reg_weight * embedding_penalty(user_all, item_all)
        return loss

    def prepare_scoring(self) -> None:
        users, items = self.propagate()
        self._cache = (self.predictor(users), self.predictor(items))

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            self.prepare_scoring()
        user_all, item_all = self._cache
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None
