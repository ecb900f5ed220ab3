"""What a person watching ``clearrec`` on a terminal sees: one log format for clearrec and the
libraries it drives (MLflow, Optuna, Ray on the driver), and progress bars for the two long
waits, feature extraction and the sweep (trials done / pruned / failed, best so far)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that install a handler (and a format) of their own; their records go through ours.
OWN_HANDLERS = ("mlflow", "optuna", "ray", "alembic")


def configure_logging(verbose: bool) -> None:
    """One format on stderr for every logger. MLflow is told not to configure its loggers and
    not to draw download bars; libraries already imported give up their own handlers."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    adopt_library_loggers()


def adopt_library_loggers() -> None:
    """Make the libraries' loggers propagate to the root handler instead of printing in their
    own format. Called again after a library is imported (Ray and Optuna set up their loggers
    on import or first use)."""
    for name in OWN_HANDLERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    if "optuna" in sys.modules:
        import optuna

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()


def _bar(**kwargs: Any) -> Any:
    """A tqdm bar; inside a Ray worker, Ray's own (it draws on the driver's terminal)."""
    if "ray" in sys.modules:
        from ray._private import worker

        if worker.global_worker.connected and worker.global_worker.mode == worker.WORKER_MODE:
            from ray.experimental.tqdm_ray import tqdm as ray_tqdm

            return ray_tqdm(**kwargs)
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


class ExtractionProgress:
    """``progress(modality, done, total)`` for :func:`clear_core.extraction.extract_features`:
    one bar per modality, so a first run's minute of encoding is not silent."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}
        self._done: dict[str, int] = {}

    def __call__(self, modality: str, done: int, total: int) -> None:
        bar = self._bars.get(modality)
        if bar is None:
            bar = self._bars[modality] = _bar(total=total, desc=f"extract {modality}", unit="item")
            self._done[modality] = 0
        bar.update(done - self._done[modality])
        self._done[modality] = done
        if done >= total:
            bar.close()


def _callback_base() -> type:
    from ray.tune import Callback

    return Callback


class SweepProgress(_callback_base()):  # type: ignore[misc]
    """A driver-side Tune callback drawing one bar over the sweep's trials: how many ended,
    how many of them ASHA pruned or failed, and the best validation score so far."""

    def __init__(self, total: int, metric: str, mode: str = "max") -> None:
        self.total = total
        self.key = metric.split("/", 1)[1]
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.counts = {"done": 0, "pruned": 0, "failed": 0}
        self.best: float | None = None
        self.bar: Any = None

    def _ensure(self) -> Any:
        if self.bar is None:
            self.bar = _bar(total=self.total, desc="sweep", unit="trial")
        return self.bar

    def _show(self) -> None:
        best = "-" if self.best is None else f"{self.best:.4f}"
        self._ensure().set_postfix_str(
            f"done {self.counts['done']}, pruned {self.counts['pruned']}, failed {self.counts['failed']}, "
            f"best {self.metric} {best}", refresh=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = ((result.get("best") or {}).get("valid") or {}).get(self.key)
        if isinstance(value, (int, float)) and (self.best is None or self.sign * value > self.sign * self.best):
            self.best = float(value)
            self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        finished = bool((trial.last_result or {}).get("finished"))
        self.counts["done" if finished else "pruned"] += 1
        self._ensure().update(1)
        self._show()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.counts["failed"] += 1
        self._ensure().update(1)
        self._show()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()
