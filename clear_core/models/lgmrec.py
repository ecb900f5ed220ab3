"""LGMRec (Guo et al., AAAI'24, "Local and Global Graph Learning for Multimodal Recommendation")
as MMRec implements it (enoche/MMRec src/models/lgmrec.py, from the authors' georgeguo-cn/LGMRec),
and LGMRec + CLEAR by configuration.

* Collaborative graph embedding (CGE): LightGCN over ``n_ui_layers`` of the ID embeddings on the
  symmetric-normalised user-item graph (mean of layers 0..L).
* Modality graph embedding (MGE), per modality m: items ``f_m = x_m W_m`` (frozen raw features,
  a bias-free linear map: the encoder's bias is pinned at zero and not trained) through
  :meth:`MultimodalRecommender.encode`, so ``projection: fixed`` applies; users are the mean of
  their items' ``f_m``; then ``n_mm_layers`` propagations over the normalised graph (the last
  layer, not a mean). Local embedding ``= CGE + Σ_m normalize(MGE_m)``.
* Global hypergraph embedding (GHE), per modality m: hyperedge logits of items ``H_i = x_m V_m``
  (``hyper_num`` hyperedges) and of users ``H_u = A H_i`` (``A`` the raw 0/1 interaction
  matrix), each made a soft assignment by Gumbel-softmax (τ = 0.2) and edge dropout
  (``keep_rate``); ``n_hyper_layers`` of ``L = H_i^T E``, ``E_i = H_i L``, ``E_u = H_u L`` on the
  CGE item embeddings. Final ``= local + alpha · normalize(Σ_m GHE_m)``.
* Loss: BPR + ``cl_weight`` · hypergraph contrast + ``reg_weight`` · (‖u‖+‖p‖+‖n‖)/B (MMRec's
  ``EmbLoss`` of the batch's final embeddings). The contrast, for each pair of modalities (a, b),
  is ``Σ_batch -log( exp(cos(g_a, g_b)/0.2) / Σ_all exp(cos(g_a, g_b^all)/0.2) )`` over the batch's
  users (against every user's ``g_b``) and over its positive items (against every item's): a
  SUM over the batch, as the reference, not a mean.

Departures, each chosen to keep scoring deterministic or the model general:

* Scoring uses the noise-free soft assignment ``softmax(H/τ)``; the reference draws fresh
  Gumbel noise at evaluation too, so its scores are random. Training keeps the noise
  (``hyperedge_noise: false`` turns it off, e.g. for a CPU-vs-CUDA comparison).
* More than two modalities: MGE and GHE sum over all of them and the contrast runs over every
  pair, image first and the others in dataset order (:func:`contrast_pairs`); with image + text
  (or TikTok's image + audio, whose audio stands where the reference reads text) it is the
  reference's formula, anchored on the visual embeddings with the negatives from the other's.
  The hyperedge logits read the raw features, not the encoded ones (the reference's
  ``v_hyper`` is its own map of the raw features), so the CLEAR projection does not touch them.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import normalized_adjacency, symmetric_propagate, user_item_matrix
from clear_core.item_graph import propagate_with_transpose
from clear_core.models import register
from clear_core.models.losses import bpr_loss, embedding_penalty
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender
from clear_core.models.self_supervised import info_nce_rows

#: Gumbel-softmax temperature of the hyperedge assignment and of the contrast (``self.tau``).
TAU = 0.2


def contrast_pairs(modalities: list[str]) -> list[tuple[str, str]]:
    """The modality pairs of the hypergraph contrast, each ``(anchor, other)``. The contrast is not
    symmetric (the negatives are the other modality's rows), and the reference anchors it on the
    visual embeddings (``ssl_triple_loss(uv_embs[users], ut_embs[users], ut_embs)``), so image goes
    first; dataset order (sorted by name: TikTok's is audio, image) would reverse it."""
    ordered = sorted(modalities, key=lambda m: m != "image")  # stable: the rest keep their order
    return list(combinations(ordered, 2))


@register
class LGMRec(MultimodalRecommender):
    name = "lgmrec"
    params = {
        **MULTIMODAL_PARAMS,
        "n_ui_layers": int,
        "n_mm_layers": int,
        "n_hyper_layers": int,
        "hyper_num": int,
        "keep_rate": float,
        "alpha": float,
        "cl_weight": float,
        "reg_weight": float,
        "hyperedge_noise": bool,
    }

    def check_params(self, dataset: Dataset, params) -> list[str]:
        problems = []
        for field in ("n_ui_layers", "n_mm_layers"):
            if params[field] < 0:
                problems.append(f"{field}: expected >= 0, got {params[field]}")
        if params["n_hyper_layers"] < 1:
            problems.append(f"n_hyper_layers: expected >= 1, got {params['n_hyper_layers']}")
        if params["hyper_num"] < 1:
            problems.append(f"hyper_num: expected >= 1, got {params['hyper_num']}")
        if not 0.0 < params["keep_rate"] <= 1.0:
            problems.append(f"keep_rate: expected a number in (0, 1], got {params['keep_rate']}")
        for field in ("alpha", "cl_weight"):  # reg_weight: clear_core.param_rules
            if params[field] < 0:
                problems.append(f"{field}: expected >= 0, got {params[field]}")
        if params["encoder_layers"] != 1:
            problems.append(f"encoder_layers: LGMRec's modality transform is one linear map; expected 1, got {params['encoder_layers']}")
        if len(dataset.features) < 2:
            problems.append(f"dataset {dataset.name!r}: LGMRec needs at least two modalities (its hypergraph contrast pairs them)")
        return problems

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        for name in ("n_ui_layers", "n_mm_layers", "n_hyper_layers", "hyper_num", "keep_rate",
                     "alpha", "cl_weight", "reg_weight", "hyperedge_noise"):
            setattr(self, name, params[name])
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        for encoder in self.encoders.values():
            encoder.bias.requires_grad_(False)  # the reference's item_*_trs has no bias
        self.hyperedges = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.raw(m).shape[1], self.hyper_num)))
            for m in self.modality_names
        })

        pairs = np.unique(np.asarray(dataset.train, dtype=np.int64).reshape(-1, 2), axis=0)
        users, items = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
        self.register_buffer(
            "adjacency", normalized_adjacency(pairs, self.n_users, self.n_items), persistent=False
        )
        a, a_t = user_item_matrix(users, items, self.n_users, self.n_items, torch.ones(len(users)))
        self.register_buffer("interactions", a, persistent=False)
        self.register_buffer("interactions_t", a_t, persistent=False)
        degree = torch.bincount(users, minlength=self.n_users).float()
        self.register_buffer("inverse_user_degree", (1.0 / (degree + 1e-7)).unsqueeze(1), persistent=False)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- the three embeddings -------------------------------------------------------------------
    def user_items(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: each user's sum over its training items (differentiable in ``x``)."""
        return propagate_with_transpose(self.interactions, self.interactions_t, x)

    def collaborative(self) -> torch.Tensor:
        h = torch.cat([self.user_embedding, self.item_embedding])
        total = h
        for _ in range(self.n_ui_layers):
            h = symmetric_propagate(self.adjacency, h)
            total = total + h
        return total / (self.n_ui_layers + 1)

    def modality(self, item_features: torch.Tensor) -> torch.Tensor:
        users = self.user_items(item_features) * self.inverse_user_degree
        h = torch.cat([users, item_features])
        for _ in range(self.n_mm_layers):
            h = symmetric_propagate(self.adjacency, h)
        return h

    def assignment(self, logits: torch.Tensor) -> torch.Tensor:
        """Soft hyperedge assignment: Gumbel-softmax in training, its noise-free mean at scoring;
        then hyperedge dropout (training only)."""
        if self.training and self.hyperedge_noise:
            soft = F.gumbel_softmax(logits, TAU, hard=False, dim=1)
        else:
            soft = torch.softmax(logits / TAU, dim=1)
        if self.training and self.keep_rate < 1.0:
            soft = F.dropout(soft, 1.0 - self.keep_rate, training=True)
        return soft

    def hypergraph(self, modality: str, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users, items)`` of the global hypergraph embedding of one modality."""
        item_logits = self.raw(modality) @ self.hyperedges[modality]
        h_items = self.assignment(item_logits)
        h_users = self.assignment(self.user_items(item_logits))
        out_items = items
        for _ in range(self.n_hyper_layers):
            latent = h_items.T @ out_items
            out_items = h_items @ latent
            out_users = h_users @ latent
        return out_users, out_items

    def forward_all(self) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Final embeddings of every node (users first) and each modality's hypergraph embeddings."""
        cge = self.collaborative()
        local = cge + sum(F.normalize(self.modality(f)) for f in self.encode().values())
        hyper = {m: self.hypergraph(m, cge[self.n_users :]) for m in self.modality_names}
        ghe = sum(torch.cat(pair) for pair in hyper.values())
        return local + self.alpha * F.normalize(ghe), hyper

    # --- contract -------------------------------------------------------------------------------
    def hypergraph_contrast(self, hyper, users: torch.Tensor, pos_items: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for a, b in contrast_pairs(self.modality_names):
            (ua, ia), (ub, ib) = hyper[a], hyper[b]
            total = total + info_nce_rows(ua.index_select(0, users), ub.index_select(0, users), ub, TAU).sum()
            total = total + info_nce_rows(ia.index_select(0, pos_items), ib.index_select(0, pos_items), ib, TAU).sum()
        return total

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        final, hyper = self.forward_all()
        u = final.index_select(0, users)
        p, n = final.index_select(0, pos_items + self.n_users), final.index_select(0, neg_items + self.n_users)
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        if self.cl_weight:
            loss = loss + self.cl_weight * self.hypergraph_contrast(hyper, users, pos_items)
        if self.reg_weight:
            loss = loss + self.reg_weight * embedding_penalty(u, p, n)
        return loss

    def prepare_scoring(self) -> None:
        final, _ = self.forward_all()
        self._cache = (final[: self.n_users], final[self.n_users :])

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            self.prepare_scoring()
        user_all, item_all = self._cache
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None
