"""Content-hash cache of encoder outputs, so a re-run costs nothing and a killed run resumes.

Layout: ``<root>/<sha256(signature)[:16]>/shard-*.npz``, each shard holding ``keys``
(``(n, 32)`` uint8 sha256 digests) and ``vectors`` (``(n, dim)`` float32), plus
``signature.json`` naming the encoder. A shard is written to a temporary name and renamed,
so a run killed at any moment leaves only whole shards; :meth:`EmbeddingCache.compact` merges
them at the end of a run. Shards are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path

import numpy as np

from clear_core.atomic_io import write_atomic, write_bytes_atomic

log = logging.getLogger(__name__)

KEY_BYTES = 32


def content_key(signature: str, content: bytes) -> bytes:
    """sha256(encoder signature + NUL + content): the cache key of one item's content."""
    return hashlib.sha256(signature.encode("utf-8") + b"\x00" + content).digest()


class EmbeddingCache:
    """Vectors by content key for one encoder signature."""

    def __init__(self, root: str | Path, signature: str, dim: int) -> None:
        self.dim = int(dim)
        self.dir = Path(root) / hashlib.sha256(signature.encode("utf-8")).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "signature.json"
        if not info.exists():
            try:
                readable = json.loads(signature)
            except ValueError:
                readable = {"signature": signature}  # a plug-in's own, non-JSON signature
            write_bytes_atomic(info, (json.dumps(readable, indent=2) + "\n").encode("utf-8"))
        self._rows: dict[bytes, np.ndarray] = {}
        self.shards_written = 0
        for shard in sorted(self.dir.glob("shard-*.npz")):
            self._load(shard)

    def _load(self, shard: Path) -> None:
        try:
            with np.load(shard, allow_pickle=False) as npz:
                keys, vectors = npz["keys"], npz["vectors"]
        except FileNotFoundError:
            return  # compacted away by another run meanwhile; its merged shard is read instead
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cache shard %s is unreadable (%s); ignoring it", shard, exc)
            return
        if keys.ndim != 2 or keys.shape[1] != KEY_BYTES or vectors.shape != (len(keys), self.dim):
            log.warning("cache shard %s has unexpected shapes %s/%s; ignoring it", shard, keys.shape, vectors.shape)
            return
        for k, v in zip(keys, vectors, strict=True):
            self._rows[k.tobytes()] = v

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: bytes) -> bool:
        return key in self._rows

    def get(self, key: bytes) -> np.ndarray | None:
        return self._rows.get(key)

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Store and flush one shard now (atomically)."""
        if not keys:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"expected vectors of shape {(len(keys), self.dim)}, got {vectors.shape}")
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        self._save(self.dir / f"shard-{uuid.uuid4().hex}.npz", key_arr, vectors)
        self.shards_written += 1
        for k, v in zip(keys, vectors, strict=True):
            self._rows[k] = v

    def compact(self) -> None:
        """Merge all shards into one, so later runs open one file instead of one per batch."""
        shards = sorted(self.dir.glob("shard-*.npz"))
        if len(shards) <= 1:
            return
        keys = list(self._rows)
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        vectors = np.stack([self._rows[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)
        merged = self.dir / f"shard-{uuid.uuid4().hex}.npz"
        self._save(merged, key_arr, vectors)
        for shard in shards:
            shard.unlink(missing_ok=True)

    @staticmethod
    def _save(path: Path, keys: np.ndarray, vectors: np.ndarray) -> None:
        write_atomic(path, lambda fh: np.savez(fh, keys=keys, vectors=vectors))

