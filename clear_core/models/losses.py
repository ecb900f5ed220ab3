"""The training losses every model shares: BPR, MMRec's embedding penalty, and weight decay as a loss term."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log σ(pos - neg)`` (BPR; MMRec and FREEDOM take the mean, not the sum).

    ``logsigmoid`` is stable for any score gap; ``softplus(neg - pos)`` is the same function
    but rounds differently in the last bits, so one form serves every model.
    """
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def embedding_penalty(*embeddings: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: sum of the (Frobenius) L2 norms of the batch's embedding matrices,
    divided by the batch size."""
    total = sum(torch.linalg.vector_norm(e) for e in embeddings)
    return total / embeddings[-1].shape[0]


def parameter_decay(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """½ Σ‖θ‖² over the ``parameters`` that require a gradient: ``weight_decay`` times this has
    the gradient that Adam's coupled weight decay adds (MMRec's ``weight_decay``), so a model
    trained that way needs no optimiser setting of its own."""
    return 0.5 * sum(p.square().sum() for p in parameters if p.requires_grad)
