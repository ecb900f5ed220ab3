"""Self-supervised objectives shared by the multimodal baselines (BM3, MGCN, MENTOR, LGMRec, MMSSL).

Each function is the formula its papers write, over row-aligned views (row i of one view and
row i of the other are the positive pair):

* :func:`info_nce`: ``mean_i -log( exp(s_ii/τ) / Σ_j exp(s_ij/τ) )`` with ``s`` the cosine
  similarity between the two views (MGCN eq. 14, MENTOR's graph-perturbation loss); computed
  with ``logsumexp`` (the same value, without overflow at small τ).
* :func:`cosine_alignment`: ``1 - mean_i cos(a_i, b_i)`` (BM3 eq. 9-10, MENTOR's feature mask).
* :func:`info_nce_rows`: InfoNCE per anchor with the negatives drawn from a whole table
  (LGMRec eq. 14, its hypergraph contrast across modalities).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: exp(x) stays a normal float32 for |x| < 87; the margin covers rounding of the cosines.
_EXP_SAFE = 80.0


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of ``view1`` against ``view2``: positives on the diagonal, every other row of
    ``view2`` a negative (no intra-view negatives)."""
    a, b = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = a @ b.T / temperature
    positive = (a * b).sum(dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - positive).mean()


def cosine_alignment(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean cos(online_i, target_i)``; the caller detaches ``target`` where the paper stops
    its gradient."""
    return 1.0 - F.cosine_similarity(online, target, dim=-1).mean()




def info_nce_rows(
    anchor: torch.Tensor, positive: torch.Tensor, candidates: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-row ``-log( exp(cos(a_i, p_i)/τ) / Σ_j exp(cos(a_i, c_j)/τ) )`` with the negatives taken
    from ``candidates`` (every row of a table, the positives among them): LGMRec's
    ``ssl_triple_loss`` before its sum over the batch."""
    a, p, c = F.normalize(anchor, dim=1), F.normalize(positive, dim=1), F.normalize(candidates, dim=1)
    logits = a @ c.T / temperature
    if 1.0 / temperature + math.log(max(len(c), 1)) < _EXP_SAFE:
        # Unit rows: every logit lies in [-1/τ, 1/τ], so the plain sum of exps neither overflows
        # nor underflows float32 and its log is logsumexp's value without logsumexp's max, shift
        # and re-exponentiation (two passes over the batch x table logits forward, three back:
        # an eighth of LGMRec's CPU step on TikTok, where τ = 0.2).
        log_partition = logits.exp().sum(dim=1).log()
    else:
        log_partition = torch.logsumexp(logits, dim=1)
    return log_partition - (a * p).sum(dim=1) / temperature


__all__ = ["cosine_alignment", "info_nce", "info_nce_rows"]
