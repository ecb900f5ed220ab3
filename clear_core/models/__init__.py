"""Model registry: name -> class, and :func:`build_model` which validates keyword arguments.

Registering a model is a decorator on its class; the CLI, the sweep and the tests find it
by name. Defaults come from ``configs/models/<name>.yaml``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from clear_core.config import load_defaults, validate_fields
from clear_core.data.dataset import Dataset
from clear_core.errors import ConfigError
from clear_core.models.base import Recommender
from clear_core.param_rules import check_ranges

_REGISTRY: dict[str, type[Recommender]] = {}

# Modules that define models; imported lazily so that `import clear_core.models` is cheap.
_MODEL_MODULES = (
    "clear_core.models.mf",
    "clear_core.models.lightgcn",
    "clear_core.models.vbpr",
    "clear_core.models.freedom",
    "clear_core.models.clear",
    "clear_core.models.layergcn",
    "clear_core.models.mmgcn",
    "clear_core.models.dualgnn",
    "clear_core.models.lattice",
    "clear_core.models.slmrec",
    "clear_core.models.bm3",
    "clear_core.models.mgcn",
    "clear_core.models.lgmrec",
    "clear_core.models.mentor",
    "clear_core.models.mmssl",
)


def register(cls: type[Recommender]) -> type[Recommender]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    for module in _MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # Only tolerate the model module itself being absent, never a broken import inside.
            if exc.name != module:
                raise


def available_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[Recommender]:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"model: unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def resolve_params(
    name: str, overrides: Mapping[str, Any] | None = None, *, check_values: bool = True
) -> dict[str, Any]:
    """Defaults from ``configs/models/<name>.yaml`` with ``overrides`` applied, type-checked and,
    with ``check_values``, range-checked (:mod:`clear_core.param_rules`)."""
    cls = model_class(name)
    merged = {**load_defaults("models", name), **dict(overrides or {})}
    params = validate_fields(merged, cls.params, source=f"model {name!r}")
    if check_values:
        check_ranges(params, source=f"model {name!r}")
    return params


def build_model(
    name: str, dataset: Dataset, overrides: Mapping[str, Any] | None = None
) -> Recommender:
    cls = model_class(name)
    # Every constructor checks the same ranges itself, together with what needs the data, so
    # that one error lists all of them.
    params = resolve_params(name, overrides, check_values=False)
    if cls.needs_features and not dataset.features:
        raise ConfigError(f"model {name!r} needs modality features; dataset {dataset.name!r} has none")
    return cls(dataset, **params)
