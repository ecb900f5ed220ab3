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

No point runs twice. A proposal equal to the point of a COMPLETE, PRUNED or RUNNING trial is not
run: its known result is told to Optuna on the proposal's own study trial (COMPLETE with the same
value, or PRUNED with the same intermediate values; PRUNED with none while the twin still runs),
marked with the user attribute ``clearrec.duplicate_of`` = the twin's number, and Optuna is asked
again. After a few duplicate proposals in a row (TPE converging on a small space), a seeded random
unvisited point is enqueued instead; once every point of a finite space (choices and int ranges)
has been visited, the search is finished even if ``num_samples`` is not spent. FAIL trials are not
twins: a crash may not recur, so their point may be proposed again.

Resuming after a killed driver. A trial Optuna had handed out just before the driver died, but
that Tune's saved state does not hold, stays RUNNING in the study; the resumed search adopts it for
its next trial (same number, same point, same grid cell) instead of asking a new one and leaving a
spurious FAIL behind. Results and completions that an earlier driver already told are skipped
quietly (the same step is never reported twice, a finished trial is never told again).
"""

from __future__ import annotations

import contextlib
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
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from clear_core.errors import ConfigError
from pipeline import tags
from pipeline.sweep_config import SearchSpec
from pipeline.trial_report import BEST_VALID, EPOCH, FINISHED

log = logging.getLogger(__name__)

DUPLICATE_OF = tags.DUPLICATE_OF
# Duplicate proposals in a row before an unvisited point is enqueued instead.
MAX_DUPLICATE_ASKS = 8
# Spaces up to this many points are enumerated to know when every point has been visited.
ENUMERABLE_POINTS = 100_000
TWIN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

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


def finite_points(space: Mapping[str, BaseDistribution]) -> set[tuple] | None:
    """Every point of a space of choices and int ranges (None: continuous or too large)."""
    import itertools

    axes = []
    for dist in space.values():
        if isinstance(dist, CategoricalDistribution):
            axes.append(list(dist.choices))
        elif isinstance(dist, IntDistribution) and not dist.log and (dist.high - dist.low) // dist.step < ENUMERABLE_POINTS:
            axes.append(list(range(dist.low, dist.high + 1, dist.step)))
        else:
            return None
    if math.prod(len(a) for a in axes) > ENUMERABLE_POINTS:
        return None
    return set(itertools.product(*axes))


def sweep_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials that ran as sweep trials (duplicate proposals left out)."""
    return [t for t in study.get_trials(deepcopy=False) if DUPLICATE_OF not in t.user_attrs]


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (creating tables if needed) the study storage; a bad URL names itself."""
    from pipeline.locks import store_creation_lock

    try:
        # Optuna's schema creation is not safe to race: drivers started together on a fresh
        # SQLite file take turns.
        with store_creation_lock(url):
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

    # --- proposals ----------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        if trial_id in self._ot_trials:
            return super().suggest(trial_id)
        adopted = self._adopt_orphan(trial_id)
        if adopted is not None:
            return adopted
        for attempt in range(MAX_DUPLICATE_ASKS + 1):
            if self._exhausted():
                log.info("every point of the search space has been tried; no further trial is started")
                return Searcher.FINISHED
            if attempt == MAX_DUPLICATE_ASKS:
                self._enqueue_unvisited()
            params = super().suggest(trial_id)
            ot_trial = self._ot_trials[trial_id]
            twin = self._twin_of(ot_trial)
            if twin is None:
                return params
            del self._ot_trials[trial_id]
            self._close_duplicate(ot_trial, twin)
        return Searcher.FINISHED  # pragma: no cover - the enqueued point is never a twin

    # Derived from the space on use, not stored: a searcher pickled by an earlier version
    # (a sweep resumed after an upgrade) has no such attributes.
    @property
    def _names(self) -> list[str]:
        return list(self._space)

    @property
    def _points(self) -> set[tuple] | None:
        return finite_points(self._space)

    def _key(self, params: Mapping[str, Any]) -> tuple:
        return tuple(params.get(name) for name in self._names)

    def _study_trials(self) -> list[optuna.trial.FrozenTrial]:
        return self._ot_study._storage.get_all_trials(self._ot_study._study_id, deepcopy=False)

    def _twin_of(self, ot_trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        key = self._key(ot_trial.params)
        for other in self._study_trials():
            if other.number != ot_trial.number and other.state in TWIN_STATES and self._key(other.params) == key:
                if DUPLICATE_OF not in other.user_attrs:
                    return other
        return None

    def _close_duplicate(self, ot_trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> None:
        """Tell Optuna what is known of the twin's point on the duplicate's own trial."""
        ot_trial.set_user_attr(DUPLICATE_OF, twin.number)
        log.info("Optuna proposed %s again (trial %d, %s); not run, its result is reused",
                 dict(zip(self._names, self._key(twin.params), strict=True)), twin.number, twin.state.name)
        if twin.state == TrialState.COMPLETE:
            self._ot_study.tell(ot_trial, twin.value, state=TrialState.COMPLETE)
            return
        for step, value in sorted(twin.intermediate_values.items()):
            ot_trial.report(value, step)
        self._ot_study.tell(ot_trial, state=TrialState.PRUNED)

    def _visited(self) -> set[tuple]:
        return {self._key(t.params) for t in self._study_trials()
                if t.state in TWIN_STATES and len(t.params) == len(self._names)}

    def _exhausted(self) -> bool:
        return self._points is not None and len(self._visited() & self._points) >= len(self._points)

    def _enqueue_unvisited(self) -> None:
        if self._points is None:
            return
        left = sorted(self._points - self._visited(), key=repr)
        if left:
            # Seeded by how far the study has come: the same sweep re-run picks the same point.
            import random

            point = dict(zip(self._names, random.Random(len(self._study_trials())).choice(left), strict=True))
            log.info("the sampler keeps proposing tried points; running the untried %s instead", point)
            self._ot_study.enqueue_trial(point)

    def _adopt_orphan(self, trial_id: str) -> dict | None:
        """A RUNNING study trial that no Tune trial holds (handed out by a driver that died before
        its Tune state was saved) becomes this trial: its point and grid cell are not lost, and
        the study gets no spurious FAIL."""
        held = {t.number for t in self._ot_trials.values()}
        for frozen in self._study_trials():
            if frozen.state == TrialState.RUNNING and frozen.number not in held \
                    and set(frozen.params) == set(self._names):
                self._ot_trials[trial_id] = optuna.Trial(self._ot_study, frozen._trial_id)
                log.info("trial %s takes over Optuna trial %d, left unstarted by an earlier driver",
                         trial_id, frozen.number)
                return dict(frozen.params)
        return None

    # --- results ------------------------------------------------------------------------
    def _stored(self, ot_trial: optuna.Trial) -> optuna.trial.FrozenTrial:
        return self._ot_study._storage.get_trial(ot_trial._trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        step = int(result.get(EPOCH, result.get("training_iteration", 0)))
        ot_trial = self._ot_trials[trial_id]
        try:
            stored = self._stored(ot_trial)
            if stored.state.is_finished() or step in stored.intermediate_values:
                return  # told by an earlier driver, or this epoch re-reported after a resume
            ot_trial.report(float(value), step)
        except Exception as exc:  # the storage is unreachable for a moment; the sweep goes on
            log.warning("trial %s: Optuna refused the result of step %d (%s)", trial_id, step, exc)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            log.debug("trial %s: completion already told to Optuna", trial_id)
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            log.warning("trial %s: unknown to the Optuna study; not told", trial_id)
            return
        self._completed_trials.add(trial_id)
        state, value = self.trial_state(result, error=error, metric=self.metric)
        try:
            if self._stored(ot_trial).state.is_finished():
                log.debug("trial %s: already told to Optuna by an earlier driver", trial_id)
                return
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # the storage is unreachable for a moment; the sweep goes on
            # Optuna's GridSampler calls Study.stop() when its last point is told, which raises
            # outside Study.optimize; tell() stores the state all the same (in a finally).
            with contextlib.suppress(Exception):
                if self._stored(ot_trial).state == state:
                    log.debug("trial %s: %s stored; Optuna said: %s", trial_id, state.name, exc)
                    return
            log.warning("trial %s: Optuna refused %s (%s)", trial_id, state.name, exc)

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
