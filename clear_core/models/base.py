"""The one small contract every recommender follows (after RecBole/MMRec).

A model is built from a :class:`~clear_core.data.Dataset` and keyword arguments (Cornac
style), and answers two questions: the loss for a batch of ``(user, positive, negative)``
triples, and the scores of all items for a batch of users. Hooks let the trainer tell it
when an epoch starts (edge dropout, projection refresh) and when scoring starts (cache
propagated embeddings once instead of once per user batch).

The same code runs on CPU and CUDA: a model keeps graphs and features as buffers so that
``model.to(device)`` moves everything.

Rows that carry gradients are gathered with ``index_select``, never ``table[idx]``: on CPU with
more than one thread the backward of advanced indexing accumulates repeated rows with parallel
atomic adds, whose order (and so the last bits) changes from run to run, while
``index_select``'s backward adds them in a fixed order. With one thread both give the same bits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from clear_core.data.dataset import Dataset


class Recommender(nn.Module):
    """Base class. Subclasses set ``name`` and ``params`` (field -> type) and implement
    :meth:`loss` and :meth:`score`.

    ``params`` declares the keyword arguments the model takes; their defaults live in
    ``configs/models/<name>.yaml`` and are merged and type-checked by
    :func:`clear_core.models.build_model`.
    """

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    #: True for models that read ``dataset.features`` (the multimodal ones).
    needs_features: ClassVar[bool] = False

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__()
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items
        self.hparams = dict(params)

    # --- training -----------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before epoch ``epoch`` (1-based). Default: nothing."""

    def loss(
        self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor
    ) -> torch.Tensor:
        """Scalar loss for a batch of BPR triples (all 1-D int64 tensors on the model's device)."""
        raise NotImplementedError

    def training_loss(
        self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor
    ) -> torch.Tensor:
        """What the trainer minimises: :meth:`loss`, plus whatever a model family's plug-ins
        add (the multimodal base adds MRdIB's auxiliary loss), so no model adds it itself."""
        return self.loss(users, pos_items, neg_items)

    @classmethod
    def shared_defaults(cls) -> dict[str, Any]:
        """Defaults of parameters a whole model family takes (the multimodal plug-ins), applied
        under the model's own ``configs/models/<name>.yaml``. Default: none."""
        return {}

    def epoch_diagnostics(self) -> dict[str, float]:
        """Figures about the model's own state, read by the trainer after every epoch and
        logged with that epoch's metrics (``name/figure`` keys). Default: none."""
        return {}

    # --- scoring ------------------------------------------------------------------------
    def prepare_scoring(self) -> None:
        """Called once under ``torch.no_grad()`` and ``eval()`` before a round of :meth:`score`
        calls; models that propagate over a graph cache the final embeddings here."""

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for ``users``: a ``(len(users), n_items)`` float tensor."""
        raise NotImplementedError

    def finish_scoring(self) -> None:
        """Drop whatever :meth:`prepare_scoring` cached."""

    # --- helpers --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def trained_parameters(self) -> list[nn.Parameter]:
        """What the trainer's optimiser steps: every parameter that needs a gradient, less
        :meth:`self_stepped_parameters`."""
        own = {id(p) for p in self.self_stepped_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in own]

    def self_stepped_parameters(self) -> list[nn.Parameter]:
        """Parameters the model updates itself, inside :meth:`loss`, with an optimiser of its own
        (an adversarial discriminator: MMSSL). The trainer leaves them alone, so a model with a
        second player needs no trainer of its own; the model keeps that optimiser's state in
        :meth:`extra_state_for_checkpoint`. Default: none."""
        return []

    def extra_state_for_checkpoint(self) -> dict[str, Any]:
        """State outside parameters and buffers that a resumed run needs (default none)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state_for_checkpoint` returned."""
