"""The sweep's Tune callback that writes one MLflow child run per trial (see :mod:`pipeline.tracking`
for why the driver writes them). It imports Ray Tune, so only the sweep's driver imports it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune import Callback

from pipeline.disk_full import DISK_FULL_KEY
from pipeline.mlflow_logging import applicable_params, log_dataset
from pipeline.tags import OUTCOME, RAY_HOSTNAME, RAY_HOSTNAMES, RAY_NODE_ID, RETRIES, ROLE, TRIAL_ID
from pipeline.tracking import PARENT_TAG, Tracker, flatten, trial_name
from pipeline.trial_report import BOOKKEEPING_FIELDS, EPOCH, FINISHED

log = logging.getLogger(__name__)


def _ray_node_id(node_ip: str | None) -> str | None:
    """The id of the alive Ray node at ``node_ip`` (None without Ray or when not found)."""
    if not node_ip:
        return None
    try:
        import ray

        if not ray.is_initialized():
            return None
        for node in ray.nodes():
            if node.get("Alive") and node.get("NodeManagerAddress") == node_ip:
                return node.get("NodeID")
    except Exception:  # noqa: BLE001 - a tag is never worth failing a sweep for
        log.debug("could not look up the Ray node at %s", node_ip, exc_info=True)
    return None


class MLflowTrialCallback(Callback):
    """Driver-side Tune callback: a nested child run per trial.

    ``resolve`` maps a trial's config to its full resolved parameters (e.g. ``{"model": {...},
    "train": {...}}``), logged on every child so each run is complete on its own; without it,
    ``base_params`` plus the trial's config are logged. The run name shows the searched values.
    A trial is FINISHED when its last report has ``finished_key`` true, KILLED when the
    scheduler stopped it before that, FAILED when it errored for good.
    """

    def __init__(
        self,
        tracker: Tracker,
        parent_run_id: str,
        *,
        model: str,
        base_params: Mapping[str, Any] | None = None,
        resolve: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        tags: Mapping[str, Any] | None = None,
        finished_key: str = FINISHED,
        search_keys: list[str] | None = None,
        dataset_input: Any | None = None,
        modalities: list[str] | None = None,
    ) -> None:
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.model = model
        self.base_params = flatten(dict(base_params or {}))
        self.resolve = resolve
        self.tags = dict(tags or {})
        self.finished_key = finished_key
        self.search_keys = search_keys
        self.dataset_input = dataset_input
        self.modalities = modalities
        self.run_ids: dict[str, str] = {}
        self.retries: dict[str, int] = {}
        self.hosts: dict[str, list[str]] = {}
        self.logged_up_to: dict[str, int] = {}
        self.interrupted = False

    # Tune keys that are bookkeeping, not metrics of the model.
    _SKIP = {
        "time_this_iter_s", "time_total_s", "timestamp", "training_iteration", "pid", "time_since_restore",
        "iterations_since_restore", "timesteps_total", "episodes_total", "done",
        "checkpoint_dir_name", "should_checkpoint", "node_id", "resources", "trial_id", "date", "hostname",
        "node_ip", *BOOKKEEPING_FIELDS,
    }

    def _trial_params(self, trial: Any) -> dict[str, Any]:
        flat = flatten(dict(trial.config or {}))
        if self.search_keys is not None:
            flat = {k: v for k, v in flat.items() if k in self.search_keys}
        return {k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool)) or v is None}

    def _run_for(self, trial: Any) -> str:
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is None:
            searched = self._trial_params(trial)
            if self.resolve is not None:
                # Every resolved field (model defaults + fixed + searched), so each run stands alone.
                params = {**self.base_params, **flatten(dict(self.resolve(dict(trial.config or {}))))}
            else:
                params = {**self.base_params, **searched}
            params = applicable_params(params, self.modalities)
            run_id = self.tracker.start_run(
                trial_name(self.model, searched, trial.trial_id),
                tags={**self.tags, TRIAL_ID: trial.trial_id, ROLE: "trial", "model": self.model},
                params=params,
                parent_run_id=self.parent_run_id,
                resume_tags={TRIAL_ID: trial.trial_id, PARENT_TAG: self.parent_run_id},
            )
            self.run_ids[trial.trial_id] = run_id
            # A resumed trial re-reports epochs the killed driver may have logged already.
            self.logged_up_to[trial.trial_id] = self.tracker.last_logged_step(run_id)
            log_dataset(self.tracker.client, run_id, self.dataset_input)
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_for(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_for(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self._run_for(trial)
        self._note_node(run_id, trial, result)  # also for a re-reported step: a retry may have moved it
        step = int(result.get(EPOCH, result.get("training_iteration", 0)))
        if step <= self.logged_up_to.get(trial.trial_id, 0):
            return  # logged before a resume: never the same step twice
        metrics = {k: v for k, v in result.items() if k not in self._SKIP and k != "config"}
        self.tracker.log_metrics(run_id, metrics, step=step)
        self.logged_up_to[trial.trial_id] = step

    def _note_node(self, run_id: str, trial: Any, result: Mapping[str, Any]) -> None:
        """Tag the child run with the Ray node its trial reports from (hostname, node id), and
        every node it has run on, in order: on a cluster, where a trial ran and whether a retry
        moved it to another node are questions people ask of a sweep."""
        host = result.get("hostname")
        seen = self.hosts.setdefault(trial.trial_id, [])
        if not host or (seen and seen[-1] == host):
            return
        seen.append(str(host))
        tags = {RAY_HOSTNAME: host, RAY_HOSTNAMES: ",".join(seen)}
        node_id = _ray_node_id(result.get("node_ip"))
        if node_id:
            tags[RAY_NODE_ID] = node_id
        self.tracker.set_tags(run_id, tags)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A retry (FailureConfig) continues the same child run from its checkpoint.
        self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        self.tracker.set_tags(self._run_for(trial), {RETRIES: self.retries[trial.trial_id]})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        finished = bool((trial.last_result or {}).get(self.finished_key))
        self._close(trial, "FINISHED" if finished else "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune returns normally after Ctrl-C with trials left PENDING/RUNNING/PAUSED: the sweep
        # was interrupted, not finished, and the caller must not report it as done.
        self.interrupted = any(getattr(t, "status", "TERMINATED") not in ("TERMINATED", "ERROR") for t in trials)
        for trial in trials:
            # The trial that ran out of space failed; the others were only stopped (pipeline.disk_full).
            if (getattr(trial, "last_result", None) or {}).get(DISK_FULL_KEY) and trial.trial_id in self.run_ids:
                self._close(trial, "FAILED")
        self.tracker.close_children(self.parent_run_id, "KILLED")

    def _close(self, trial: Any, status: str) -> None:
        run_id = self._run_for(trial)
        self.tracker.set_tags(run_id, {OUTCOME: "PRUNED" if status == "KILLED" else status})
        self.tracker.end_run(run_id, status)
        self.run_ids.pop(trial.trial_id, None)
