"""The package pins of ``constraints.txt`` (the freeze that `.venv` and the images install)."""

from __future__ import annotations

from pathlib import Path

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


def constraint_pins() -> dict[str, str]:
    """``{package name, lower case: pinned version}`` for every ``name==version`` line."""
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins
