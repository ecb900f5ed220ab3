"""Trainer checkpoints: their names, the run signature, how they are saved, found and loaded.

A checkpoint folder holds two files:

* ``last.pt`` (:data:`LAST_NAME`), written after every epoch: everything a resumed run needs
  (weights, optimizer, RNG states, early-stopping state, history) plus the *run signature*, the
  model, its parameters, the training settings and the dataset fingerprint that must match for
  the file to belong to a run;
* ``best.pt`` (:data:`BEST_NAME`), written on each strict validation improvement: the epoch, the
  weights and the model's extra state only.

Files are written atomically and read with ``weights_only=True``, so loading never runs code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from clear_core.atomic_io import write_atomic
from clear_core.errors import ConfigError

if TYPE_CHECKING:
    from clear_core.data.dataset import Dataset
    from clear_core.models.base import Recommender
    from clear_core.trainer import TrainConfig

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
FORMAT = 1

# Settings that change how a run is executed, not what it computes: a checkpoint stays valid
# when they differ.
_FREE_SETTINGS = ("max_epochs", "device", "eval_batch_size")


def run_signature(
    dataset: Dataset, model_name: str, model_params: Mapping[str, Any], config: TrainConfig
) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this run (max_epochs and device may differ)."""
    train = asdict(config)
    for free in _FREE_SETTINGS:
        train.pop(free)
    return {
        "model": model_name,
        "model_params": dict(model_params),
        "train": train,
        "dataset": dataset.fingerprint or dataset.name,
    }


def save(payload: Mapping[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` atomically (a crash leaves the previous file intact)."""
    write_atomic(path, lambda handle: torch.save(dict(payload), handle))


def read(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The dictionary saved in ``path``; an unreadable or foreign file is a ConfigError."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which and why
        raise ConfigError(f"checkpoint {path}: cannot be read ({str(exc).splitlines()[0]})") from None


def load_for_resume(path: Path, device: torch.device, signature: Mapping[str, Any]) -> dict[str, Any]:
    """The state in ``last.pt`` for resuming the run whose signature is ``signature``; a file of
    another format or another run is a ConfigError listing every field that differs."""
    state = read(path, device)
    if state.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {path}: unknown format {state.get('format')!r}")
    saved = json.loads(state["signature"])
    expected = json.loads(json.dumps(signature))
    if saved != expected:
        diffs = [
            f"checkpoint {path}: {key} differs (checkpoint {saved.get(key)!r}, now {value!r})"
            for key, value in expected.items()
            if saved.get(key) != value
        ]
        raise ConfigError(diffs + ["use another --checkpoint-dir or remove the old one"])
    return state


def find(checkpoint: str | Path) -> Path:
    """The checkpoint file ``checkpoint`` names: the file itself, or in a folder ``best.pt``
    (the weights of the best-validation epoch) before ``last.pt``, directly in the folder first,
    then anywhere below it (a trial's folder holds them in ``trainer/``)."""
    path = Path(checkpoint)
    if path.is_dir():
        found = [path / n for n in (BEST_NAME, LAST_NAME) if (path / n).exists()]
        found += sorted(path.rglob(BEST_NAME)) + sorted(path.rglob(LAST_NAME))
        if not found:
            raise ConfigError(f"checkpoint {path}: no {BEST_NAME} or {LAST_NAME} in this folder")
        return found[0]
    if not path.exists():
        raise ConfigError(f"checkpoint {path}: file not found")
    return path


def saved_signature(path: Path) -> dict[str, Any]:
    """The run signature of the checkpoint at ``path``: its own (``last.pt``) or, for a
    ``best.pt``, the one of the ``last.pt`` beside it."""
    signature = read(path).get("signature")
    if signature is None and path.name != LAST_NAME and (path.parent / LAST_NAME).exists():
        signature = read(path.parent / LAST_NAME).get("signature")
    if signature is None:
        raise ConfigError(f"checkpoint {path}: no run signature here or in {LAST_NAME} beside it")
    return json.loads(signature)


def load_trained_model(
    dataset: Dataset,
    checkpoint: str | Path,
    *,
    device: torch.device | str = "cpu",
    model: str | None = None,
    model_params: Mapping[str, Any] | None = None,
) -> tuple[Recommender, int, Path]:
    """A model built for ``dataset`` with the weights of ``checkpoint``, in eval mode:
    (model, epoch, file).

    ``model`` and ``model_params`` name the model; when ``model`` is None both come from the
    checkpoint's run signature (:func:`saved_signature`)."""
    from clear_core.models import build_model

    path = find(checkpoint)
    if model is None:
        signature = saved_signature(path)
        trained_on = signature.get("dataset")
        if trained_on and trained_on not in (dataset.fingerprint, dataset.name):
            raise ConfigError(
                f"checkpoint {path}: trained on another dataset (fingerprint {str(trained_on)[:12]}...), "
                f"not {dataset.name!r} (fingerprint {(dataset.fingerprint or '')[:12]}...); pass the "
                "dataset folder the model was trained on"
            )
        model, model_params = signature["model"], signature["model_params"]
    net = build_model(model, dataset, dict(model_params or {})).to(device)
    state = read(path, device)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint {path}: does not fit model {model!r} on {dataset.name!r} ({str(exc).splitlines()[0]})"
        ) from None
    net.load_extra_state(state.get("extra", {}))
    net.eval()
    return net, int(state.get("epoch", 0)), path
