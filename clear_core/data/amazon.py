"""Raw Amazon 2014 review and metadata dumps (He & McAuley, WWW'16).

* ``reviews_<Cat>_5.json.gz``: one JSON object a line with ``reviewerID``, ``asin``,
  ``overall`` (rating) and ``unixReviewTime``.
* ``meta_<Cat>.json.gz``: one record a line with ``asin``, ``title``, ``description``,
  ``brand``, ``categories``, ``imUrl``; the 2014 files are **Python literals** (single
  quotes), not JSON. Each line is tried with ``json.loads`` first and ``ast.literal_eval``
  second (which only builds literals; nothing is ever evaluated).

Both may be gzip-compressed or plain text (detected from the magic bytes, not the name).
A bad line is a :class:`DataError` naming the file and line, or, with ``on_error="skip"``,
skipped and counted.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clear_core.errors import DataError

log = logging.getLogger(__name__)

REVIEW_USER, REVIEW_ITEM, REVIEW_RATING, REVIEW_TIME = "reviewerID", "asin", "overall", "unixReviewTime"
ON_ERROR = ("raise", "skip")


def open_text(path: str | Path) -> io.TextIOBase:
    """Open gzip or plain text by content (``\\x1f\\x8b`` magic), as UTF-8."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def parse_record(text: str) -> Any:
    """A JSON object, else a Python literal (``ast.literal_eval``), else ``ValueError``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    except RecursionError:
        # json's C decoder recurses once per "[" or "{": a line of 100,000 "[" overflows the
        # stack. Such a line is neither a review nor a literal the fallback could read.
        raise ValueError(f"nested too deeply to parse ({len(text):,} characters)") from None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        raise ValueError(f"neither JSON nor a Python literal ({type(exc).__name__}: {exc})") from None


@dataclass
class LineErrors:
    """Lines skipped under ``on_error="skip"``: how many, and the first few with reasons."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.examples) < 10:
            self.examples.append(f"line {line}: {reason}")


def iter_records(
    path: str | Path, *, on_error: str = "raise", errors: LineErrors | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line holding a mapping."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    path = Path(path)
    errors = errors if errors is not None else LineErrors()
    try:
        with open_text(path) as fh:
            for number, line in enumerate(fh, start=1):
                text = line.strip()
                if not text:
                    continue
                try:
                    record = parse_record(text)
                    if not isinstance(record, dict):
                        raise ValueError(f"expected an object/dict, got {type(record).__name__}")
                except ValueError as exc:
                    if on_error == "raise":
                        raise DataError(path, str(exc), line=number) from None
                    errors.add(number, str(exc))
                    continue
                yield number, record
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class Reviews:
    """Review rows as arrays; ``rating``/``timestamp`` are NaN / -1 where a line lacks them."""

    user: np.ndarray  # raw reviewerID strings
    item: np.ndarray  # raw asin strings
    rating: np.ndarray
    timestamp: np.ndarray
    duplicates_dropped: int = 0
    bad_lines: int = 0

    def __len__(self) -> int:
        return len(self.user)

    @property
    def has_timestamps(self) -> bool:
        return bool(len(self.timestamp)) and bool((self.timestamp >= 0).all())


def read_reviews(path: str | Path, *, on_error: str = "raise") -> Reviews:
    """Read a reviews file; repeated (reviewer, asin) pairs keep their first line."""
    path = Path(path)
    errors = LineErrors()
    users, items, ratings, times = [], [], [], []
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for number, rec in iter_records(path, on_error=on_error, errors=errors):
        user, item = rec.get(REVIEW_USER), rec.get(REVIEW_ITEM)
        problem = None
        if not isinstance(user, str) or not user:
            problem = f"missing or empty {REVIEW_USER!r} (has keys {sorted(rec)[:8]})"
        elif not isinstance(item, str) or not item:
            problem = f"missing or empty {REVIEW_ITEM!r} (has keys {sorted(rec)[:8]})"
        rating = rec.get(REVIEW_RATING)
        stamp = rec.get(REVIEW_TIME)
        if problem is None and rating is not None and not isinstance(rating, (int, float)):
            problem = f"{REVIEW_RATING!r} is {rating!r}; expected a number"
        if problem is None and stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool)):
            problem = f"{REVIEW_TIME!r} is {stamp!r}; expected an integer (seconds since 1970)"
        if problem is not None:
            if on_error == "raise":
                raise DataError(path, problem, line=number)
            errors.add(number, problem)
            continue
        if (user, item) in seen:
            duplicates += 1
            continue
        seen.add((user, item))
        users.append(user)
        items.append(item)
        ratings.append(np.nan if rating is None else float(rating))
        times.append(-1 if stamp is None else int(stamp))
    if not users:
        raise DataError(path, "no review rows found; expected JSON lines with reviewerID and asin")
    if errors.count:
        log.warning("%s: skipped %d bad line(s): %s", path, errors.count, "; ".join(errors.examples))
    if duplicates:
        log.info("%s: dropped %d repeated (reviewerID, asin) line(s)", path, duplicates)
    return Reviews(
        user=np.asarray(users),
        item=np.asarray(items),
        rating=np.asarray(ratings, dtype=np.float32),
        timestamp=np.asarray(times, dtype=np.int64),
        duplicates_dropped=duplicates,
        bad_lines=errors.count,
    )


def iter_meta(path: str | Path, *, on_error: str = "raise") -> Iterator[dict[str, Any]]:
    """Metadata records (each has a non-empty ``asin``); JSON or Python-literal lines."""
    path = Path(path)
    for number, rec in iter_records(path, on_error=on_error):
        asin = rec.get("asin")
        if not isinstance(asin, str) or not asin:
            if on_error == "raise":
                raise DataError(path, "record without an 'asin' string", line=number)
            continue
        yield rec


def read_meta(path: str | Path, *, on_error: str = "raise") -> dict[str, dict[str, Any]]:
    """``{asin: record}``; a repeated asin keeps its first record."""
    out: dict[str, dict[str, Any]] = {}
    for rec in iter_meta(path, on_error=on_error):
        out.setdefault(rec["asin"], rec)
    return out
