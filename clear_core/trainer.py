"""BPR training loop: seeded, early-stopped on validation, checkpointed and resumable.

(Interface fixed here; implementation lands with the foundation issue.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_core.config import load_defaults, validate_fields
from clear_core.data.dataset import Dataset

TRAIN_SCHEMA: dict[str, Any] = {
    "learning_rate": float,
    "batch_size": int,
    "max_epochs": int,
    "patience": int,
    "valid_metric": str,
    "topk": list,
    "eval_batch_size": int,
    "seed": int,
    "device": str,
}


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float
    batch_size: int
    max_epochs: int
    patience: int
    valid_metric: str
    topk: list
    eval_batch_size: int
    seed: int
    device: str

    @classmethod
    def resolve(cls, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """``configs/train.yaml`` with ``overrides`` applied; every bad field reported at once."""
        merged = {**load_defaults("train", "train"), **(overrides or {})}
        return cls(**validate_fields(merged, TRAIN_SCHEMA, source="train config"))


@dataclass
class EpochReport:
    """What the trainer knows after an epoch; passed to ``on_epoch_end``."""

    epoch: int
    train_loss: float
    valid: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    eval_seconds: float
    is_best: bool
    best_epoch: int
    best_valid: float
    checkpoint_path: Path | None = None


@dataclass
class TrainResult:
    config: dict[str, Any]
    model_name: str
    model_params: dict[str, Any]
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int
    stopped_early: bool
    median_train_seconds: float
    median_eval_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    dataset_fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


def fit(
    dataset: Dataset,
    model_name: str,
    model_params: dict[str, Any] | None,
    config: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[EpochReport], bool | None] | None = None,
) -> TrainResult:
    """Train ``model_name`` on ``dataset``; returns test metrics at the best-validation epoch.

    If ``checkpoint_dir`` holds a checkpoint of the same run, training resumes from it
    (model, optimizer, RNG states, early-stopping state, history). ``on_epoch_end`` is
    called after every epoch; returning True stops training.
    """
    raise NotImplementedError
