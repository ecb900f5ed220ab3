"""The canonical on-disk form of a dataset, written atomically, and its reader.

A canonical folder holds ``interactions.parquet`` (columns ``user``, ``item``, ``split`` with
0 train / 1 valid / 2 test), one float32 ``<modality>_feat.npy`` per modality, optional id
maps (``user_ids.parquet``/``item_ids.parquet``: new id -> raw id) and ``manifest.json`` with
the fingerprint, counts, file names and provenance. The folder is built under a temporary
name next to its destination and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clear_core.atomic_io import write_json_atomic
from clear_core.data.dataset import SPLITS, Dataset
from clear_core.data.fingerprint import fingerprint_content, fingerprinted, sorted_pairs
from clear_core.data.k_core import write_id_maps
from clear_core.data.loading import (
    CANONICAL_INTERACTIONS,
    FEATURE_SUFFIX,
    load_feature,
    permission_denied,
)
from clear_core.errors import DataError

MANIFEST = "manifest.json"
COMPLETE_MARKER = ".complete"
FORMAT = "clearrec-canonical"
FORMAT_VERSION = 1


def _is_replaceable(path: Path) -> bool:
    """An existing output folder may be replaced only if clearrec wrote it (or it is empty)."""
    if not path.is_dir():
        return False
    return (
        not any(path.iterdir())
        or (path / MANIFEST).exists()
        or (path / COMPLETE_MARKER).exists()
    )


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; on success it replaces ``out_dir``.

    On any exception the temporary folder is removed and ``out_dir`` is left as it was. An
    existing ``out_dir`` that clearrec did not write (no manifest, no ``.complete``, not
    empty) is refused rather than overwritten.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not _is_replaceable(out_dir):
        raise DataError(
            out_dir,
            "exists and does not look like a clearrec output (no manifest.json or .complete); "
            "choose another output folder or remove it",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    # mkdtemp makes 0700 folders; outputs are shared with containers and other users.
    tmp.chmod(0o755)
    try:
        yield tmp
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{tmp.name[-8:]}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_canonical_into(
    dataset: Dataset,
    folder: Path,
    *,
    id_maps: Mapping[str, np.ndarray] | None = None,
    provenance: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write the canonical files into an existing (temporary) ``folder``; returns the fingerprint."""
    splits = {s: sorted_pairs(dataset.split(s)) for s in SPLITS}
    users = np.concatenate([splits[s][:, 0] for s in SPLITS])
    items = np.concatenate([splits[s][:, 1] for s in SPLITS])
    labels = np.concatenate([np.full(len(splits[s]), i, dtype=np.int8) for i, s in enumerate(SPLITS)])
    pq.write_table(
        pa.table({"user": users, "item": items, "split": labels}), folder / CANONICAL_INTERACTIONS
    )
    features = {m: np.ascontiguousarray(f, dtype=np.float32) for m, f in dataset.features.items()}
    modalities = {}
    for m in sorted(features):
        fname = f"{m}{FEATURE_SUFFIX}"
        np.save(folder / fname, features[m], allow_pickle=False)
        modalities[m] = {"file": fname, "shape": list(features[m].shape), "dtype": "float32"}
    maps = None
    if id_maps is not None:
        maps = write_id_maps(folder, np.asarray(id_maps["users"]), np.asarray(id_maps["items"]))
    fp = fingerprint_content(dataset.n_users, dataset.n_items, splits, features)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": dataset.name,
        "fingerprint": fp,
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "counts": {s: len(splits[s]) for s in SPLITS},
        "dropped": {s: int(dataset.dropped.get(s, 0)) for s in ("valid", "test")},
        "modalities": modalities,
        "id_maps": maps,
        "provenance": dict(provenance or {}),
        **dict(extra or {}),
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return fp


def write_canonical(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    id_maps: Mapping[str, np.ndarray] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """Write ``dataset`` in canonical form to ``out_dir`` atomically; returns its fingerprint.

    ``id_maps``: optional ``{"users": raw ids in new-id order, "items": ...}``.
    """
    with atomic_output_dir(out_dir) as tmp:
        return write_canonical_into(dataset, tmp, id_maps=id_maps, provenance=provenance)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "missing; a canonical dataset folder needs its manifest.json") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(path, f"not a clearrec canonical manifest (expected format {FORMAT!r})")
    missing = [k for k in ("fingerprint", "n_users", "n_items", "modalities") if k not in manifest]
    if missing:
        raise DataError(path, f"missing field(s) {missing}")
    return manifest


def read_canonical(path: str | Path, *, name: str | None = None, verify: bool = True) -> Dataset:
    """Read a canonical folder; with ``verify`` the content must match the manifest's fingerprint."""
    folder = Path(path)
    manifest = read_manifest(folder)
    inter = folder / CANONICAL_INTERACTIONS
    try:
        table = pq.read_table(inter)
    except PermissionError:
        raise permission_denied(inter) from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(inter, f"not a readable Parquet file ({exc})") from None
    missing = [c for c in ("user", "item", "split") if c not in table.column_names]
    if missing:
        raise DataError(inter, f"missing column(s) {missing}; has {table.column_names}")
    user = table.column("user").to_numpy().astype(np.int64)
    item = table.column("item").to_numpy().astype(np.int64)
    label = table.column("split").to_numpy().astype(np.int64)
    n_users, n_items = int(manifest["n_users"]), int(manifest["n_items"])
    if len(user) and (user.min() < 0 or user.max() >= n_users or item.min() < 0 or item.max() >= n_items):
        raise DataError(inter, f"ids outside 0..n_users-1 / 0..n_items-1 ({n_users}, {n_items})")
    rows = {s: np.stack([user[label == i], item[label == i]], axis=1) for i, s in enumerate(SPLITS)}
    for s in SPLITS:
        if len(rows[s]) == 0:
            raise DataError(inter, f"the {s} split is empty")
    features = {}
    for m, info in sorted(manifest["modalities"].items()):
        features[m] = load_feature(folder / info["file"], n_items)
    dropped = {k: int(v) for k, v in (manifest.get("dropped") or {}).items()}
    dataset = fingerprinted(name or str(manifest.get("name") or folder.name), n_users, n_items, rows, features, dropped)
    fp = dataset.fingerprint
    if verify and fp != manifest["fingerprint"]:
        raise DataError(
            folder,
            f"content fingerprint {fp[:12]}... differs from the manifest's "
            f"{str(manifest['fingerprint'])[:12]}...: files were changed after writing",
        )
    return dataset
