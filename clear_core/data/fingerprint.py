"""A content fingerprint of a dataset: the same interactions, splits and features give the
same sha256 wherever and whenever they were written; any changed row changes it.

What goes in: ``n_users``/``n_items``, each split's ``(user, item)`` rows sorted, and each
modality's name, dtype, shape and bytes (modalities in name order). What stays out: the
dataset's name, file paths, timestamps and row order on disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from clear_core.data.dataset import SPLITS, Dataset

FINGERPRINT_VERSION = b"clearrec-dataset-v1"


def sorted_pairs(pairs: np.ndarray) -> np.ndarray:
    """``(n, 2)`` int64 rows sorted by user, then item; C-contiguous little-endian."""
    pairs = np.asarray(pairs, dtype="<i8").reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return np.ascontiguousarray(pairs[order])


def fingerprint_content(
    n_users: int,
    n_items: int,
    splits: Mapping[str, np.ndarray],
    features: Mapping[str, np.ndarray],
) -> str:
    h = hashlib.sha256()
    h.update(FINGERPRINT_VERSION)
    h.update(f"|users={int(n_users)}|items={int(n_items)}".encode())
    for split in SPLITS:
        rows = sorted_pairs(splits[split])
        h.update(f"|{split}:{len(rows)}|".encode())
        h.update(rows.tobytes())
    for name in sorted(features):
        arr = np.asarray(features[name])
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(f"|feat:{name}:{little.dtype.str}:{'x'.join(map(str, arr.shape))}|".encode())
        h.update(np.ascontiguousarray(little).tobytes())
    return h.hexdigest()


def fingerprint_dataset(dataset) -> str:
    """The fingerprint of a :class:`~clear_core.data.Dataset` (its ``fingerprint`` field is ignored)."""
    return fingerprint_content(
        dataset.n_users,
        dataset.n_items,
        {s: dataset.split(s) for s in SPLITS},
        dataset.features,
    )


def fingerprinted(
    name: str,
    n_users: int,
    n_items: int,
    splits: Mapping[str, np.ndarray],
    features: Mapping[str, np.ndarray],
    dropped: Mapping[str, int] | None = None,
) -> Dataset:
    """The :class:`~clear_core.data.Dataset` of these splits and features, fingerprinted."""
    return Dataset(
        name=name,
        n_users=n_users,
        n_items=n_items,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        features=features,
        fingerprint=fingerprint_content(n_users, n_items, splits, features),
        dropped=dict(dropped or {}),
    )
