"""Item metadata for feature extraction: one record per asin, its text and its image reference.

Reads Amazon-style metadata (``meta_<Cat>.json.gz``: JSON or Python-literal lines, gz or plain;
see :mod:`clear_core.data.amazon`) line by line from bytes, so that one bad line is counted and
skipped instead of stopping the run:

* ``bad_lines``: not JSON nor a Python literal, not a mapping, or no non-empty ``asin`` string
  without whitespace or control characters;
* ``non_utf8_lines``: bytes that are not UTF-8 (decoded with U+FFFD replacements and kept);
* ``duplicate_asin``: a later record of an asin already seen (the first one wins).

The item text is title + brand + categories + description, as in the MMRec/LATTICE
preprocessing, whitespace collapsed. The image reference is a local path
(``image_path``/``imPath``/``image``), else the ``imUrl`` file name; where it points is decided
by the extraction stage, which checks containment in the image folder.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_core.data.amazon import parse_record
from clear_core.errors import DataError

log = logging.getLogger(__name__)

TEXT_FIELDS = ("title", "brand", "categories", "description")
LOCAL_IMAGE_FIELDS = ("image_path", "imPath", "image")
URL_IMAGE_FIELD = "imUrl"
# A metadata line longer than this is refused unparsed: literal_eval of megabytes is slow and
# no real record comes near it.
MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class CatalogueItem:
    asin: str
    text: str  # "" when the record has no usable text
    image_ref: str | None  # local path or URL file name, unresolved
    line: int


@dataclass
class Catalogue:
    """Items in first-seen order, the input file's sha256 and what was skipped, counted."""

    path: str
    items: list[CatalogueItem]
    sha256: str
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def _strings(value: Any) -> Iterator[str]:
    """Strings inside a value that may be a string or (nested) lists of them; others ignored."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def item_text(record: dict[str, Any]) -> str:
    """title + brand + categories (unique, in order) + description; "" when all are empty."""
    parts: list[str] = []
    for key in TEXT_FIELDS:
        values = list(_strings(record.get(key)))
        if key == "categories":
            values = list(dict.fromkeys(values))
        parts.extend(values)
    return " ".join(" ".join(parts).split())


def image_reference(record: dict[str, Any]) -> str | None:
    for key in LOCAL_IMAGE_FIELDS:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    url = record.get(URL_IMAGE_FIELD)
    if isinstance(url, str) and url.strip():
        # Only the file name of a URL is looked up (in the image folder): never fetched.
        name = url.strip().split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return name or None
    return None


def _open_bytes(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _bounded_lines(fh) -> Iterator[tuple[bytes, bool]]:
    """``(line, too_long)``; an over-long line is consumed in chunks, never held whole."""
    while True:
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line, False
            continue
        while line and not line.endswith(b"\n"):
            line = fh.readline(MAX_LINE_BYTES)
        yield b"", True


def read_catalogue(path: str | Path) -> Catalogue:
    """Read a metadata file; bad lines are counted, never fatal. A missing or unreadable file,
    or one with no usable record at all, is a :class:`DataError`."""
    path = Path(path)
    counts = {"bad_lines": 0, "non_utf8_lines": 0, "duplicate_asin": 0}
    examples: list[str] = []
    items: list[CatalogueItem] = []
    seen: set[str] = set()
    digest = hashlib.sha256()

    def bad(number: int, reason: str) -> None:
        counts["bad_lines"] += 1
        if len(examples) < 10:
            examples.append(f"line {number}: {reason}")

    try:
        fh = _open_bytes(path)
    except FileNotFoundError:
        raise DataError(path, "metadata file not found") from None
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc})") from None
    try:
        with fh:
            for number, (raw, too_long) in enumerate(_bounded_lines(fh), start=1):
                digest.update(raw)
                if too_long:
                    bad(number, f"line longer than {MAX_LINE_BYTES} bytes")
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    counts["non_utf8_lines"] += 1
                    text = raw.decode("utf-8", errors="replace")
                text = text.strip()
                if not text:
                    continue
                try:
                    record = parse_record(text)
                except ValueError as exc:
                    bad(number, str(exc)[:200])
                    continue
                if not isinstance(record, dict):
                    bad(number, f"expected an object/dict, got {type(record).__name__}")
                    continue
                asin = record.get("asin")
                if not isinstance(asin, str) or not asin.strip():
                    bad(number, "no non-empty 'asin' string")
                    continue
                asin = asin.strip()
                if any(c.isspace() or not c.isprintable() for c in asin):
                    # items.txt holds one asin a line: a line break inside one would shift every row.
                    bad(number, f"asin {asin!r} contains whitespace or control characters")
                    continue
                if asin in seen:
                    counts["duplicate_asin"] += 1
                    continue
                seen.add(asin)
                items.append(CatalogueItem(asin, item_text(record), image_reference(record), number))
    except (OSError, EOFError) as exc:
        # A truncated gzip stream: keep what was read, say so.
        bad(-1, f"stream ended early ({type(exc).__name__}: {exc})")
        log.warning("%s: stream ended early (%s); %d item(s) read before it", path, exc, len(items))
    if not items:
        raise DataError(
            path,
            "no usable metadata record; expected JSON or Python-literal lines with an 'asin' "
            + (f"(first problems: {'; '.join(examples[:3])})" if examples else "(file is empty)"),
        )
    if counts["bad_lines"]:
        log.warning("%s: skipped %d bad line(s): %s", path, counts["bad_lines"], "; ".join(examples))
    if counts["duplicate_asin"]:
        log.info("%s: %d repeated asin(s), first record kept", path, counts["duplicate_asin"])
    return Catalogue(str(path), items, digest.hexdigest(), counts, examples)
