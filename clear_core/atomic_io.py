"""Atomic file writes: write beside the target, flush, then rename.

A reader (or a resumed run) sees either the old file or the whole new one, never half of one,
and a failed write leaves nothing behind. Every module that writes a result goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a binary temporary file beside ``path``, then rename it there.

    The temporary file is unique (concurrent writers of the same target never share it) and
    hidden (``.<name>.<random>.tmp``); it is removed if ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Pretty, key-sorted JSON (stable bytes for the same content), newline-terminated."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
