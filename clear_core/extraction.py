"""The feature-extraction stage: raw item metadata and images -> ``<modality>_feat.npy``.

:func:`extract_features` reads Amazon-style metadata (:mod:`clear_core.data.text_content`),
encodes each item's text (title + brand + categories + description) and image with encoders
chosen by name (:mod:`clear_core.encoders`), and writes to ``OUT``:

* ``items.txt``: one asin a line, in first-seen metadata order;
* ``text_feat.npy`` / ``image_feat.npy``: float32, row ``i`` = item on line ``i + 1``;
* ``features.json``: encoders (name, weights sha256, options, dim), input fingerprint,
  counts of every kind of missing or bad input, device and timings (``encode_seconds``: time
  spent decoding, encoding and caching the contents not already cached; ``items_per_second``
  is ``encoded / encode_seconds``). Written last: a folder without it is incomplete.

Items without text, or without a readable image, get the mean vector of that modality over the
items that have one, and are counted. Encoding is batched over unique contents in first-seen
order, and every batch's vectors are flushed to a content-hash cache
(:mod:`clear_core.encoders.cache`, default ``OUT/.cache``) before the next batch starts, so a
second run encodes nothing and a killed run resumes at the first unfinished batch; batches are
fixed by position, so a resumed run feeds the encoder exactly the batches a fresh one would and
gives identical arrays. The function takes and returns plain values, so the pipeline can run it
as a Ray task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clear_core.atomic_io import write_atomic
from clear_core.config import config_dir, load_yaml, validate_fields
from clear_core.data.text_content import Catalogue, read_catalogue
from clear_core.encoders import Encoder, build_encoder
from clear_core.encoders.cache import EmbeddingCache, content_key
from clear_core.encoders.image_files import (
    IMAGE_PROBLEMS,
    decode_image,
    file_digest,
    resolve_image,
)
from clear_core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ITEMS_FILE = "items.txt"
SIDECAR = "features.json"
SIDECAR_FORMAT = "clearrec-features"
SIDECAR_VERSION = 1

EXTRACT_SCHEMA: dict[str, Any] = {
    "text_encoder": (str, type(None)),
    "image_encoder": (str, type(None)),
    "device": str,
    "text_batch_size": int,
    "image_batch_size": int,
    "cache_subdir": str,
    "max_image_pixels": int,
    "encoders": dict,
    "synthetic_content": dict,
}

# progress(modality, contents done, contents total)
Progress = Callable[[str, int, int], None]


def resolve_extract_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``configs/extract.yaml`` with ``overrides`` (``None`` values ignored), checked."""
    merged = load_yaml(config_dir() / "extract.yaml")
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = validate_fields(merged, EXTRACT_SCHEMA, source="extract")
    problems = [
        f"{key}: expected >= 1, got {cfg[key]}"
        for key in ("text_batch_size", "image_batch_size", "max_image_pixels")
        if cfg[key] < 1
    ]
    if problems:
        raise ConfigError(problems, source="extract")
    for key in ("text_encoder", "image_encoder"):
        # "none" (or null) switches a modality off.
        if cfg[key] is not None and cfg[key].strip().lower() in ("", "none"):
            cfg[key] = None
    return cfg



class _Modality:
    """One modality's items -> (content key, payload) and the outcome of encoding them."""

    def __init__(self, name: str, encoder: Encoder, n_items: int, cache_root: Path) -> None:
        self.name = name
        self.encoder = encoder
        self.cache = EmbeddingCache(cache_root, encoder.signature, encoder.dim)
        self.keys: list[bytes | None] = [None] * n_items
        self.payloads: dict[bytes, Any] = {}
        self.problems: dict[int, str] = {}  # item index -> reason it has no content
        self.failed: dict[bytes, str] = {}  # content key -> reason it could not be loaded
        self.encoded = 0
        self.cached = 0
        self.seconds = 0.0

    def set_content(self, index: int, content: bytes, payload: Any) -> None:
        key = content_key(self.encoder.signature, content)
        self.keys[index] = key
        self.payloads.setdefault(key, payload)


def _encode_all(
    mod: _Modality,
    load: Callable[[Any], tuple[Any, str | None]],
    batch_size: int,
    progress: Progress | None,
) -> None:
    cache = mod.cache
    unique = list(mod.payloads)  # first-seen order: fixes batch boundaries across runs
    total = len(unique)
    if progress:
        progress(mod.name, 0, total)
    for start in range(0, total, batch_size):
        batch = unique[start : start + batch_size]
        todo = [k for k in batch if k not in cache]
        mod.cached += len(batch) - len(todo)
        keys, inputs = [], []
        t0 = time.perf_counter()  # loading (image decoding) counts towards throughput too
        for key in todo:
            value, reason = load(mod.payloads[key])
            if reason is None:
                keys.append(key)
                inputs.append(value)
            else:
                mod.failed[key] = reason
        if inputs:
            vectors = mod.encoder.encode(inputs)
            cache.add(keys, vectors)
            mod.encoded += len(keys)
        mod.seconds += time.perf_counter() - t0 if todo else 0.0
        if progress:
            progress(mod.name, min(start + batch_size, total), total)
    cache.compact()


def _assemble(mod: _Modality, counts: dict[str, int]) -> tuple[np.ndarray, int]:
    """Rows per item; items with no vector get the mean of those that have one."""
    n, dim = len(mod.keys), mod.encoder.dim
    out = np.zeros((n, dim), dtype=np.float32)
    have = np.zeros(n, dtype=bool)
    for i, key in enumerate(mod.keys):
        if key is None:
            counts[mod.problems[i]] = counts.get(mod.problems[i], 0) + 1
            continue
        vec = mod.cache.get(key)
        if vec is None:
            reason = mod.failed[key]
            counts[reason] = counts.get(reason, 0) + 1
            continue
        out[i] = vec
        have[i] = True
    filled = int(n - have.sum())
    if have.any():
        out[~have] = out[have].mean(axis=0, dtype=np.float64).astype(np.float32)
    elif n:
        log.warning("%s: no item has usable content; all %d rows are zeros", mod.name, n)
    if filled:
        log.info("%s: %d of %d item(s) given the modality's mean vector", mod.name, filled, n)
    return out, filled


def extract_features(
    meta_path: str | Path,
    image_dir: str | Path | None,
    out_dir: str | Path,
    *,
    text_encoder: str | None = None,
    image_encoder: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Encode the items of ``meta_path`` into ``out_dir``; returns the sidecar's content.

    ``None`` arguments take their value from ``configs/extract.yaml``; ``batch_size`` sets both
    modalities' batch size; an encoder named ``"none"`` switches its modality off. Without
    ``image_dir`` only text is extracted.
    """
    t_start = time.perf_counter()
    cfg = resolve_extract_config(
        {
            "text_encoder": text_encoder,
            "image_encoder": image_encoder,
            "device": device,
            "text_batch_size": batch_size,
            "image_batch_size": batch_size,
        }
    )
    image_root = None
    if image_dir is not None:
        image_root = Path(image_dir)
        if not image_root.is_dir():
            raise DataError(image_root, "image folder not found (or not a folder)")
        image_root = image_root.resolve()
    catalogue = read_catalogue(meta_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cache_dir) if cache_dir is not None else out / cfg["cache_subdir"]
    items = catalogue.items
    counts: dict[str, int] = {**catalogue.counts, "missing_text": 0}
    counts.update({p: 0 for p in IMAGE_PROBLEMS})
    image_digests: list[str] = ["-"] * len(items)

    mods: list[_Modality] = []
    if cfg["text_encoder"]:
        enc = build_encoder(cfg["text_encoder"], modality="text", device=cfg["device"])
        mod = _Modality("text", enc, len(items), cache_root)
        for i, item in enumerate(items):
            if item.text:
                mod.set_content(i, item.text.encode("utf-8"), item.text)
            else:
                mod.problems[i] = "missing_text"
        _encode_all(mod, lambda text: (text, None), cfg["text_batch_size"], progress)
        mods.append(mod)
    if cfg["image_encoder"] and image_root is not None:
        enc = build_encoder(cfg["image_encoder"], modality="image", device=cfg["device"])
        mod = _Modality("image", enc, len(items), cache_root)
        for i, item in enumerate(items):
            path, reason = resolve_image(image_root, item.image_ref, item.asin)
            if reason is None:
                try:
                    digest, size = file_digest(path)
                except OSError:
                    digest, size, reason = "", 0, "missing_image"
                if reason is None and size == 0:
                    reason = "zero_byte"
            if reason is not None:
                mod.problems[i] = reason
                continue
            image_digests[i] = digest
            mod.set_content(i, digest.encode("ascii"), path)
        max_pixels = cfg["max_image_pixels"]
        _encode_all(mod, lambda path: decode_image(path, max_pixels), cfg["image_batch_size"], progress)
        mods.append(mod)
    elif cfg["image_encoder"]:
        log.info("no image folder given: image features are not extracted")

    arrays: dict[str, np.ndarray] = {}
    modalities: dict[str, Any] = {}
    for mod in mods:
        arrays[mod.name], filled = _assemble(mod, counts)
        modalities[mod.name] = {
            "file": f"{mod.name}_feat.npy",
            "dim": mod.encoder.dim,
            "encoder": mod.encoder.describe(),
            "unique_contents": len(mod.payloads),
            "encoded": mod.encoded,
            "from_cache": mod.cached,
            "mean_filled": filled,
            "encode_seconds": round(mod.seconds, 3),
            "items_per_second": round(mod.encoded / mod.seconds, 2) if mod.seconds > 0 else None,
        }

    fingerprint = hashlib.sha256(catalogue.sha256.encode("ascii"))
    for item, digest in zip(items, image_digests, strict=True):
        fingerprint.update(f"\n{item.asin}\t{digest}".encode())
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "items": len(items),
        "items_file": ITEMS_FILE,
        "modalities": modalities,
        "counts": counts,
        "bad_line_examples": catalogue.examples,
        "input": {
            "meta": str(Path(meta_path)),
            "meta_sha256": catalogue.sha256,
            "image_dir": None if image_root is None else str(image_root),
            "fingerprint": fingerprint.hexdigest(),
        },
        "device": mods[0].encoder.device if mods else None,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    _write_outputs(out, catalogue, arrays, sidecar)
    problems = {k: v for k, v in counts.items() if v}
    log.info("extracted %d item(s) into %s; problems: %s", len(items), out, problems or "none")
    return sidecar


def _write_outputs(out: Path, catalogue: Catalogue, arrays: dict[str, np.ndarray], sidecar: dict) -> None:
    # The sidecar goes first and comes back last: while the others are replaced the folder
    # reads as incomplete rather than as a mix of two runs.
    (out / SIDECAR).unlink(missing_ok=True)
    asins = "".join(f"{item.asin}\n" for item in catalogue.items).encode("utf-8")
    write_atomic(out / ITEMS_FILE, lambda fh: fh.write(asins))
    for name in ("text", "image"):
        path = out / f"{name}_feat.npy"
        if name in arrays:
            write_atomic(path, lambda fh, a=arrays[name]: np.save(fh, a, allow_pickle=False))
        else:
            path.unlink(missing_ok=True)
    payload = (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode("utf-8")
    write_atomic(out / SIDECAR, lambda fh: fh.write(payload))


def read_sidecar(out_dir: str | Path) -> dict[str, Any]:
    """The ``features.json`` of a finished extraction (a DataError if absent or malformed)."""
    path = Path(out_dir) / SIDECAR
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "not found: the extraction did not finish (or this is not its output)") from None
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise DataError(path, f"expected a {SIDECAR_FORMAT} sidecar")
    return data
