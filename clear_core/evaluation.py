"""Full-ranking evaluation on the model's device, batched over users, no per-user Python loop.

The MMRec evaluation protocol: every item is ranked; only the user's TRAINING items are masked
(validation items are not masked at test time); every user with at least one row in a split
is evaluated on that split; metrics are averaged over those users.

Because validation and test both mask only training items, the ranking of a user is the same
for both splits: each user is scored once, one top-K (K = the largest cut-off) is taken, and
the hits of every split are read from that same ranking. Ties in scores are broken by lower
item id (:func:`clear_core.metrics.deterministic_topk`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clear_core.data.dataset import Dataset
from clear_core.metrics import deterministic_topk, ranking_metric_sums
from clear_core.models.base import Recommender


@dataclass(frozen=True)
class _SplitIndex:
    """Relevant items of one split, keyed by ``position_in_eval_users * n_items + item``."""

    keys: torch.Tensor  # sorted int64
    n_relevant: torch.Tensor  # (n_eval_users,) int64, 0 for users absent from the split
    n_users: int


def _positions(eval_users: np.ndarray, users: np.ndarray) -> np.ndarray:
    return np.searchsorted(eval_users, users)


class Evaluator:
    """Scores users once per evaluation round and reports metrics for several splits.

    Built once per (dataset, device): the index structures live on ``device`` so that an
    evaluation round moves nothing but the user batches' scores.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        splits: Sequence[str] = ("valid", "test"),
        topk: Sequence[int] = (5, 10, 20, 50),
        batch_size: int = 4096,
        device: torch.device | str = "cpu",
    ) -> None:
        if not topk or min(topk) < 1:
            raise ValueError(f"topk must be positive cut-offs, got {list(topk)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.splits = tuple(splits)
        self.topk = sorted(set(int(k) for k in topk))
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.n_items = dataset.n_items
        rows = {s: np.asarray(dataset.split(s), dtype=np.int64).reshape(-1, 2) for s in self.splits}
        self.eval_users_np = np.unique(np.concatenate([r[:, 0] for r in rows.values()]))
        self.eval_users = torch.from_numpy(self.eval_users_np).to(self.device)
        n_eval = len(self.eval_users_np)

        # Training items of the evaluated users, grouped by position so that a batch of
        # consecutive positions owns one contiguous slice.
        train = np.asarray(dataset.train, dtype=np.int64).reshape(-1, 2)
        keep = np.isin(train[:, 0], self.eval_users_np)
        train_pos = _positions(self.eval_users_np, train[keep, 0])
        order = np.argsort(train_pos, kind="stable")
        self._mask_pos = torch.from_numpy(train_pos[order]).to(self.device)
        self._mask_item = torch.from_numpy(train[keep, 1][order]).to(self.device)
        self._mask_ptr = np.searchsorted(train_pos[order], np.arange(n_eval + 1))

        self._index: dict[str, _SplitIndex] = {}
        for split, r in rows.items():
            pos = _positions(self.eval_users_np, r[:, 0])
            keys = np.sort(pos * self.n_items + r[:, 1])
            n_rel = np.bincount(pos, minlength=n_eval)
            self._index[split] = _SplitIndex(
                keys=torch.from_numpy(keys).to(self.device),
                n_relevant=torch.from_numpy(n_rel).to(self.device),
                n_users=int((n_rel > 0).sum()),
            )

    @property
    def n_users(self) -> dict[str, int]:
        """How many users each split evaluates."""
        return {s: idx.n_users for s, idx in self._index.items()}

    def _hits(self, split: str, positions: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        keys = self._index[split].keys
        query = positions.unsqueeze(1) * self.n_items + top
        found = torch.searchsorted(keys, query).clamp_max(keys.numel() - 1)
        return keys[found] == query

    @torch.no_grad()
    def evaluate(self, model: Recommender) -> dict[str, dict[str, float]]:
        """``{split: {"recall@20": ..., ...}}`` averaged over the users of each split."""
        was_training = model.training
        model.eval()
        k_max = max(self.topk)
        sums: dict[str, dict[str, torch.Tensor]] = {s: {} for s in self.splits}
        try:
            model.prepare_scoring()
            n_eval = len(self.eval_users_np)
            for start in range(0, n_eval, self.batch_size):
                stop = min(start + self.batch_size, n_eval)
                scores = model.score(self.eval_users[start:stop]).float()
                lo, hi = int(self._mask_ptr[start]), int(self._mask_ptr[stop])
                scores[self._mask_pos[lo:hi] - start, self._mask_item[lo:hi]] = -torch.inf
                top = deterministic_topk(scores, k_max)
                positions = torch.arange(start, stop, device=self.device)
                for split in self.splits:
                    n_rel = self._index[split].n_relevant[start:stop]
                    rows = (n_rel > 0).nonzero(as_tuple=True)[0]
                    if rows.numel() == 0:
                        continue
                    hits = self._hits(split, positions[rows], top[rows])
                    if hits.shape[1] < k_max:  # fewer items than the largest cut-off
                        pad = hits.new_zeros((hits.shape[0], k_max - hits.shape[1]))
                        hits = torch.cat([hits, pad], dim=1)
                    batch = ranking_metric_sums(hits, n_rel[rows], self.topk)
                    acc = sums[split]
                    for key, value in batch.items():
                        acc[key] = acc[key] + value if key in acc else value
        finally:
            model.finish_scoring()
            model.train(was_training)
        out: dict[str, dict[str, float]] = {}
        for split in self.splits:
            n = self._index[split].n_users
            out[split] = {key: float(v) / n for key, v in sums[split].items()} if n else {}
        return out


def evaluate(
    model: Recommender,
    dataset: Dataset,
    *,
    splits: Sequence[str] = ("valid", "test"),
    topk: Sequence[int] = (5, 10, 20, 50),
    batch_size: int = 4096,
) -> dict[str, dict[str, float]]:
    """One-off evaluation of ``model`` on ``splits`` (builds an :class:`Evaluator` each call)."""
    evaluator = Evaluator(
        dataset, splits=splits, topk=topk, batch_size=batch_size, device=model.device
    )
    return evaluator.evaluate(model)
