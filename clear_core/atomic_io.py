"""Atomic file writes: write beside the target, flush, then rename.

A reader (or a resumed run) sees either the old file or the whole new one, never half of one,
and a failed write leaves nothing behind. Every module that writes a result goes through here.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from clear_core.errors import DiskFullError

# Out of space: the device is full, or the user's quota is.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_cause(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT ``OSError`` behind ``exc``, if any.

    Writers that wrap the OS error hide it: ``torch.save`` into a file handle raises
    ``RuntimeError: [enforce fail at inline_container.cc...]`` with the real cause only as the
    exception's context. So the whole cause/context chain is searched.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return current
        current = current.__cause__ or current.__context__
    return None


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a binary temporary file beside ``path``, then rename it there.

    The temporary file is unique (concurrent writers of the same target never share it) and
    hidden (``.<name>.<random>.tmp``); it is removed if ``write`` raises. Running out of space
    (at the write, the flush, the fsync or the rename) is raised as one
    :class:`~clear_core.errors.DiskFullError` naming ``path``, whatever the writer wrapped it in.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if disk_full_cause(exc) is not None:
            raise DiskFullError(path) from None
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if disk_full_cause(exc) is not None:
            raise DiskFullError(path) from None
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Pretty, key-sorted JSON (stable bytes for the same content), newline-terminated."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
