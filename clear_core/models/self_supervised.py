"""Self-supervised objectives shared by the multimodal baselines (BM3, MGCN, MENTOR, LGMRec, MMSSL).

Each function is the formula its papers write, over row-aligned views (row i of one view and
row i of the other are the positive pair):

* :func:`info_nce`: ``mean_i -log( exp(s_ii/τ) / Σ_j exp(s_ij/τ) )`` with ``s`` the cosine
  similarity between the two views (MGCN eq. 14, MENTOR's graph-perturbation loss); computed
  with ``logsumexp`` (the same value, without overflow at small τ).
* :func:`cosine_alignment`: ``1 - mean_i cos(a_i, b_i)`` (BM3 eq. 9-10, MENTOR's feature mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


__all__ = ["cosine_alignment", "info_nce"]
