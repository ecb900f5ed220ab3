"""SLMRec (Tao et al., IEEE TMM 2022, "Self-supervised Learning for Multimedia Recommendation")
as MMRec implements it (enoche/MMRec ``src/models/slmrec.py``, after zltao/SLMRec), with its
default self-supervised task FAC (fine and coarse alignment).

* Features: each modality's raw rows are L2-normalised, frozen, and mapped by a linear layer
  (``v_dense`` / ``t_dense``: the encoder of :meth:`encode`, so CLEAR's projection plugs in).
* Channels: the item ID embedding and one channel per modality. Every channel propagates
  ``[user embedding ; channel items]`` (the SAME user table in each) over the symmetric-
  normalised user-item graph, mean of layers 0..L (MMRec's ``adj_type: pre``). All channels go
  through one sparse product on the concatenated matrix.
* Fusion (``mm_fusion_mode: concat``): users and items concatenate their channels
  ``[id, m_1, ..., m_M]`` and a linear layer each maps them back to ``embedding_size``.
* Main loss: in-batch InfoNCE between the L2-normalised user and positive-item vectors at
  ``temperature`` (the trainer's negatives are not used, as in SLMRec).
* FAC loss on the batch's positive items: a chain starts from the item's propagated ID channel
  ``x_0``; stage ``j`` maps it ``x_j = h_j(x_{j-1})`` and aligns it with the item's propagated
  modality channel ``g_j(e_{m_j})`` by InfoNCE on raw dot products at ``ssl_temperature``:
  ``L_FAC = Σ_j InfoNCE(x_j, g_j(e_{m_j}))``. Modalities are chained image, audio, others,
  text, and the text stage (the coarse one) is ``embedding_size // 2`` wide, the others
  ``embedding_size``, as in the paper's i → iv → iva → ivat.
* Loss = InfoNCE + ``ssl_weight`` · L_FAC + ``weight_decay``/2 · Σ‖θ‖² over every trainable
  parameter: MMRec trains SLMRec with Adam's (coupled) weight decay 1e-4, whose gradient is
  exactly that of this term, so the trainer needs no per-model optimiser setting.

Departures, and why:
* The modality encoders start with zero biases, where MMRec keeps nn.Linear's own bias draw
  (both draw the weights Xavier-uniform): one initialisation for every model
  (:mod:`clear_core.models.multimodal`, which gives the measured effect).
* With image + text MMRec's chain has one more linear layer between the two stages
  (``g_iv_iva``, the audio stage whose loss it comments out); two linear maps in a row are one
  linear map, so the functions the chain can express are the same.
* On data without a text modality (TikTok: audio and image) every stage here is
  ``embedding_size`` wide, the paper's coarse stage being text's. MMRec has only a visual and a
  textual slot, so given TikTok's audio in its textual slot it aligns audio at the coarse width.
  Passed the same audio under the name ``text``, this model computes what MMRec's does: with
  MMRec's weights copied in (``g_iv_iva`` folded into the text stage), losses and gradients
  agree to 2e-10 and scores to 2e-8 in float64 on a TikTok batch (benchmarks/RESULTS.md,
  2026-12-07).
* MMRec scores with the embeddings of the last training batch (before its optimiser step) and
  passes them through a sigmoid; here scoring recomputes them with the current weights, and
  the sigmoid, monotone, does not change a ranking.
* Only FAC is implemented: it is MMRec's default, and MMRec's FD / FM branches use an audio
  branch (``a_dense_emb``) that its version never builds, so they cannot run there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import normalized_adjacency, symmetric_propagate
from clear_core.models import register
from clear_core.models.losses import parameter_decay
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender

#: Order of the FAC chain: the paper's visual, acoustic, textual; unknown modalities before text.
_CHAIN_RANK = {"image": 0, "audio": 1, "text": 3}


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows i of ``-log softmax_j(<a_i, p_j> / t)[i]``: row i's positive is row i of
    ``positives``, every other row of the batch a negative (SLMRec's ``CrossEntropyLoss``)."""
    logits = anchors @ positives.T / temperature
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def chain_order(modalities: list[str]) -> list[str]:
    return sorted(modalities, key=lambda m: _CHAIN_RANK.get(m, 2))


def _xavier_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_uniform_(layer.weight)
    return layer


@register
class SLMRec(MultimodalRecommender):
    name = "slmrec"
    params = {
        **MULTIMODAL_PARAMS,
        "n_layers": int,
        "temperature": float,
        "ssl_temperature": float,
        "ssl_weight": float,
        "weight_decay": float,
    }

    def check_params(self, dataset: Dataset, params) -> list[str]:
        # Ranges of the shared names and of temperature, ssl_* and weight_decay: param_rules.
        problems = []
        if "text" in dataset.features and params["embedding_size"] < 2:
            problems.append("embedding_size: expected >= 2 (the text stage of FAC is half as wide)")
        return problems

    def input_features(self, dataset: Dataset, modality: str) -> torch.Tensor:
        """SLMRec L2-normalises every item's raw feature row before its dense layer."""
        return F.normalize(super().input_features(dataset, modality), dim=1)

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        self.n_layers = params["n_layers"]
        self.temperature = params["temperature"]
        self.ssl_temperature = params["ssl_temperature"]
        self.ssl_weight = params["ssl_weight"]
        self.weight_decay = params["weight_decay"]
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.channels = ["id", *self.modality_names]
        width = d * len(self.channels)
        self.user_fusion = _xavier_linear(width, d)
        self.item_fusion = _xavier_linear(width, d)
        # FAC chain: h_j continues the ID chain, g_j maps the modality channel to its width.
        self.chain = chain_order(self.modality_names)
        self.chain_heads = nn.ModuleDict()
        self.modality_heads = nn.ModuleDict()
        d_in = d
        for m in self.chain:
            d_out = d // 2 if m == "text" else d
            self.chain_heads[m] = _xavier_linear(d_in, d_out)
            self.modality_heads[m] = _xavier_linear(d, d_out)
            d_in = d_out
        self.register_buffer(
            "adjacency", normalized_adjacency(dataset.train, self.n_users, self.n_items), persistent=False
        )
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- forward ------------------------------------------------------------------------------
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated channels: users (n_users, C·d) and items (n_items, C·d), channel-major."""
        feats = self.encode()
        items_in = torch.cat([self.item_embedding, *(feats[m] for m in self.modality_names)], dim=1)
        users_in = self.user_embedding.repeat(1, len(self.channels))
        x = torch.cat([users_in, items_in], dim=0)
        total = x
        for _ in range(self.n_layers):
            x = symmetric_propagate(self.adjacency, x)
            total = total + x
        out = total / (self.n_layers + 1)
        users, items = out.split([self.n_users, self.n_items])
        return users, items

    def fac_loss(self, item_channels: torch.Tensor) -> torch.Tensor:
        """L_FAC of a batch of items given their propagated channels (B, C·d)."""
        parts = dict(zip(self.channels, item_channels.split(self.embedding_size, dim=1), strict=True))
        x, total = parts["id"], None
        for m in self.chain:
            x = self.chain_heads[m](x)
            term = info_nce(x, self.modality_heads[m](parts[m]), self.ssl_temperature)
            total = term if total is None else total + term
        return total

    def decay(self) -> torch.Tensor:
        """½ Σ‖θ‖² over the trainable parameters (Adam's coupled weight decay, as a loss term)."""
        return parameter_decay(self.parameters())

    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        users_c, items_c = self.propagate()
        batch_items = items_c.index_select(0, pos_items)
        u = F.normalize(self.user_fusion(users_c.index_select(0, users)), dim=1)
        p = F.normalize(self.item_fusion(batch_items), dim=1)
        loss = info_nce(u, p, self.temperature)
        if self.ssl_weight > 0:
            loss = loss + self.ssl_weight * self.fac_loss(batch_items)
        if self.weight_decay > 0:
            loss = loss + self.weight_decay * self.decay()
        return loss

    # --- scoring ------------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        users_c, items_c = self.propagate()
        self._cache = (self.user_fusion(users_c), self.item_fusion(items_c))

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            with torch.no_grad():
                self.prepare_scoring()
        user_all, item_all = self._cache
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None
