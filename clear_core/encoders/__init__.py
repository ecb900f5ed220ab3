"""Content encoders by name: ``minilm`` (text, 384-d) and ``efficientnet-lite0`` (image, 1280-d).

Adding an encoder (CLIP, a torchvision CNN, ...) takes one class: subclass
:class:`~clear_core.encoders.base.Encoder` and decorate it with :func:`register`; if it lives
in a new module of this package, add that module to ``_ENCODER_MODULES``. Options come from
``configs/extract.yaml`` (``encoders: <name>: {...}``) and are passed to the constructor.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from clear_core.config import config_dir, load_yaml
from clear_core.encoders.base import (
    EXTRACT_EXTRA_HINT,
    Encoder,
    EncoderUnavailableError,
    resolve_device,
)
from clear_core.errors import ConfigError

__all__ = [
    "EXTRACT_EXTRA_HINT",
    "Encoder",
    "EncoderUnavailableError",
    "available_encoders",
    "build_encoder",
    "default_options",
    "encoder_class",
    "register",
    "resolve_device",
]

_REGISTRY: dict[str, type[Encoder]] = {}

# Imported lazily: the modules only import their heavy packages when an encoder is built.
_ENCODER_MODULES = (
    "clear_core.encoders.minilm",
    "clear_core.encoders.efficientnet_lite",
)


def register(cls: type[Encoder]) -> type[Encoder]:
    if not cls.name or cls.modality not in ("text", "image") or cls.dim <= 0:
        raise TypeError(f"{cls.__name__}: an encoder needs a name, a modality (text|image) and dim > 0")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    for module in _ENCODER_MODULES:
        importlib.import_module(module)


def available_encoders(modality: str | None = None) -> list[str]:
    _load_all()
    return sorted(n for n, c in _REGISTRY.items() if modality in (None, c.modality))


def encoder_class(name: str, modality: str | None = None) -> type[Encoder]:
    _load_all()
    cls = _REGISTRY.get(name)
    if cls is None or (modality is not None and cls.modality != modality):
        field = f"{modality}_encoder" if modality else "encoder"
        raise ConfigError(
            f"{field}: unknown encoder {name!r}; available: {', '.join(available_encoders(modality))}"
        )
    return cls


def default_options(name: str) -> dict[str, Any]:
    """The encoder's options from ``configs/extract.yaml`` (``encoders: <name>:``)."""
    section = load_yaml(config_dir() / "extract.yaml").get("encoders") or {}
    options = section.get(name) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"encoders.{name}: expected a mapping of options, got {options!r}", source="extract.yaml")
    return dict(options)


def build_encoder(name: str, *, modality: str | None = None, device: str = "cpu", **options: Any) -> Encoder:
    """Load the encoder registered as ``name`` on ``device``; ``options`` override the YAML ones."""
    cls = encoder_class(name, modality)
    merged = {**default_options(name), **options}
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = sorted(k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = [k for k in merged if k not in known and not accepts_any]
    if unknown:
        raise ConfigError(
            [f"encoders.{name}.{k}: unknown option; known: {', '.join(known) or 'none'}" for k in unknown]
        )
    return cls(device=device, **merged)
