"""Uniform BPR negative sampling, vectorised.

Negatives are drawn uniformly from the items that occur in training (the MMRec protocol), and a
draw that hits one of the user's own training items is re-drawn. Rejection is vectorised:
the training pairs are kept as sorted ``user * n_items + item`` keys, a whole batch of draws
is checked with one ``searchsorted``, and only the rejected entries are drawn again.
"""

from __future__ import annotations

import numpy as np
import torch

from clear_core.errors import DataError

# A user who has seen all but a handful of items makes rejection slow; after this many
# rounds the remaining draws are taken from the exact complement instead.
_MAX_REJECTION_ROUNDS = 64


class NegativeSampler:
    """Draws, for each user of a batch, one item the user has not interacted with in training."""

    def __init__(
        self,
        train: np.ndarray,
        n_items: int,
        *,
        device: torch.device | str = "cpu",
        source: str = "train split",
    ) -> None:
        train = np.asarray(train, dtype=np.int64).reshape(-1, 2)
        self.n_items = int(n_items)
        self.device = torch.device(device)
        candidates = np.unique(train[:, 1])
        keys = np.unique(train[:, 0] * self.n_items + train[:, 1])
        degree = np.bincount(train[:, 0])
        full = np.nonzero(degree >= len(candidates))[0]
        if len(full):
            raise DataError(
                source,
                f"user {int(full[0])} has interacted with every training item "
                f"({len(candidates)}); no negative item can be sampled for it",
            )
        self.candidates = torch.from_numpy(candidates).to(self.device)
        self.keys = torch.from_numpy(keys).to(self.device)

    def _is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        query = users * self.n_items + items
        found = torch.searchsorted(self.keys, query).clamp_max(self.keys.numel() - 1)
        return self.keys[found] == query

    def sample(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One negative item per entry of ``users`` (int64 on the sampler's device).

        ``generator`` lives on the sampler's device; the same generator state gives the same
        negatives.
        """
        n_cand = self.candidates.numel()
        draw = torch.randint(n_cand, users.shape, generator=generator, device=self.device)
        items = self.candidates[draw]
        reject = self._is_positive(users, items).nonzero(as_tuple=True)[0]
        rounds = 0
        while reject.numel():
            rounds += 1
            if rounds > _MAX_REJECTION_ROUNDS:
                items[reject] = self._from_complement(users[reject], generator)
                break
            redraw = torch.randint(n_cand, reject.shape, generator=generator, device=self.device)
            items[reject] = self.candidates[redraw]
            still = self._is_positive(users[reject], items[reject])
            reject = reject[still]
        return items

    def _from_complement(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Exact uniform draw among each user's non-positive candidates (rare, slow path)."""
        out = torch.empty_like(users)
        for i, user in enumerate(users.tolist()):
            allowed = ~self._is_positive(
                torch.full_like(self.candidates, user), self.candidates
            )
            pool = self.candidates[allowed]
            pick = torch.randint(pool.numel(), (1,), generator=generator, device=self.device)
            out[i] = pool[pick]
        return out
