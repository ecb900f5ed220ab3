"""Typed configuration, validated at the edge.

The YAML files under ``configs/`` are the one home of defaults. This module finds them,
merges user overrides onto them and checks every field against a declared type, so that a
single :class:`~clear_core.errors.ConfigError` lists every bad field at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from clear_core.errors import ConfigError

CONFIG_DIR_ENV = "CLEARREC_CONFIG_DIR"


def config_dir() -> Path:
    """Where the YAML defaults live: ``$CLEARREC_CONFIG_DIR`` when set, else the configs shipped
    with the package, ``clear_core/configs``.

    The repository's ``configs/`` is the one source: in a checkout ``clear_core/configs`` is a
    link to it (resolved here, so the folder's parent is the repository root, against which the
    relative ``path`` of a dataset config is read); a wheel holds a copy of it made at build time
    (``package-data`` in pyproject.toml), so an installed clearrec needs no variable.
    """
    env = os.environ.get(CONFIG_DIR_ENV)
    path = Path(env) if env else (Path(__file__).resolve().parent / "configs").resolve()
    if not path.is_dir():
        raise ConfigError(
            f"configuration folder {path} does not exist; set {CONFIG_DIR_ENV} to the clearrec "
            "configs/ folder (or reinstall clearrec: its wheel ships them)"
        )
    return path


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_defaults(kind: str, name: str) -> dict[str, Any]:
    """Defaults for ``kind`` (``models``, ``datasets``, ``sweeps``) named ``name``, or ``train``."""
    base = config_dir()
    path = base / f"{kind}.yaml" if kind == "train" else base / kind / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (base / kind).glob("*.yaml")) if kind != "train" else []
        raise ConfigError(f"unknown {kind[:-1] if kind.endswith('s') else kind} {name!r}; known: {', '.join(known) or 'none'}")
    return load_yaml(path)


# A number as people write it. YAML 1.1 (PyYAML) reads a float only with a dot and a signed
# exponent, so `1e-4`, `1E-3` and `5e3` would stay strings and be refused as "expected float".
_NUMBER = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


def parse_value(text: str) -> Any:
    """Parse a ``--set key=value`` right-hand side with YAML scalar rules (true, [1,2], null),
    reading numbers as users write them: ``1e-4``, ``1E-3``, ``.5``, ``5e3``."""
    stripped = text.strip()
    if _NUMBER.match(stripped):
        # int() for plain integers: float() would turn 12345678901234567891 into 1.2e19.
        return int(stripped) if stripped.lstrip("+-").isdigit() else float(stripped)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a pair without ``=`` is a ConfigError."""
    out: dict[str, Any] = {}
    bad = []
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            bad.append(f"--set {pair!r}: expected key=value")
            continue
        out[key.strip()] = parse_value(value)
    if bad:
        raise ConfigError(bad)
    return out


def _type_ok(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    if isinstance(expected, tuple):
        return any(_type_ok(value, e) for e in expected)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is type(None):
        return value is None
    if expected is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join(_type_name(e) for e in expected)
    return "null" if expected is type(None) else getattr(expected, "__name__", str(expected))


def validate_fields(
    values: Mapping[str, Any],
    schema: Mapping[str, Any],
    *,
    source: str,
    required: bool = True,
) -> dict[str, Any]:
    """Check ``values`` against ``schema`` (field -> type or tuple of types).

    Unknown fields, missing fields (when ``required``) and wrong types are collected and
    raised together. Integers are accepted where floats are expected and converted.
    """
    problems = []
    for key in values:
        if key not in schema:
            problems.append(f"{key}: unknown field; known fields: {', '.join(sorted(schema))}")
    out: dict[str, Any] = {}
    for key, expected in schema.items():
        if key not in values:
            if required:
                problems.append(f"{key}: missing (expected {_type_name(expected)})")
            continue
        value = values[key]
        if not _type_ok(value, expected):
            problems.append(
                f"{key}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}"
            )
            continue
        if expected is float and isinstance(value, int):
            value = float(value)
        out[key] = value
    if problems:
        raise ConfigError(problems, source=source)
    return out
