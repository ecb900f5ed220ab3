"""The in-memory dataset every model and the trainer consume."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Dataset:
    """Users, items, the three interaction splits and per-item modality features.

    ``train``/``valid``/``test`` are ``(n, 2)`` int64 arrays of ``(user, item)`` rows with
    0-based contiguous ids (``n_users``/``n_items`` count them, as MMRec does: max id + 1).
    ``features`` maps a modality name (``image``, ``text``, ``audio``...) to an
    ``(n_items, d)`` float32 array; its order is the order modalities were found in.
    ``fingerprint`` is the sha256 of the canonical content (see ``canonical.py``).
    ``dropped`` counts valid/test rows removed because their user has no training row
    (the MMRec protocol drops valid/test rows of users absent from train: they cannot be ranked
    from anything the model learnt).
    """

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    fingerprint: str = ""
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    @property
    def n_interactions(self) -> int:
        return int(len(self.train) + len(self.valid) + len(self.test))

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def stats(self) -> dict:
        """The figures `clearrec data stats` prints.

        ``interactions`` and ``splits`` count the rows of the file (what published tables
        count); ``dropped`` says how many valid/test rows were removed because their user has
        no training row, and ``used`` what remains for evaluation.
        """
        used = {s: int(len(self.split(s))) for s in SPLITS}
        dropped = {s: int(self.dropped.get(s, 0)) for s in ("valid", "test")}
        in_file = {s: used[s] + dropped.get(s, 0) for s in SPLITS}
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": sum(in_file.values()),
            "splits": in_file,
            "dropped": dropped,
            "used": used,
            "modalities": {m: list(f.shape) for m, f in self.features.items()},
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "fingerprint": self.fingerprint,
        }
