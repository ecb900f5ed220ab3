"""BPR training loop: seeded, early-stopped on validation, checkpointed and resumable.

One epoch: shuffle the training pairs, draw one uniform negative per pair
(:mod:`clear_core.sampling`), take Adam steps on mini-batches of BPR triples, then evaluate
validation and test with full ranking (:mod:`clear_core.evaluation`). Early stopping watches
``valid_metric`` on validation: the best only moves on a strict improvement and training stops
after ``patience + 1`` epochs without one. The test metrics reported are those of the
best-validation epoch.

Determinism: the model is initialised from ``seed`` inside a forked RNG scope (the caller's
global RNG state is left as it was) and every random draw of the loop comes from one seeded
``torch.Generator``; on CPU two runs with the same seed give identical metrics, and a run
resumed from a checkpoint gives the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clear_core import checkpoints
from clear_core.checkpoints import BEST_NAME, LAST_NAME
from clear_core.config import load_defaults, validate_fields
from clear_core.data.dataset import Dataset
from clear_core.errors import ClearrecError, ConfigError
from clear_core.evaluation import Evaluator
from clear_core.metrics import metric_keys
from clear_core.models import build_model, resolve_params
from clear_core.sampling import NegativeSampler

log = logging.getLogger(__name__)


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


class TrainingDivergedError(ClearrecError):
    """The loss became NaN or infinite (usually a learning rate too high for the model)."""


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
        config = cls(**validate_fields(merged, TRAIN_SCHEMA, source="train config"))
        config.check()
        return config

    def check(self) -> None:
        """Value checks beyond types; raises one ConfigError listing every problem."""
        problems = []
        if not self.learning_rate > 0:
            problems.append(f"learning_rate: expected > 0, got {self.learning_rate}")
        for name in ("batch_size", "max_epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.patience < 0:
            problems.append(f"patience: expected >= 0, got {self.patience}")
        if not self.topk or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.topk
        ):
            problems.append(f"topk: expected a list of positive integers, got {self.topk!r}")
        elif self.valid_metric not in metric_keys(self.topk):
            problems.append(
                f"valid_metric: {self.valid_metric!r} is not computed; expected one of "
                f"{', '.join(metric_keys(self.topk))}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device: expected auto, cpu or cuda, got {self.device!r}")
        if problems:
            raise ConfigError(problems, source="train config")


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
    #: True when training ends after this epoch by itself (patience or max_epochs).
    final: bool = False
    #: The model's :meth:`~clear_core.models.base.Recommender.epoch_diagnostics`.
    diagnostics: dict[str, float] = field(default_factory=dict)


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
    #: "patience", "max_epochs" or "callback".
    stop_reason: str = ""
    dataset_name: str = ""
    #: where ``last.pt`` and ``best.pt`` were written (empty when not checkpointed).
    checkpoint_dir: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what ``clearrec train --out DIR`` writes to ``DIR/result.json``)."""
        return json.loads(json.dumps(asdict(self)))


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; CUDA requested but absent is a ConfigError."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {requested!r} requested but CUDA is not available here")
        return torch.device(requested)
    if requested == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device: expected auto, cpu or cuda, got {requested!r}")


def _numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached"]))


@dataclass
class _EarlyStop:
    best_valid: float = -math.inf
    best_epoch: int = 0
    since_best: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value``; True when it is a strict improvement."""
        if value > self.best_valid:
            self.best_valid, self.best_epoch, self.since_best = value, epoch, 0
            return True
        self.since_best += 1
        return False

    def exhausted(self, patience: int) -> bool:
        return self.since_best > patience


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
    called after every epoch, once that epoch's checkpoint is written; returning True stops
    training.
    """
    config.check()
    device = resolve_device(config.device)
    params = resolve_params(model_name, model_params)
    if len(dataset.train) == 0:
        raise ConfigError(f"dataset {dataset.name!r}: the train split is empty")
    if len(dataset.valid) == 0:
        raise ConfigError(f"dataset {dataset.name!r}: the valid split is empty; early stopping needs it")
    signature = checkpoints.run_signature(dataset, model_name, params, config)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    fork_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=fork_devices, device_type=device.type):
        torch.manual_seed(config.seed)
        return _fit(
            dataset, model_name, params, config, device, signature, ckpt_dir, on_epoch_end
        )


def adam_optimizer(model: torch.nn.Module, learning_rate: float) -> torch.optim.Adam:
    """Adam, with the fused kernel where the parameters allow it (one pass per parameter
    instead of several: same maths, deterministic on CPU), over what the model says the trainer
    trains (:meth:`~clear_core.models.base.Recommender.trained_parameters`)."""
    trained = getattr(model, "trained_parameters", None)
    params = trained() if trained is not None else [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, ValueError):  # e.g. a parameter dtype the fused kernel lacks
        return torch.optim.Adam(params, lr=learning_rate)


def _fit(
    dataset: Dataset,
    model_name: str,
    params: dict[str, Any],
    config: TrainConfig,
    device: torch.device,
    signature: dict[str, Any],
    ckpt_dir: Path | None,
    on_epoch_end: Callable[[EpochReport], bool | None] | None,
) -> TrainResult:
    model = build_model(model_name, dataset, params).to(device)
    optimizer = adam_optimizer(model, config.learning_rate)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    sampler = NegativeSampler(dataset.train, dataset.n_items, device=device, source=dataset.name)
    evaluator = Evaluator(
        dataset, topk=config.topk, batch_size=config.eval_batch_size, device=device
    )
    train_pairs = torch.from_numpy(np.asarray(dataset.train, dtype=np.int64)).to(device)
    train_users, train_items = train_pairs[:, 0].contiguous(), train_pairs[:, 1].contiguous()
    n_train = len(train_pairs)

    stop = _EarlyStop()
    history: list[dict[str, Any]] = []
    start_epoch = 1
    stop_reason = ""
    last_path = ckpt_dir / LAST_NAME if ckpt_dir else None
    if last_path is not None and last_path.exists():
        state = checkpoints.load_for_resume(last_path, device, signature)
        model.load_state_dict(state["model"])
        model.load_extra_state(state["extra"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        _set_numpy_rng_state(state["numpy_rng"])
        stop = _EarlyStop(**state["early_stop"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        stop_reason = state.get("stop_reason", "")
        log.info("resuming %s from %s at epoch %d", model_name, last_path, start_epoch)

    log.info(
        "training %s on %s (%d users, %d items, %d train pairs) on %s",
        model_name, dataset.name, dataset.n_users, dataset.n_items, n_train, device,
    )

    def save_last(epoch: int, stop: _EarlyStop, history: list, stop_reason: str) -> None:
        checkpoints.save(
            {
                "format": checkpoints.FORMAT,
                "signature": json.dumps(signature, sort_keys=True),
                "epoch": epoch,
                "model": model.state_dict(),
                "extra": model.extra_state_for_checkpoint(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "numpy_rng": _numpy_rng_state(),
                "early_stop": asdict(stop),
                "history": history,
                "stop_reason": stop_reason,
            },
            last_path,
        )

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    epoch = start_epoch - 1
    while not stop_reason and epoch < config.max_epochs:
        epoch += 1
        # CPU seconds of this process too: on a shared machine wall time mostly measures the
        # neighbours, CPU time what the epoch itself cost.
        c0, t0 = time.process_time(), time.perf_counter()
        model.train()
        model.on_epoch_start(epoch)
        order = torch.randperm(n_train, generator=generator, device=device)
        users, pos = train_users[order], train_items[order]
        neg = sampler.sample(users, generator)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for s in range(0, n_train, config.batch_size):
            e = min(s + config.batch_size, n_train)
            loss = model.training_loss(users[s:e], pos[s:e], neg[s:e])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().to(torch.float64) * (e - s)
        train_loss = float(loss_sum) / n_train
        sync()
        c1, t1 = time.process_time(), time.perf_counter()
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(
                f"{model_name}: training loss became {train_loss} at epoch {epoch} "
                f"(learning_rate {config.learning_rate}); lower the learning rate or check "
                "the features for extreme values"
            )
        metrics = evaluator.evaluate(model)
        sync()
        c2, t2 = time.process_time(), time.perf_counter()
        valid, test = metrics["valid"], metrics.get("test", {})
        is_best = stop.update(epoch, valid[config.valid_metric])
        diagnostics = model.epoch_diagnostics()
        history.append({
            "epoch": epoch,
            "train_loss": train_loss,
            "valid": valid,
            "test": test,
            "train_seconds": t1 - t0,
            "eval_seconds": t2 - t1,
            "train_cpu_seconds": c1 - c0,
            "eval_cpu_seconds": c2 - c1,
            "diagnostics": diagnostics,
        })
        if stop.exhausted(config.patience):
            stop_reason = "patience"
        log.debug(
            "epoch %d loss %.5f valid %s %.5f (best %.5f @ %d) train %.2fs eval %.2fs",
            epoch, train_loss, config.valid_metric, valid[config.valid_metric],
            stop.best_valid, stop.best_epoch, t1 - t0, t2 - t1,
        )
        report = EpochReport(
            epoch=epoch, train_loss=train_loss, valid=valid, test=test,
            train_seconds=t1 - t0, eval_seconds=t2 - t1, is_best=is_best,
            best_epoch=stop.best_epoch, best_valid=stop.best_valid,
            final=bool(stop_reason) or epoch >= config.max_epochs, diagnostics=diagnostics,
        )
        if ckpt_dir is not None:
            # Written before the callback, so that what the callback reports (a Tune result)
            # already has this epoch's checkpoint on disk.
            if is_best:
                checkpoints.save(
                    {"epoch": epoch, "model": model.state_dict(),
                     "extra": model.extra_state_for_checkpoint()},
                    ckpt_dir / BEST_NAME,
                )
            save_last(epoch, stop, history, stop_reason)
            report.checkpoint_path = last_path
        if on_epoch_end is not None and on_epoch_end(report) and not stop_reason:
            stop_reason = "callback"
            if ckpt_dir is not None:
                # The stop request is part of the checkpoint: a later call with the same
                # folder must not train on (the weights and RNG states are those just saved).
                save_last(epoch, stop, history, stop_reason)
    if not stop_reason:
        stop_reason = "max_epochs"
    if not history:
        raise ConfigError(f"max_epochs: {config.max_epochs} leaves no epoch to run after the checkpoint")
    best = next(h for h in history if h["epoch"] == stop.best_epoch)
    log.info(
        "%s: best epoch %d of %d, valid %s %.5f, test %s %.5f (%s)",
        model_name, stop.best_epoch, len(history), config.valid_metric,
        best["valid"][config.valid_metric], config.valid_metric,
        best["test"].get(config.valid_metric, float("nan")), stop_reason,
    )
    return TrainResult(
        config={**asdict(config), "resolved_device": str(device)},
        model_name=model_name,
        model_params=params,
        best_epoch=stop.best_epoch,
        valid=best["valid"],
        test=best["test"],
        epochs_run=len(history),
        stopped_early=stop_reason != "max_epochs",
        median_train_seconds=statistics.median(h["train_seconds"] for h in history),
        median_eval_seconds=statistics.median(h["eval_seconds"] for h in history),
        history=history,
        device=str(device),
        dataset_fingerprint=dataset.fingerprint,
        stop_reason=stop_reason,
        dataset_name=dataset.name,
        checkpoint_dir=str(ckpt_dir) if ckpt_dir else "",
    )
