"""Top-K ranking metrics, computed for a whole batch of users at once.

Definitions follow the MMRec evaluation protocol, for a user with relevant
set ``R`` and a ranked list whose position ``i`` (1-based) is a hit ``h_i`` in {0, 1}:

* ``recall@K    = sum_{i<=K} h_i / |R|`` (not capped by K);
* ``precision@K = sum_{i<=K} h_i / K``;
* ``ndcg@K      = sum_{i<=K} h_i / log2(i + 1)`` divided by the ideal DCG over
  ``min(|R|, K)`` positions (binary gains);
* ``map@K       = sum_{i<=K} h_i * precision@i / min(|R|, K)``.

Metric keys are ``"<name>@<K>"`` (``"recall@20"``). Every function works on ``(B, K_max)``
hit matrices so that one top-K ranking serves every K and every metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

METRIC_NAMES = ("recall", "ndcg", "precision", "map")


def metric_keys(topk: Iterable[int]) -> list[str]:
    """All metric keys for the cut-offs ``topk``, e.g. ``["recall@5", ..., "map@50"]``."""
    return [f"{name}@{k}" for name in METRIC_NAMES for k in sorted(topk)]


def ranking_metric_sums(
    hits: torch.Tensor, n_relevant: torch.Tensor, topk: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Per-metric SUMS over the users of a batch (divide by the number of users to average).

    ``hits`` is a ``(B, K_max)`` 0/1 tensor (position ``j`` = rank ``j + 1``), ``n_relevant``
    a ``(B,)`` tensor of ``|R|`` (each >= 1), ``topk`` the cut-offs (each <= ``K_max``).
    Sums rather than means let the evaluator accumulate batches exactly.
    """
    k_max = hits.shape[1]
    if max(topk) > k_max:
        raise ValueError(f"cut-off {max(topk)} exceeds the ranked list length {k_max}")
    hits = hits.to(torch.float64)
    n_rel = n_relevant.to(torch.float64).clamp_min(1.0)
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64, device=hits.device)
    discounts = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = hits.cumsum(dim=1)
    dcg = (hits * discounts).cumsum(dim=1)
    ideal = discounts.cumsum(dim=0)
    # precision@i at each hit position, accumulated: the MAP numerator for every K at once.
    ap_terms = (hits * cum_hits / ranks).cumsum(dim=1)
    out: dict[str, torch.Tensor] = {}
    for k in sorted(topk):
        denom_k = torch.minimum(n_rel, torch.tensor(float(k), dtype=torch.float64, device=hits.device))
        ideal_k = ideal[denom_k.long() - 1]
        out[f"recall@{k}"] = (cum_hits[:, k - 1] / n_rel).sum()
        out[f"ndcg@{k}"] = (dcg[:, k - 1] / ideal_k).sum()
        out[f"precision@{k}"] = (cum_hits[:, k - 1] / k).sum()
        out[f"map@{k}"] = (ap_terms[:, k - 1] / denom_k).sum()
    return out


def ranking_metrics(
    hits: torch.Tensor, n_relevant: torch.Tensor, topk: Sequence[int]
) -> dict[str, float]:
    """Per-metric MEANS over the users of ``hits`` (see :func:`ranking_metric_sums`)."""
    n_users = hits.shape[0]
    if n_users == 0:
        raise ValueError("no users to evaluate")
    sums = ranking_metric_sums(hits, n_relevant, topk)
    return {key: float(value) / n_users for key, value in sums.items()}


def deterministic_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best items of each row, best first, ties broken by LOWER item id.

    ``torch.topk`` leaves the order of equal scores unspecified (it differs between CPU and
    CUDA). Rows where ties straddle the K-th position (an untrained model, a user with fewer
    than K unmasked items) fall back to a stable full sort; other rows only re-order their
    top K, so the common case costs one ``topk`` of K + 1.
    """
    n_items = scores.shape[1]
    k = min(k, n_items)
    # One extra place reveals a tie across the cut: the K-th and (K+1)-th best are equal.
    values, indices = torch.topk(scores, min(k + 1, n_items), dim=1, sorted=True)
    if values.shape[1] > k:
        ambiguous = (values[:, k - 1] == values[:, k]).nonzero(as_tuple=True)[0]
        values, indices = values[:, :k].contiguous(), indices[:, :k].contiguous()
    else:
        ambiguous = indices.new_empty(0)
    if ambiguous.numel():
        tied_rows = scores[ambiguous]
        _, full = torch.sort(tied_rows, dim=1, descending=True, stable=True)
        indices[ambiguous] = full[:, :k]
        values[ambiguous] = torch.gather(tied_rows, 1, full[:, :k])
    # Within the top K: order by (score desc, item id asc) with two stable sorts.
    by_id, order = torch.sort(indices, dim=1, stable=True)
    values = torch.gather(values, 1, order)
    _, order = torch.sort(values, dim=1, descending=True, stable=True)
    return torch.gather(by_id, 1, order)
