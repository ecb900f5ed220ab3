"""What a sweep trial reports to the driver: the one definition the trial (:mod:`pipeline.sweep`),
the search (:mod:`pipeline.optuna_search`) and the tracking (:mod:`pipeline.tracking`) share.

A trial sends one Tune result per epoch, with that epoch's checkpoint. Besides the fields of
:class:`TrialReport`, a result holds every metric of the train config as ``valid/<metric>@K`` and
``test/<metric>@K``, and the model's per-epoch diagnostics (``<name>/<figure>`` keys).

The driver reads three fields to decide a trial's fate:

* :data:`EPOCH`: the step every per-epoch value is recorded at (Optuna's intermediate values,
  MLflow's metric steps), so a trial resumed from a checkpoint reports each epoch at the same
  step it would have had;
* :data:`FINISHED`: True only on the last result of a trial that ended by itself (early
  stopping or the epoch budget); a trial whose last result lacks it was stopped by the scheduler
  (pruned) or the user;
* :data:`BEST_VALID`: the trial's best validation score so far, the value Optuna records for a
  finished trial (early stopping selects the best epoch, not the last).
"""

from __future__ import annotations

from typing import Any, TypedDict

EPOCH = "epoch"
FINISHED = "finished"
BEST_VALID = "best_valid"
RESUMED_FROM = "resumed_from"


class TrialReport(TypedDict):
    """The fixed fields of a trial's per-epoch result (metrics and diagnostics come beside them)."""

    epoch: int
    train_loss: float
    best_epoch: int
    best_valid: float
    #: metrics at ``best_epoch``: ``{"valid": {...}, "test": {...}}``
    best: dict[str, dict[str, float]]
    #: epoch of the checkpoint the trial restarted from (0: a fresh start)
    resumed_from: int
    #: the Ray node that ran the trial, and the resources Ray assigned it (CPU, GPU share, custom)
    node_id: str
    resources: dict[str, float]
    train_seconds: float
    eval_seconds: float
    finished: bool


#: The bookkeeping fields of a report: not metrics of the model, so never logged as metrics.
BOOKKEEPING_FIELDS = frozenset({EPOCH, FINISHED})


def is_finished(result: dict[str, Any] | None) -> bool:
    """Whether a trial's result is the last of a trial that ended by itself."""
    return bool((result or {}).get(FINISHED))
