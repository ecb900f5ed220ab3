"""Iterative k-core filtering on users and items, and re-indexing to contiguous ids.

Removing a sparse user can push an item below ``k`` and vice versa, so the filter repeats
until nothing changes (a fixpoint: every remaining user and item has at least ``k`` rows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

USER_MAP_FILE = "user_ids.parquet"
ITEM_MAP_FILE = "item_ids.parquet"


def k_core_mask(users: np.ndarray, items: np.ndarray, k: int = 5) -> np.ndarray:
    """Boolean mask of the rows that survive iterative ``k``-core filtering.

    ``users``/``items`` are integer codes (any range); duplicates count once each row.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = np.ones(len(users), dtype=bool)
    n_u = int(users.max()) + 1 if len(users) else 0
    n_i = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        rounds += 1
        du = np.bincount(users[keep], minlength=n_u)
        di = np.bincount(items[keep], minlength=n_i)
        new_keep = keep & (du[users] >= k) & (di[items] >= k)
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    log.debug("%d-core reached after %d rounds: %d of %d rows", k, rounds, keep.sum(), len(keep))
    return keep


@dataclass(frozen=True)
class Reindexed:
    """``user``/``item``: new 0-based ids per row; ``user_ids[new] = raw``, same for items."""

    user: np.ndarray
    item: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray


def reindex(raw_users: np.ndarray, raw_items: np.ndarray) -> Reindexed:
    """Map raw ids (ints or strings) to 0-based contiguous ids in sorted raw-id order."""
    user_ids, user = np.unique(np.asarray(raw_users), return_inverse=True)
    item_ids, item = np.unique(np.asarray(raw_items), return_inverse=True)
    return Reindexed(user.astype(np.int64).ravel(), item.astype(np.int64).ravel(), user_ids, item_ids)


def filter_k_core(raw_users, raw_items, k: int = 5) -> tuple[np.ndarray, Reindexed]:
    """Filter to the ``k``-core, then re-index what remains. Returns (row mask, reindexed)."""
    u = reindex(raw_users, raw_items)
    mask = k_core_mask(u.user, u.item, k)
    kept = reindex(np.asarray(raw_users)[mask], np.asarray(raw_items)[mask])
    return mask, kept


def write_id_maps(out_dir: str | Path, user_ids: np.ndarray, item_ids: np.ndarray) -> dict[str, str]:
    """Persist ``new id -> raw id`` as two Parquet files; returns their file names."""
    out_dir = Path(out_dir)
    for fname, ids, col in ((USER_MAP_FILE, user_ids, "user"), (ITEM_MAP_FILE, item_ids, "item")):
        raw = ids.tolist()
        table = pa.table({col: pa.array(np.arange(len(raw), dtype=np.int64)), f"raw_{col}": pa.array(raw)})
        pq.write_table(table, out_dir / fname)
    return {"users": USER_MAP_FILE, "items": ITEM_MAP_FILE}


def read_id_map(path: str | Path) -> np.ndarray:
    """The raw ids in new-id order, from a file written by :func:`write_id_maps`."""
    table = pq.read_table(path)
    new = table.column(0).to_numpy()
    raw = np.asarray(table.column(1).to_pylist())
    return raw[np.argsort(new)]
