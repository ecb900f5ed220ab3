"""One module per CLI command group; each exposes ``register(subparsers)``."""

import argparse
import re

#: The one spelling of a device on every command that trains or encodes.
DEVICE_HELP = "auto | cpu | cuda | cuda:N"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def device_arg(value: str) -> str:
    """``--device`` of every command: auto, cpu, cuda or cuda:N (argparse exits 2 otherwise)."""
    if not _DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"expected {DEVICE_HELP}, got {value!r}")
    return value
