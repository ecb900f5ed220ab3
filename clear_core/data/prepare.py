"""The "filter and split" stage: raw Amazon reviews -> k-core -> split -> canonical folder.

Optional features come from the extraction stage: ``<modality>_feat.npy`` whose row ``j``
belongs to the raw item on line ``j + 1`` of ``items.txt`` (one asin a line). Rows are
re-ordered to the new item ids; kept items without a row get the modality's mean vector
(as the MMRec preprocessing does), and how many did is reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from clear_core.data.amazon import read_reviews
from clear_core.data.canonical import atomic_output_dir, write_canonical_into
from clear_core.data.dataset import SPLITS
from clear_core.data.fingerprint import fingerprinted
from clear_core.data.k_core import filter_k_core
from clear_core.data.loading import feature_files, load_feature
from clear_core.data.splitting import SPLIT_METHODS, split_labels
from clear_core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ITEMS_FILE = "items.txt"
FEATURES_SIDECAR = "features.json"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_items_txt(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(path, f"missing; the features folder needs {ITEMS_FILE} (one item id a line)") from None
    ids = [s.strip() for s in lines]
    seen: dict[str, int] = {}
    for number, asin in enumerate(ids, start=1):
        if not asin:
            raise DataError(path, "empty item id", line=number)
        if asin in seen:
            raise DataError(path, f"item id {asin!r} repeats line {seen[asin]}", line=number)
        seen[asin] = number
    return ids


def align_features(
    features_dir: str | Path, item_ids: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, Any]]:
    """Features re-ordered to ``item_ids`` (raw ids in new-id order).

    Returns ``(features, missing count per modality, sidecar contents or {})``.
    """
    folder = Path(features_dir)
    if not folder.is_dir():
        raise DataError(folder, "features folder not found")
    raw_ids = read_items_txt(folder / ITEMS_FILE)
    row_of = {asin: j for j, asin in enumerate(raw_ids)}
    rows = np.array([row_of.get(str(a), -1) for a in item_ids], dtype=np.int64)
    have = rows >= 0
    files = feature_files(folder)
    if not files:
        raise DataError(folder, "no <modality>_feat.npy files found")
    features, missing = {}, {}
    for modality, path in files.items():
        arr = load_feature(path, len(raw_ids))
        mean = arr.mean(axis=0, dtype=np.float64).astype(np.float32)
        out = np.empty((len(item_ids), arr.shape[1]), dtype=np.float32)
        out[have] = arr[rows[have]]
        out[~have] = mean
        features[modality] = out
        missing[modality] = int((~have).sum())
    sidecar = {}
    if (folder / FEATURES_SIDECAR).exists():
        try:
            sidecar = json.loads((folder / FEATURES_SIDECAR).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(folder / FEATURES_SIDECAR, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    if any(missing.values()):
        log.warning("items without a feature row (given the modality mean): %s", missing)
    return features, missing, sidecar


def prepare_dataset(
    reviews_path: str | Path,
    out_dir: str | Path,
    *,
    features_dir: str | Path | None = None,
    k: int = 5,
    split: str = "random",
    seed: int = 999,
    name: str | None = None,
) -> dict[str, Any]:
    """Raw reviews -> iterative ``k``-core -> re-index -> ``split`` -> canonical ``out_dir``.

    ``name`` defaults to the reviews file name without extensions (``reviews_Baby_5``).
    Returns a summary (fingerprint, counts, rows removed, items given the mean feature).
    Nothing is written unless every step succeeds.
    """
    problems = []
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        problems.append(f"k: expected an integer >= 1, got {k!r}")
    if split not in SPLIT_METHODS:
        problems.append(f"split: expected one of {list(SPLIT_METHODS)}, got {split!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed: expected an integer, got {seed!r}")
    if problems:
        raise ConfigError(problems, source="prepare")
    reviews_path = Path(reviews_path)
    reviews = read_reviews(reviews_path)
    mask, kept = filter_k_core(reviews.user, reviews.item, k)
    if not mask.any():
        raise DataError(reviews_path, f"nothing survives {k}-core filtering ({len(reviews)} reviews)")
    timestamps = reviews.timestamp[mask] if reviews.has_timestamps else None
    labels = split_labels(kept.user, split, seed, timestamps)
    rows = {
        s: np.stack([kept.user[labels == i], kept.item[labels == i]], axis=1)
        for i, s in enumerate(SPLITS)
    }
    for s in SPLITS:
        if len(rows[s]) == 0:
            raise DataError(reviews_path, f"the {s} split is empty after {k}-core and the {split} split")
    features: dict[str, np.ndarray] = {}
    missing: dict[str, int] = {}
    sidecar: dict[str, Any] = {}
    if features_dir is not None:
        features, missing, sidecar = align_features(features_dir, kept.item_ids)
    n_users, n_items = len(kept.user_ids), len(kept.item_ids)
    name = name or reviews_path.name.split(".")[0]
    dataset = fingerprinted(name, n_users, n_items, rows, features, dropped={"valid": 0, "test": 0})
    provenance = {
        "reviews": str(reviews_path),
        "reviews_sha256": file_sha256(reviews_path),
        "k": k,
        "split": split,
        "seed": seed,
        "timestamps_used": timestamps is not None,
        "features_dir": None if features_dir is None else str(features_dir),
        "features": sidecar,
    }
    summary = {
        "name": name,
        "out_dir": str(out_dir),
        "raw_reviews": len(reviews) + reviews.duplicates_dropped,
        "duplicates_dropped": reviews.duplicates_dropped,
        "rows_removed_by_k_core": int((~mask).sum()),
        "users": n_users,
        "items": n_items,
        "interactions": dataset.n_interactions,
        "splits": {s: len(rows[s]) for s in SPLITS},
        "items_missing_features": missing,
        "modalities": {m: list(f.shape) for m, f in features.items()},
    }
    with atomic_output_dir(out_dir) as tmp:
        fp = write_canonical_into(
            dataset,
            tmp,
            id_maps={"users": kept.user_ids, "items": kept.item_ids},
            provenance=provenance,
            extra={"prepare": summary},
        )
    summary["fingerprint"] = fp
    log.info("prepared %s: %d users, %d items, fingerprint %s", out_dir, n_users, n_items, fp)
    return summary
