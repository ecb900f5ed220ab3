"""Finding and decoding item images safely.

* An image reference is looked up inside the image folder only: the path is resolved
  (symlinks included) and must stay inside the folder, else it counts as ``escaped_path``.
  Without a reference, or when it is absent, ``<asin>.<ext>`` is tried.
* Decoding is restricted to raster formats Pillow parses itself (no EPS/PDF, which would run
  Ghostscript), the pixel count is checked from the header before any pixel is decoded, and
  every decoder failure becomes a reason (``zero_byte``, ``unsupported``, ``corrupt``,
  ``too_large``), never an exception.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

SAFE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
ASIN_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# Signatures of the formats above: a file that starts like one but does not decode is corrupt,
# anything else is an unsupported format.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

MISSING, ESCAPED = "missing_image", "escaped_path"
ZERO_BYTE, UNSUPPORTED, CORRUPT, TOO_LARGE = "zero_byte", "unsupported", "corrupt", "too_large"
IMAGE_PROBLEMS = (MISSING, ESCAPED, ZERO_BYTE, UNSUPPORTED, CORRUPT, TOO_LARGE)


def resolve_image(root: Path, ref: str | None, asin: str) -> tuple[Path | None, str | None]:
    """``(resolved file, None)`` or ``(None, reason)``; ``root`` must already be resolved."""
    candidates = ([ref] if ref else []) + [asin + ext for ext in ASIN_EXTENSIONS]
    for name in candidates:
        try:
            path = root / name
            if not os.path.lexists(path):
                continue
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            # Broken or looping symlink, or a name with a NUL byte: nothing readable there.
            continue
        if not resolved.is_relative_to(root):
            return None, ESCAPED
        if resolved.is_file():
            return resolved, None
    return None, MISSING


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, streamed."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def decode_image(path: Path, max_pixels: int):
    """``(RGB PIL image, None)`` or ``(None, reason)``."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
    except OSError:
        return None, MISSING
    if not data:
        return None, ZERO_BYTE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SAFE_FORMATS)
            if image.width * image.height > max_pixels:
                return None, TOO_LARGE
            image.load()
            return image.convert("RGB"), None
    except UnidentifiedImageError:
        looks_supported = data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
        return None, CORRUPT if looks_supported else UNSUPPORTED
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, TOO_LARGE
    except Exception:  # noqa: BLE001
        # Malformed files make Pillow's parsers raise many kinds of errors (OSError, SyntaxError,
        # struct.error, IndexError, ...): all of them mean this file cannot be used.
        return None, CORRUPT
