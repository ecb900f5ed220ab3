"""MMGCN (Wei et al., ACM MM 2019, "Multi-modal Graph Convolution Network for Personalized
Recommendation of Micro-video") as MMRec implements it (enoche/MMRec ``src/models/mmgcn.py``).

* One GCN per modality m over the user-item graph (both edge directions, no self-loops) with
  MEAN aggregation, ``D^-1 A``. Its input is ``x = normalize([P_m ; φ_m(x_m)])`` row-wise: user
  preferences ``P_m`` (n_users x ``latent_size``) above the item features mapped by a linear
  layer to ``latent_size`` (φ_m is :meth:`encode`, so CLEAR's projection plugs in there).
* Each of the ``n_layers`` layers (MMRec's GCN is written out for exactly 3):
  ``h = LeakyReLU(mean_agg(x W_l))``, ``x̂ = LeakyReLU(V_l x) + e_id``, and
  ``x = LeakyReLU(G_l [h ; x̂])`` (``concatenate: true``) or ``LeakyReLU(G_l h + x̂)``; ``e_id`` is
  one ID table shared by users and items of every modality. Layers after the first are
  ``embedding_size`` wide.
* Nodes: the mean over modalities of the last layer; score = dot product.
* Loss: BPR + ``reg_weight`` · (mean(e_id[users]²) + mean(e_id[items]²) + Σ_m mean(P_m²)).

What is trained, as in MMRec: the ID table ``e_id`` and the preferences ``P_m`` are created
there as plain tensors (``xavier_normal_(torch.rand(...)).to(device)``), not ``nn.Parameter``s,
so the optimiser never sees them: they stay at their random initial values and their penalty
is a constant. ``trainable_embeddings: false`` (the default) reproduces that; ``true`` trains
them, as the paper describes.

Departures, and why:
* The modality encoders start Xavier-uniform with zero biases, where MMRec keeps nn.Linear's own
  draw: one initialisation for every model (:mod:`clear_core.models.multimodal`, which gives
  the measured effect).
* MMRec passes ``concate='False'``, a non-empty string, which its ``if self.concate`` reads as
  true: the concatenating layers are what runs there, hence ``concatenate: true``.
* MMRec maps only the visual features to the 256-d latent and feeds text raw (its preference
  then has the text width); here every modality goes through φ_m to ``latent_size`` by default,
  so that the projection has a learned transform to act on in each. ``raw_modalities`` names
  the modalities to feed raw as MMRec feeds its text (``[audio]`` on TikTok, whose audio takes
  MMRec's textual slot): they keep an encoder that nothing reads, and neither plug-in may act
  on them. On TikTok, three seeds do not separate the two (``[audio]`` minus the default, test
  Recall@20: +0.0029 [−0.0020, +0.0078]; benchmarks/RESULTS.md, "MMGCN against MMRec's"), so
  the default keeps a learned transform for the plug-ins. MMRec penalises only the visual
  preference; here every modality's (a constant while the preferences are frozen).
* ``mean_agg(x W) = mean_agg(x) W``: all modalities are aggregated in one sparse product before
  their own weights are applied (the same numbers up to rounding, one product instead of M).
* MMRec scores with the representation of the last training batch (before its optimiser step);
  here scoring recomputes it with the current weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import quiet_sparse_notices
from clear_core.item_graph import propagate_with_transpose, to_csr_pair
from clear_core.models import register
from clear_core.models.losses import bpr_loss
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender, default_pair


def mean_adjacency(train: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """``D^-1 A`` of the user-item graph (users first): each node averages its neighbours."""
    pairs = np.unique(np.asarray(train, dtype=np.int64).reshape(-1, 2), axis=0)
    n = n_users + n_items
    rows = np.concatenate([pairs[:, 0], pairs[:, 1] + n_users])
    cols = np.concatenate([pairs[:, 1] + n_users, pairs[:, 0]])
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    with quiet_sparse_notices():
        return torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(1.0 / degree[rows]).float(), (n, n)
        ).coalesce()


def _xavier_normal_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_normal_(layer.weight)
    return layer


class _ModalityLayer(nn.Module):
    """One MMGCN layer of one modality (``conv_embed_l``, ``linear_layer_l``, ``g_layer_l``)."""

    def __init__(self, d_in: int, d_out: int, concatenate: bool, first: bool) -> None:
        super().__init__()
        self.conv = nn.Parameter(nn.init.xavier_normal_(torch.empty(d_in, d_in)))
        self.linear = _xavier_normal_linear(d_in, d_out)
        g_in = d_in + d_out if concatenate else d_in
        # MMRec initialises g_layer1 Xavier-normal and leaves the later ones at nn.Linear's default.
        self.gate = _xavier_normal_linear(g_in, d_out) if first else nn.Linear(g_in, d_out)
        self.concatenate = concatenate

    def forward(self, x: torch.Tensor, aggregated: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(aggregated @ self.conv)
        x_hat = F.leaky_relu(self.linear(x)) + ids
        if self.concatenate:
            return F.leaky_relu(self.gate(torch.cat([h, x_hat], dim=1)))
        return F.leaky_relu(self.gate(h) + x_hat)


@register
class MMGCN(MultimodalRecommender):
    name = "mmgcn"
    params = {
        **MULTIMODAL_PARAMS,
        "latent_size": int,
        "n_layers": int,
        "reg_weight": float,
        "concatenate": bool,
        "trainable_embeddings": bool,
        "raw_modalities": list,
    }

    def encoded_size(self, params) -> int:
        return params["latent_size"]

    def check_params(self, dataset: Dataset, params) -> list[str]:
        # Value ranges (latent_size, reg_weight, ...) live in param_rules; MMGCN needs a layer.
        problems = []
        if params["n_layers"] == 0:
            problems.append("n_layers: expected >= 1 for MMGCN (its output is the last layer), got 0")
        raw = list(params["raw_modalities"])
        unknown = [m for m in raw if m not in dataset.features]
        if unknown:
            problems.append(f"raw_modalities: unknown modality {', '.join(map(str, unknown))}; "
                            f"dataset has {', '.join(dataset.features)}")
        # The plug-ins act on the learned transform of the features, which a raw modality lacks.
        pair = params["projected_pair"] or default_pair(list(dataset.features))
        clash = [m for m in raw if m in pair] if params["projection"] != "none" else []
        if clash:
            problems.append(f"raw_modalities: {', '.join(clash)} is fed raw, so CLEAR's projection "
                            "has no learned transform of it to act on; project another pair or feed it encoded")
        if raw and params["mrdib"]:
            problems.append("raw_modalities: MRdIB compresses every modality's learned transform; "
                            "a modality fed raw has none (use raw_modalities: [] with mrdib)")
        return problems

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d, latent = self.embedding_size, params["latent_size"]
        self.n_layers = params["n_layers"]
        self.reg_weight = params["reg_weight"]
        self.trainable_embeddings = params["trainable_embeddings"]
        self.raw_modalities = list(params["raw_modalities"])
        # A modality fed raw enters its GCN at its feature width, as MMRec's text does.
        width = {m: self.raw(m).shape[1] if m in self.raw_modalities else latent for m in self.modality_names}
        n_nodes = self.n_users + self.n_items
        ids = nn.init.xavier_normal_(torch.empty(n_nodes, d))
        prefs = {m: nn.init.xavier_normal_(torch.empty(self.n_users, width[m])) for m in self.modality_names}
        if self.trainable_embeddings:
            self.id_embedding = nn.Parameter(ids)
            self.preferences = nn.ParameterDict({m: nn.Parameter(p) for m, p in prefs.items()})
        else:
            # Saved with the model (random, not derived from the data) but never trained.
            self.register_buffer("id_embedding", ids)
            for m, p in prefs.items():
                self.register_buffer(f"preference_{m}", p)
        self.layers = nn.ModuleDict({
            m: nn.ModuleList(
                _ModalityLayer(width[m] if i == 0 else d, d, params["concatenate"], first=i == 0)
                for i in range(self.n_layers)
            )
            for m in self.modality_names
        })
        adjacency, adjacency_t = to_csr_pair(mean_adjacency(dataset.train, self.n_users, self.n_items))
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.register_buffer("adjacency_t", adjacency_t, persistent=False)
        self._cache: torch.Tensor | None = None

    def preference(self, modality: str) -> torch.Tensor:
        if self.trainable_embeddings:
            return self.preferences[modality]
        return getattr(self, f"preference_{modality}")

    def propagate(self) -> torch.Tensor:
        """Every node's representation (users first): the mean over modalities of the last layer."""
        feats = self.encode()
        feats.update({m: self.raw(m) for m in self.raw_modalities})
        xs = [F.normalize(torch.cat([self.preference(m), feats[m]]), dim=1) for m in self.modality_names]
        for layer in range(self.n_layers):
            widths = [x.shape[1] for x in xs]
            aggregated = propagate_with_transpose(self.adjacency, self.adjacency_t, torch.cat(xs, dim=1))
            xs = [
                self.layers[m][layer](x, agg, self.id_embedding)
                for m, x, agg in zip(self.modality_names, xs, aggregated.split(widths, dim=1), strict=True)
            ]
        return torch.stack(xs).mean(dim=0)

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        nodes = self.propagate()
        items = torch.cat([pos_items, neg_items]) + self.n_users
        u = nodes.index_select(0, users)
        p, n = nodes.index_select(0, items).split(len(users))
        ranking = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = self.id_embedding.index_select(0, users).square().mean()
        reg = reg + self.id_embedding.index_select(0, items).square().mean()
        reg = reg + sum(self.preference(m).square().mean() for m in self.modality_names)
        return ranking + self.reg_weight * reg

    def prepare_scoring(self) -> None:
        self._cache = self.propagate()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            with torch.no_grad():
                self.prepare_scoring()
        nodes = self._cache
        return nodes[users] @ nodes[self.n_users :].T

    def finish_scoring(self) -> None:
        self._cache = None
