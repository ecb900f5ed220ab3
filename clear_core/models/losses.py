"""The training losses every model shares: BPR and MMRec's embedding penalty."""

from __future__ import annotations

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
