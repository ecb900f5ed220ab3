"""Tune's OptunaSearch with truthful trial states, on a persistent (RDB) Optuna study.

Ray 2.60's ``OptunaSearch`` tells Optuna COMPLETE for any trial whose last result carries the
metric, so a trial that ASHA stopped after 3 of 30 epochs enters the study as COMPLETE with its
under-trained value and TPE learns from it as if it were a finished trial's; it also tells
COMPLETE for a trial that errored after reporting. Here the trainable marks its last natural
result with ``finished: True`` (training ended by early stopping or the epoch budget; the fields
of a result are defined in :mod:`pipeline.trial_report`), and:

* finished and not errored -> COMPLETE, valued at the trial's best validation score
  (``best_valid`` when reported: early stopping selects the best epoch, not the last);
* stopped before that (scheduler, user) -> PRUNED (Optuna keeps its intermediate values);
* errored (after Tune's retries are spent) -> FAIL.

Intermediate values are reported at ``step = epoch`` (not Tune's ``training_iteration``), so a
trial resumed from a checkpoint reports each epoch at the same step it would have had.

The study lives in RDB storage (e.g. ``sqlite:///optuna.db``) under a stable name per sweep,
so its trial states can be read with plain Optuna and an interrupted sweep continues it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from clear_core.errors import ConfigError
from pipeline.sweep_config import SearchSpec
from pipeline.trial_report import BEST_VALID, EPOCH, FINISHED

log = logging.getLogger(__name__)


def optuna_space(search: Mapping[str, SearchSpec]) -> dict[str, BaseDistribution]:
    """Optuna distributions for the sweep's search specs (names kept as written)."""
    space: dict[str, BaseDistribution] = {}
    for name, spec in search.items():
        if spec.type == "choice":
            space[name] = CategoricalDistribution(list(spec.values))
        elif spec.type == "uniform":
            space[name] = FloatDistribution(float(spec.low), float(spec.high))
        elif spec.type == "loguniform":
            space[name] = FloatDistribution(float(spec.low), float(spec.high), log=True)
        elif spec.type == "int":
            space[name] = IntDistribution(int(spec.low), int(spec.high), log=spec.log)
        else:  # pragma: no cover - sweep_config rejects other types
            raise ConfigError(f"search.{name}.type: unsupported {spec.type!r}")
    return space


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (creating tables if needed) the study storage; a bad URL names itself."""
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy raises many kinds; all mean "cannot use this URL"
        raise ConfigError(f"study.storage: cannot open Optuna storage {url!r}: {exc}") from None


class PruningAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` (seeded TPE, or a seeded grid) that reports PRUNED/FAIL/COMPLETE truthfully; see module doc."""

    def __init__(
        self,
        search: Mapping[str, SearchSpec],
        *,
        metric: str,
        mode: str,
        seed: int,
        study_name: str,
        storage_url: str,
        sampler: str = "tpe",
    ) -> None:
        if sampler == "grid":
            chosen = optuna.samplers.GridSampler({n: list(s.values) for n, s in search.items()}, seed=seed)
        else:
            chosen = optuna.samplers.TPESampler(seed=seed)
        super().__init__(
            space=optuna_space(search),
            metric=metric,
            mode=mode,
            sampler=chosen,
            study_name=study_name,
            storage=rdb_storage(storage_url),
        )
        self.storage_url = storage_url

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        step = int(result.get(EPOCH, result.get("training_iteration", 0)))
        try:
            self._ot_trials[trial_id].report(float(value), step)
        except Exception as exc:  # e.g. closed by an earlier driver; the sweep goes on
            log.warning("trial %s: Optuna refused the result of step %d (%s)", trial_id, step, exc)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            log.debug("trial %s: completion already told to Optuna", trial_id)
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            log.warning("trial %s: unknown to the Optuna study; not told", trial_id)
            return
        state, value = self.trial_state(result, error=error, metric=self.metric)
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. already finished in storage by an earlier driver
            log.warning("trial %s: Optuna refused %s (%s)", trial_id, state.name, exc)
        self._completed_trials.add(trial_id)

    @staticmethod
    def trial_state(result: Mapping[str, Any] | None, *, error: bool, metric: str) -> tuple[TrialState, float | None]:
        """The Optuna state (and value) a trial ending with ``result`` deserves."""
        if error:
            return TrialState.FAIL, None
        result = result or {}
        if not result.get(FINISHED):
            return TrialState.PRUNED, None
        value = result.get(BEST_VALID, result.get(metric))
        if value is None or not math.isfinite(value):
            return TrialState.FAIL, None
        return TrialState.COMPLETE, float(value)


def fail_orphaned_trials(storage_url: str, study_name: str) -> list[int]:
    """Mark trials still RUNNING in the study as FAIL; returns their numbers.

    Called when a sweep has ended, when no trial of it can still be running: a RUNNING trial is
    one an earlier, killed driver had asked for but whose Tune trial was lost with it.
    """
    try:
        study = optuna.load_study(study_name=study_name, storage=rdb_storage(storage_url))
    except KeyError:
        return []
    orphans = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for number in orphans:
        try:
            study.tell(number, state=TrialState.FAIL)
        except Exception as exc:
            log.warning("study %s: could not close orphaned trial %d (%s)", study_name, number, exc)
    if orphans:
        log.info("study %s: marked %d trial(s) left RUNNING by an interrupted driver as FAIL", study_name, len(orphans))
    return orphans
