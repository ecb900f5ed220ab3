"""MENTOR (Xu et al., AAAI'25, "Multi-level Self-supervised Learning for Multimodal
Recommendation") as its authors implement it (github Jinfeng-Xu/MENTOR src/models/mentor.py,
an MMRec fork), and MENTOR + CLEAR by configuration.

* Per modality m, a GCN (the reference's ``GCN``): item features ``f_m = MLP_m(x_m)`` (d_feat ->
  4d -> LeakyReLU -> d, through :meth:`MultimodalRecommender.encode`, so ``projection: fixed``
  de-redundances them), users a free preference table ``P_m``; ``x = normalize([P_m; f_m])``
  row-wise, two propagations over the symmetric-normalised user-item graph, ``r_m = x + Ax + A²x``.
  An ID "guide" GCN does the same with a free item table through its own MLP.
* Fusion: items ``[r_1 ; ... ; r_M]`` plus ``n_mm_layers`` propagations of it over the frozen
  kNN item graph (unit weights, ``Σ_m w_m kNN_m``, image 0.1 as the reference's mm_image_weight,
  built once from the raw features); users ``[w_u1 r_1 ; ... ; w_uM r_M]`` with a learned
  per-user modality weight ``w_u`` (softmax-initialised). Score = dot product.
* Loss (``calculate_loss``)::

      L = -mean log2 σ(s_pos - s_neg)                                   (BPR in base 2)
          + reg_weight · (Σ_m mean(P_m[u]²) + mean(w_u²))
          + align_weight · Σ_{pairs a<b of {guide, fused, each modality}} |var_a - var_b| + |mean_a - mean_b|
          + mask_weight_f · [1 - cos(drop(h), MLP(h))] over users and items     (see below)
          + mask_weight_g · [InfoNCE(n1_users, n2_users) + InfoNCE(n1_items, n2_items)]

  ``var``/``mean`` are of the whole fused, guide and per-modality embedding tables (users and
  items, the modality tables repeated M times as the reference concatenates them). ``n1``/``n2``
  are two more GCNs per modality, each with its own preference table and MLP (as the
  reference's ``v_gcn_n1``/``v_gcn_n2``), whose propagated rows get SimGCL noise
  ``sign(h) ⊙ normalize(U[0,1)) · perturbation_eps`` after each layer; InfoNCE runs over all
  users and all items, temperature ``temperature``.

What the reference does that looks like a slip, and is reproduced because it decides the numbers:

* The feature-level mask loss computes both its views under ``torch.no_grad()``, so it adds a
  value to the loss and no gradient (its ``mlp`` is never trained). Here too: it is in the
  reported loss, it moves nothing.
* The noise GCNs share no weights with the scoring GCNs; they reach the scores only through
  ``w_u``, which the InfoNCE term trains.
* The per-epoch user-user graph (``topk_sample``) and the item-dropped edge lists are computed
  by the reference but read by nothing; they are left out.

Departures: scoring recomputes the embeddings from the current weights (the reference scores
with the embeddings of the last training batch, i.e. before the last optimiser step), so scores
are deterministic and a resumed run scores like an uninterrupted one. More than two modalities
generalise the concatenations and the alignment pairs; with two it is the reference's formula.
The reference trains with lr 1e-4 (its grid); the learning rate is the trainer's, set it there.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import normalized_adjacency, symmetric_propagate
from clear_core.item_graph import mixed_item_graph, propagate_with_transpose, to_csr_pair
from clear_core.models import register
from clear_core.models.losses import bpr_loss
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender, mix_weights
from clear_core.models.self_supervised import cosine_alignment, info_nce
from clear_core.param_rules import knn_problem


def _mlp(d_in: int, d_out: int) -> nn.Module:
    """The reference's ``MLP_1(leaky_relu(MLP(x)))`` with hidden width 4d (PyTorch default init)."""
    return nn.Sequential(nn.Linear(d_in, 4 * d_out), nn.LeakyReLU(), nn.Linear(4 * d_out, d_out))


def perturb(h: torch.Tensor, eps: float) -> torch.Tensor:
    """SimGCL's noise: ``h + sign(h) ⊙ normalize(U[0,1)) · eps`` (row-normalised uniform noise)."""
    if eps == 0.0:
        return h
    return h + torch.sign(h) * F.normalize(torch.rand_like(h), dim=-1) * eps


def distribution_alignment(tables: list[torch.Tensor]) -> torch.Tensor:
    """MENTOR's coarse alignment: Σ over pairs of ``|var_a - var_b| + |mean_a - mean_b|``, each
    table summarised by the (unbiased) variance and the mean of all its entries."""
    stats = [(t.var(), t.mean()) for t in tables]
    return sum(
        (va - vb).abs() + (ma - mb).abs() for (va, ma), (vb, mb) in combinations(stats, 2)
    )


class PreferenceGCN(nn.Module):
    """The reference's ``GCN``: ``x = normalize([P; items])``, ``r = x + h + h1`` with
    ``h = perturb(Ax)``, ``h1 = perturb(Ah)``. ``mlp`` (optional) maps the item input first."""

    def __init__(self, n_users: int, d: int, mlp: nn.Module | None = None) -> None:
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, d)))
        self.mlp = mlp

    def forward(self, adjacency: torch.Tensor, items: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
        if self.mlp is not None:
            items = self.mlp(items)
        x = F.normalize(torch.cat([self.preference, items]))
        h = perturb(symmetric_propagate(adjacency, x), eps)
        h1 = perturb(symmetric_propagate(adjacency, h), eps)
        return x + h + h1


@register
class MENTOR(MultimodalRecommender):
    name = "mentor"
    params = {
        **MULTIMODAL_PARAMS,
        "n_mm_layers": int,
        "knn_k": int,
        "knn_chunk_size": int,
        "modality_weights": (dict, type(None)),
        "reg_weight": float,
        "dropout": float,
        "align_weight": float,
        "mask_weight_f": float,
        "mask_weight_g": float,
        "temperature": float,
        "perturbation_eps": float,
    }

    @staticmethod
    def _encoder(d_in: int, d_out: int, layers: int) -> nn.Module:
        if layers == 1:
            return MultimodalRecommender._encoder(d_in, d_out, layers)
        return _mlp(d_in, d_out)

    def check_params(self, dataset: Dataset, params) -> list[str]:
        # knn_k, knn_chunk_size, reg_weight: clear_core.param_rules, checked by the shared base.
        problems = []
        if params["n_mm_layers"] < 0:
            problems.append(f"n_mm_layers: expected >= 0, got {params['n_mm_layers']}")
        if (p := knn_problem(params["knn_k"], dataset.n_items, dataset.name)):
            problems.append(p)
        for field in ("align_weight", "mask_weight_f", "mask_weight_g", "perturbation_eps"):
            if params[field] < 0:
                problems.append(f"{field}: expected >= 0, got {params[field]}")
        if not 0.0 <= params["dropout"] < 1.0:
            problems.append(f"dropout: expected a number in [0, 1), got {params['dropout']}")
        self._weights, more = mix_weights(list(dataset.features), params["modality_weights"])
        return problems + more

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d, n_mod = self.embedding_size, len(self.modality_names)
        for name in ("n_mm_layers", "reg_weight", "dropout", "align_weight", "mask_weight_f",
                     "mask_weight_g", "temperature", "perturbation_eps"):
            setattr(self, name, params[name])
        self.gcns = nn.ModuleDict({m: PreferenceGCN(self.n_users, d) for m in self.modality_names})
        self.noise_gcns = nn.ModuleList(
            nn.ModuleDict({
                m: PreferenceGCN(self.n_users, d, self._encoder(self.raw(m).shape[1], d, params["encoder_layers"]))
                for m in self.modality_names
            })
            for _ in range(2)
        )
        self.item_id = nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_items, d)))
        self.id_gcn = PreferenceGCN(self.n_users, d, _mlp(d, d))
        self.user_modality_weight = nn.Parameter(
            torch.softmax(nn.init.xavier_normal_(torch.empty(self.n_users, n_mod, 1)), dim=1)
        )
        self.mask_mlp = nn.Linear(n_mod * d, n_mod * d)  # never trained, as in the reference
        self.mask_mlp.requires_grad_(False)

        self.register_buffer(
            "adjacency", normalized_adjacency(dataset.train, self.n_users, self.n_items), persistent=False
        )
        raw = {m: self.input_features(dataset, m) for m in self._weights}
        graph, graph_t = to_csr_pair(mixed_item_graph(raw, self._weights, params["knn_k"], params["knn_chunk_size"]))
        self.register_buffer("item_graph", graph, persistent=False)
        self.register_buffer("item_graph_t", graph_t, persistent=False)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- embeddings -----------------------------------------------------------------------------
    def item_side(self, items: torch.Tensor) -> torch.Tensor:
        """Item rows plus their ``n_mm_layers``-step propagation over the kNN item graph."""
        h = items
        for _ in range(self.n_mm_layers):
            h = propagate_with_transpose(self.item_graph, self.item_graph_t, h)
        return items + h

    def fused(self, reps: list[torch.Tensor]) -> torch.Tensor:
        """Users ``[w_u1 r_1 ; ...]`` and items ``[r_1 ; ...] + item graph``, as one table."""
        users = torch.cat([self.user_modality_weight[:, j] * r[: self.n_users] for j, r in enumerate(reps)], dim=1)
        items = self.item_side(torch.cat([r[self.n_users :] for r in reps], dim=1))
        return torch.cat([users, items])

    def modality_reps(self) -> list[torch.Tensor]:
        feats = self.encode()
        return [self.gcns[m](self.adjacency, feats[m]) for m in self.modality_names]

    def forward_all(self) -> dict[str, Any]:
        reps = self.modality_reps()
        out = {"fused": self.fused(reps)}
        n_mod = len(reps)
        repeated = lambda r: torch.cat([r] * n_mod, dim=1)  # noqa: E731 - the reference's [r, r]
        tables = [self.side_table(repeated(self.id_gcn(self.adjacency, self.item_id))), out["fused"]]
        tables += [self.side_table(repeated(r)) for r in reps]
        out["tables"] = tables
        out["noisy"] = [
            self.fused([gcns[m](self.adjacency, self.raw(m), self.perturbation_eps) for m in self.modality_names])
            for gcns in self.noise_gcns
        ]
        return out

    def side_table(self, rep: torch.Tensor) -> torch.Tensor:
        """A guide / single-modality table: users as they are, items plus the item graph."""
        return torch.cat([rep[: self.n_users], self.item_side(rep[self.n_users :])])

    # --- contract -------------------------------------------------------------------------------
    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        out = self.forward_all()
        final = out["fused"]
        u = final.index_select(0, users)
        p, n = final.index_select(0, pos_items + self.n_users), final.index_select(0, neg_items + self.n_users)
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1)) / math.log(2.0)
        reg = sum(self.gcns[m].preference.index_select(0, users).square().mean() for m in self.modality_names)
        loss = loss + self.reg_weight * (reg + self.user_modality_weight.square().mean())
        loss = loss + self.align_weight * distribution_alignment(out["tables"])
        if self.mask_weight_f:
            with torch.no_grad():  # both views without gradient, as the reference computes them
                mask = sum(
                    cosine_alignment(F.dropout(part, self.dropout, training=True), self.mask_mlp(part))
                    for part in (final[: self.n_users], final[self.n_users :])
                )
            loss = loss + self.mask_weight_f * mask
        if self.mask_weight_g:
            n1, n2 = out["noisy"]
            cl = info_nce(n1[: self.n_users], n2[: self.n_users], self.temperature)
            cl = cl + info_nce(n1[self.n_users :], n2[self.n_users :], self.temperature)
            loss = loss + self.mask_weight_g * cl
        return loss

    def prepare_scoring(self) -> None:
        final = self.fused(self.modality_reps())
        self._cache = (final[: self.n_users], final[self.n_users :])

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            self.prepare_scoring()
        user_all, item_all = self._cache
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None
