"""The sweep engine: Ray Tune trials of ``clear_core.trainer.fit``, chosen by Optuna (TPE), stopped
early by ASHA, checkpointed every epoch, retried and resumable.

What a trial reports each epoch (one Tune result per epoch, with a checkpoint of that epoch;
the fields are defined once in :mod:`pipeline.trial_report`)::

    epoch, train_loss, valid/<metric>@K, test/<metric>@K (all metrics of the train config),
    best_epoch, best_valid, best: {valid: {...}, test: {...}} (metrics at best_epoch),
    finished (True only on the last result of a trial that ended by itself: early stopping or
    the epoch budget), resumed_from (epoch of the checkpoint it restarted from; 0 = fresh),
    node_id (Ray node that ran it), resources (what Ray assigned it: CPU, GPU share, custom),
    train_seconds, eval_seconds

``finished`` is what lets :mod:`pipeline.optuna_search` tell Optuna PRUNED for trials the
scheduler stopped. A trial's checkpoint holds the trainer's checkpoint folder (``last.pt``,
``best.pt``); a retried or resumed trial continues from it, so no epoch is reported twice.

Re-running :func:`run_sweep` with the same configuration and data finds the experiment folder
(``<storage>/<sweep_id>``) and resumes it: finished trials are kept, unfinished ones continue from
their checkpoints, and only the missing trials are started. Errored trials are not resumed: Optuna
already holds them as FAIL and would never see their new results (a told trial cannot be told
again); retries within a run (``max_failures``) are the way to survive a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_core.data.dataset import Dataset
from clear_core.errors import ClearrecError, ConfigError
from pipeline import disk_full, tags
from pipeline.sweep_config import SweepConfig, dataset_problems
from pipeline.trial_report import FINISHED, RESUMED_FROM, TrialReport, is_finished

log = logging.getLogger(__name__)

TRAINER_DIR = "trainer"
PROGRESS_FILE = "progress.json"
FAULT_MARKER = "fault_injection_crashed_once"
# Tune deletes a trial's oldest checkpoint the moment a new one is registered, but writes the
# experiment snapshot (what a resumed run restores from) only later. Keeping a few
# (storage.keep_checkpoints) and snapshotting at least every second means a killed driver's
# last snapshot usually still names a checkpoint that exists; restore_missing_checkpoints mends
# the other case before a resume.
SNAPSHOT_EVERY_S = "1"


CONFIG_ERROR_KEY = "config_error"


class SweepFailedError(ClearrecError):
    """Every trial failed; the message lists their errors."""


@dataclass
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    status: str  # "COMPLETE" | "PRUNED" | "FAIL"
    best_epoch: int | None
    valid: dict[str, float]
    test: dict[str, float]
    epochs: int
    checkpoint: str | None
    node_id: str | None
    error: str | None = None
    path: str | None = None


@dataclass
class SweepOutcome:
    sweep_id: str
    best: TrialSummary
    trials: list[TrialSummary]
    storage_path: str
    study_storage: str
    study_name: str
    resumed: bool
    metric: str = ""
    mode: str = "max"
    config: dict[str, Any] = field(default_factory=dict)
    # A grid sweep: its size and the points no trial ran (a num_samples cap); 0 and [] for TPE.
    grid_size: int = 0
    skipped_points: list[dict[str, Any]] = field(default_factory=list)
    # Proposals of a point already run, told their twin's result instead of running again.
    duplicate_proposals: int = 0


# --- the trial ---------------------------------------------------------------------------------


def _disk_epoch(trainer_dir: Path) -> int:
    """Epoch of the trainer checkpoint in ``trainer_dir`` (0: none).

    Tensors are memory-mapped, not read: only the epoch number is needed.
    """
    import torch

    from clear_core.checkpoints import LAST_NAME

    path = trainer_dir / LAST_NAME
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state["epoch"])


def writable_copy(dataset: Dataset) -> Dataset:
    """A copy whose arrays may be written to.

    Arrays that come through Ray's object store are read-only views of shared memory; a model
    that trains its features in place (``trainable_features``) must not write there.
    """
    import dataclasses

    import numpy as np

    def own(a: np.ndarray) -> np.ndarray:
        return a if a.flags.writeable else np.array(a, copy=True)

    return dataclasses.replace(
        dataset,
        train=own(dataset.train), valid=own(dataset.valid), test=own(dataset.test),
        features={m: own(f) for m, f in dataset.features.items()},
    )


def run_trial(trial_config: dict[str, Any], *, dataset: Dataset, sweep: SweepConfig) -> None:
    """One Tune trial: train with this trial's parameters, report every epoch with its checkpoint.

    The trainer writes an epoch's checkpoint before calling ``on_epoch_end``, so each epoch is
    reported from its own callback together with that checkpoint (a result and its checkpoint
    always agree, and the scheduler sees every epoch without delay); the trainer's ``final``
    flag marks the last one.
    """
    import ray
    from ray import tune

    from clear_core.trainer import TrainConfig, fit
    from pipeline.ray_runtime import quiet_worker_teardown

    # Ray's per-checkpoint INFO lines would bury the status table.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    quiet_worker_teardown()
    dataset = writable_copy(dataset)
    model_params, train = sweep.split_params(trial_config)
    train["valid_metric"] = sweep.metric.split("/", 1)[1]
    train_config = TrainConfig.resolve(train)
    runtime = ray.get_runtime_context()
    node_id = runtime.get_node_id()
    assigned = {k: float(v) for k, v in runtime.get_assigned_resources().items()}
    context = tune.get_context()
    trial_dir = Path(context.get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    fault_at = (sweep.fault_injection or {}).get("crash_once_at_epoch")

    work = Path(tempfile.mkdtemp(prefix=f"clearrec-{context.get_trial_id()}-"))
    trainer_dir = work / TRAINER_DIR
    try:
        resumed_from = 0
        best_state: dict[str, Any] = {"valid": {}, "test": {}}
        last_metrics: dict[str, Any] | None = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(str(work))
            resumed_from = _disk_epoch(trainer_dir)
            progress = work / PROGRESS_FILE
            if progress.exists():
                saved = json.loads(progress.read_text(encoding="utf-8"))
                best_state = saved["best"]
                last_metrics = saved.get("metrics")
            log.info("trial %s resumes from epoch %d", context.get_trial_id(), resumed_from)

        reported = {"epoch": resumed_from}

        def on_epoch_end(report) -> None:
            if fault_at is not None and report.epoch == fault_at:
                marker = trial_dir / FAULT_MARKER
                if not marker.exists():
                    marker.write_text(str(report.epoch), encoding="utf-8")
                    raise RuntimeError(
                        f"fault injection (test only): trial crashes once at epoch {report.epoch}"
                    )
            if report.is_best:
                best_state["valid"], best_state["test"] = dict(report.valid), dict(report.test)
            fields: TrialReport = {
                "epoch": report.epoch,
                "train_loss": report.train_loss,
                "best_epoch": report.best_epoch,
                "best_valid": report.best_valid,
                "best": {"valid": dict(best_state["valid"]), "test": dict(best_state["test"])},
                "resumed_from": resumed_from,
                "node_id": node_id,
                "resources": assigned,
                "train_seconds": report.train_seconds,
                "eval_seconds": report.eval_seconds,
                "finished": report.final,
            }
            metrics = {
                **fields,
                **{f"valid/{k}": v for k, v in report.valid.items()},
                **{f"test/{k}": v for k, v in report.test.items()},
                **report.diagnostics,
            }
            # The trainer wrote this epoch's checkpoint before calling back: report them together.
            (work / PROGRESS_FILE).write_text(
                json.dumps({"epoch": report.epoch, "best": metrics["best"], "metrics": metrics}),
                encoding="utf-8",
            )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(work)))
            reported["epoch"] = report.epoch

        try:
            result = fit(
                dataset, sweep.model, model_params, train_config,
                checkpoint_dir=trainer_dir, on_epoch_end=on_epoch_end,
            )
        except ConfigError as exc:
            # The same parameters fail the same way every time: tell the driver not to retry
            # (NoRetryOnConfigError), then fail.
            tune.report({CONFIG_ERROR_KEY: str(exc), "epoch": reported["epoch"], "finished": False})
            raise
        except Exception as exc:
            full = disk_full.full_path(exc, _trial_storage_path(context, sweep))
            if full is None:
                raise
            # Not a failure of this trial: the driver stops the sweep for a resume (disk_full).
            disk_full.report_and_wait(full, reported["epoch"])
        if reported["epoch"] == resumed_from and resumed_from and last_metrics is not None:
            # Resumed from the checkpoint of a trial that had already ended (the driver died
            # before it recorded so): say again how it ended, so its last result is truthful.
            ended_by_itself = result.stop_reason in ("patience", "max_epochs")
            tune.report({**last_metrics, FINISHED: ended_by_itself, RESUMED_FROM: resumed_from})
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the driver --------------------------------------------------------------------------------


def sweep_id_for(config: SweepConfig, dataset: Dataset) -> str:
    """Stable per (configuration, data): the same sweep on the same data resumes, another does not."""
    digest = hashlib.sha256(f"{config.fingerprint()}:{dataset.fingerprint}".encode()).hexdigest()
    return f"{config.name}-{digest[:10]}"


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is not None:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def trial_resources(config: SweepConfig, gpus: float | None = None) -> dict[str, float]:
    """One trial's demand; the GPU share only where there are GPUs (the cluster's, or ``gpus``)."""
    from pipeline.ray_runtime import cluster_gpus

    res: dict[str, float] = {"cpu": config.resources.cpu}
    if config.resources.gpu > 0 and (cluster_gpus() if gpus is None else gpus) > 0:
        res["gpu"] = config.resources.gpu
    res.update(config.resources.custom)
    return res


def check_trial_resources(config: SweepConfig) -> None:
    """Before anything starts: can a node of the connected Ray cluster (present, or one an
    autoscaler may add) ever run one trial? See :func:`pipeline.ray_runtime.ensure_trial_resources`."""
    import ray

    from pipeline.ray_runtime import ensure_trial_resources, local_offer

    request = trial_resources(config) if ray.is_initialized() else trial_resources(config, gpus=local_offer()["GPU"])
    ensure_trial_resources(request, wait_s=config.resources.scale_up_wait_s)


def _trial_storage_path(context: Any, sweep: SweepConfig) -> str:
    """Where this trial's checkpoints go (named when that disk fills)."""
    with contextlib.suppress(Exception):
        return str(context.get_storage().trial_fs_path)
    return str(sweep.storage.path)


def _no_retry_callback():
    """A driver-side Tune callback: a trial that reported a configuration error is not retried.

    Tune retries any failed trial ``max_failures`` times; the trial reports the error (the
    result reaches the driver before the failure does) and this sets the trial's own retry
    budget to zero, so the failure that follows is final."""
    from ray.tune import Callback

    class NoRetryOnConfigError(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get(CONFIG_ERROR_KEY):
                trial.max_failures = 0
                log.error("trial %s: configuration error, not retried: %s", trial.trial_id,
                          result[CONFIG_ERROR_KEY].splitlines()[-1].strip())

    return NoRetryOnConfigError()


def _reporter(config: SweepConfig):
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns=list(config.search),
        metric_columns={"epoch": "epoch", config.metric: config.metric, "best_valid": "best"},
        max_report_frequency=10,
        sort_by_metric=True,
    )


def _status(result) -> str:
    if result.error is not None:
        return "FAIL"
    return "COMPLETE" if is_finished(result.metrics) else "PRUNED"


def _error_line(error: BaseException | None) -> str | None:
    """The failing exception's own line (Ray wraps it in a traceback of the actor call)."""
    if error is None:
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _summaries(grid, config: SweepConfig, storage) -> list[TrialSummary]:
    out = []
    for result in grid:
        metrics = result.metrics or {}
        best = metrics.get("best") or {}
        trial_config = result.config or metrics.get("config") or {}
        trial_params = {name: trial_config.get(name) for name in config.search}
        # A trial that failed before its first report has no metrics: its folder names it.
        found = re.search(r"run_trial_([0-9a-f]+)_", Path(result.path).name)
        checkpoint = None
        if result.checkpoint is not None:
            checkpoint = f"s3://{result.checkpoint.path}" if storage.is_s3 else result.checkpoint.path
        out.append(TrialSummary(
            trial_id=metrics.get("trial_id") or (found.group(1) if found else Path(result.path).name),
            params=trial_params,
            status=_status(result),
            best_epoch=metrics.get("best_epoch"),
            valid=dict(best.get("valid") or {}),
            test=dict(best.get("test") or {}),
            epochs=int(metrics.get("epoch") or 0),
            checkpoint=checkpoint,
            node_id=metrics.get("node_id"),
            error=_error_line(result.error),
            path=result.path,
        ))
    return sorted(out, key=lambda t: t.trial_id)


def _unfinished_trials(restore_path: str, filesystem) -> list[str]:
    """Trials the experiment's last saved state holds as not done (an interrupted run).

    Tune marks every trial TERMINATED in memory when it is interrupted, but its last snapshot
    keeps them RUNNING/PENDING, and that snapshot is what a re-run resumes from.
    """
    return [t.trial_id for t in unfinished_saved_trials(restore_path, filesystem)]


def unfinished_saved_trials(restore_path: str, filesystem) -> list:
    """The trials that the experiment's last saved snapshot holds as not done (none when there
    is no snapshot, or it cannot be read yet)."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(restore_path, storage_filesystem=filesystem).trials
    except Exception as exc:  # no snapshot at all: nothing to resume either
        log.debug("no experiment snapshot at %s (%s)", restore_path, exc)
        return []
    return [t for t in trials if str(t.status) not in ("TERMINATED", "ERROR")]


def restore_missing_checkpoints(restore_path: str, filesystem) -> list[str]:
    """Before a resume: where the last saved snapshot names a checkpoint of an unfinished trial
    that no longer exists, put the newest checkpoint the trial still has under that name.
    Returns the ids of the trials repaired.

    Why: Tune deletes a trial's oldest kept checkpoint as soon as a new one registers, and the
    snapshot naming the new one reaches storage only later. A driver killed in between leaves
    a snapshot naming a deleted checkpoint, and Tune then fails that trial on restore ("does not
    exist on storage anymore"). With epochs of well under a second (toy data, or a GPU) the
    window is hit (see storage.keep_checkpoints). Every checkpoint holds the trial's whole state (the
    trainer's checkpoint and progress.json), and ``run_trial`` resumes from what a checkpoint
    holds, not from its name; a checkpoint newer than the snapshot's loses no epoch.
    """
    import posixpath

    import pyarrow.fs as pafs

    fs = filesystem or pafs.LocalFileSystem()
    repaired = []
    for trial in unfinished_saved_trials(restore_path, filesystem):
        named = trial.checkpoint
        if named is None:
            continue
        if fs.get_file_info(named.path).type != pafs.FileType.NotFound:
            continue
        folder = posixpath.dirname(named.path)
        kept = [
            info.path for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_")
        ]
        if not kept:
            log.warning("trial %s: checkpoint %s is gone and none other is left; it cannot resume",
                        trial.trial_id, named.path)
            continue
        # Newest by the epoch it holds: after a repair, Tune reuses checkpoint names.
        newest = max(kept, key=lambda path: (_checkpoint_epoch(fs, path), path))
        pafs.copy_files(newest, named.path, source_filesystem=fs, destination_filesystem=fs)
        log.warning("trial %s: the snapshot names checkpoint %s, deleted before the snapshot was "
                    "saved; resuming from %s instead", trial.trial_id, named.path, newest)
        repaired.append(trial.trial_id)
    return repaired


def _local_fs():
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem()


def _checkpoint_epoch(fs, checkpoint_path: str) -> int:
    """The epoch a trial checkpoint holds (its progress file), -1 when unreadable."""
    try:
        with fs.open_input_stream(f"{checkpoint_path}/{PROGRESS_FILE}") as stream:
            return int(json.loads(stream.read().decode("utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def select_best(trials: list[TrialSummary], metric: str, mode: str) -> TrialSummary | None:
    """The best trial on validation: COMPLETE trials first, PRUNED ones only if none completed."""
    key = metric.split("/", 1)[1]
    sign = 1.0 if mode == "max" else -1.0
    for statuses in (("COMPLETE",), ("PRUNED",)):
        scored = [t for t in trials if t.status in statuses and key in t.valid]
        if scored:
            return max(scored, key=lambda t: sign * t.valid[key])
    return None


def run_sweep(
    config: SweepConfig,
    dataset_path: str,
    *,
    study_storage: str,
    callbacks: list | None = None,
    progress: bool = True,
) -> SweepOutcome:
    """Run (or resume) the sweep on the dataset folder ``dataset_path``; see the module doc.

    Everything that can be checked is checked before any trial starts: the dataset folder
    (``DataError``), the search against the model and data (``ConfigError``: e.g. k above the
    projected dimension), the results storage (S3 endpoint reachable, bucket present) and the
    Optuna storage URL. Ray is started locally (or joined at ``RAY_ADDRESS``) unless this process
    already has it. ``callbacks`` are Tune callbacks run on the driver (e.g. MLflow tracking).
    """
    from ray import tune

    from clear_core.data.loading import load_dataset
    from pipeline.locks import SweepLock
    from pipeline.optuna_search import PruningAwareOptunaSearch, fail_orphaned_trials, rdb_storage
    from pipeline.ray_runtime import ray_session
    from pipeline.storage import check_reachable, resolve_storage

    dataset = load_dataset(dataset_path)
    problems = dataset_problems(config, dataset)
    if problems:
        raise ConfigError(problems, source=config.source or None)
    storage = resolve_storage(config.storage.path, config.storage.endpoint_url)
    check_reachable(storage)
    rdb_storage(study_storage)
    sweep_id = sweep_id_for(config, dataset)
    study_name = config.study.name or sweep_id
    exp_path = storage.join(sweep_id)
    # With an explicit filesystem Tune wants "bucket/prefix", not a URI.
    restore_path = storage.filesystem_and_path(sweep_id)[1]

    if config.grid_size and config.num_samples < config.grid_size:
        log.warning("grid sweep capped by num_samples=%d: %d of its %d points will not run",
                    config.num_samples, config.grid_size - config.num_samples, config.grid_size)

    # One driver per sweep: a second start is refused, naming the running one (pipeline.locks).
    with SweepLock(study_storage, sweep_id, describe=f"sweep {config.name}"), ray_session():
        check_trial_resources(config)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, dataset=dataset, sweep=config), trial_resources(config)
        )
        resumed = tune.Tuner.can_restore(restore_path, storage_filesystem=storage.filesystem)
        restore_tune = resumed
        if resumed:
            log.info("resuming sweep %s from %s", sweep_id, exp_path)
            saved = disk_full.restore_last_complete_state(storage.filesystem or _local_fs(), restore_path)
            # Tune restoring from a state it cannot read goes on half-restored (one trial, say):
            # a fresh Tuner on the same study takes over Optuna's unfinished trials instead.
            restore_tune = saved is not disk_full.SavedState.LOST
        if restore_tune:
            restore_missing_checkpoints(restore_path, storage.filesystem)
            tuner = tune.Tuner.restore(
                restore_path, trainable,
                resume_unfinished=True, resume_errored=False, restart_errored=False,
                storage_filesystem=storage.filesystem,
            )
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=PruningAwareOptunaSearch(
                        config.search, metric=config.metric, mode=config.mode, seed=config.seed,
                        study_name=study_name, storage_url=study_storage, sampler=config.sampler,
                    ),
                    scheduler=_scheduler(config),
                    num_samples=config.num_samples,
                    max_concurrent_trials=config.max_concurrent,
                    metric=config.metric,
                    mode=config.mode,
                    reuse_actors=False,
                    trial_name_creator=_trial_namer(config.model),
                ),
                run_config=tune.RunConfig(
                    name=sweep_id,
                    storage_path=storage.path,
                    storage_filesystem=storage.filesystem,
                    failure_config=tune.FailureConfig(max_failures=config.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=config.storage.keep_checkpoints),
                    verbose=1 if progress else 0,
                ),
            )
        # Driver-side objects are attached after the Tuner has pickled its state (tuner.pkl),
        # so they need not be picklable and a resumed sweep gets this run's callbacks rather
        # than the first run's.
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        run_config = tuner._local_tuner.get_run_config()
        watcher = disk_full.watch()
        run_config.callbacks = [JsonLoggerCallback(), CSVLoggerCallback(), _no_retry_callback(), watcher,
                                disk_full.state_backup(storage.filesystem, restore_path), *(callbacks or [])]
        run_config.progress_reporter = _reporter(config) if progress else None
        run_config.verbose = 1 if progress else 0
        # The old output engine is the one that honours a CLIReporter. TensorBoard files are
        # left out (JSON and CSV results are kept): TensorBoard rejects every '@' metric name.
        # Frequent snapshots keep the resume state in step with the kept checkpoints (see
        # storage.keep_checkpoints); that is intended, so Tune's warning about them is silenced.
        with _env(
            RAY_AIR_NEW_OUTPUT="0" if progress else None,
            TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
            # A trial's last word on a configuration error or a full disk carries no metric;
            # the scheduler and the searcher skip such results instead of Tune failing them.
            TUNE_DISABLE_STRICT_METRIC_CHECKING="1",
            TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
            TUNE_GLOBAL_CHECKPOINT_S=None if os.environ.get("TUNE_GLOBAL_CHECKPOINT_S") else SNAPSHOT_EVERY_S,
        ), disk_full.quiet_ray_disk_full(watcher):
            try:
                grid = tuner.fit()
            except Exception as exc:
                full = disk_full.sweep_error(watcher, exc, exp_path)
                if full is not None:
                    raise full from None
                raise
    full = disk_full.sweep_error(watcher, None, exp_path)
    if full is not None:
        # Stopped as by Ctrl-C: every trial is resumable once space is freed.
        raise full

    unfinished = _unfinished_trials(restore_path, storage.filesystem)
    if unfinished:
        # Interrupted (Ctrl-C, SIGTERM): the study's RUNNING trials belong to trials that a
        # re-run resumes, so they are left as they are.
        raise KeyboardInterrupt(
            f"sweep {sweep_id} interrupted with {len(unfinished)} trial(s) unfinished; "
            "run the same command again to resume it"
        )
    fail_orphaned_trials(study_storage, study_name)
    trials = _summaries(grid, config, storage)
    best = select_best(trials, config.metric, config.mode)
    if best is None:
        errors = "; ".join(f"{t.trial_id}: {t.error}" for t in trials if t.error) or "no trial reported"
        raise SweepFailedError(f"sweep {sweep_id}: no trial produced a validation score ({errors})")
    return SweepOutcome(
        sweep_id=sweep_id, best=best, trials=trials, storage_path=exp_path,
        study_storage=study_storage, study_name=study_name, resumed=resumed,
        metric=config.metric, mode=config.mode, config=config.to_dict(),
        grid_size=config.grid_size, skipped_points=skipped_grid_points(config, trials),
        duplicate_proposals=duplicate_proposals(study_storage, study_name),
    )


def coverage_report(outcome: SweepOutcome) -> tuple[dict[str, Any], dict[str, str]]:
    """What a sweep's outputs say about its coverage: fields for ``outcome.json`` (and the closing
    summary) and tags for the parent run. A grid says its size, how many points ran and which
    were skipped; every sweep says how many duplicate proposals were not run."""
    fields: dict[str, Any] = {"duplicate_proposals": outcome.duplicate_proposals}
    run_tags = {tags.DUPLICATE_PROPOSALS: str(outcome.duplicate_proposals)}
    if outcome.grid_size:
        skipped = outcome.skipped_points
        fields["grid"] = {"size": outcome.grid_size, "ran": outcome.grid_size - len(skipped), "skipped": skipped}
        run_tags.update({
            tags.GRID_POINTS: str(outcome.grid_size),
            tags.GRID_SKIPPED: str(len(skipped)),
            # MLflow tag values hold up to 8000 characters; outcome.json lists them all.
            tags.GRID_SKIPPED_POINTS: json.dumps(skipped)[:7900],
        })
    return fields, run_tags


def skipped_grid_points(config: SweepConfig, trials: list[TrialSummary]) -> list[dict[str, Any]]:
    """The points of a grid sweep that no trial ran (a ``num_samples`` cap), in grid order."""
    ran = {tuple(t.params.get(n) for n in config.search) for t in trials}
    return [p for p in config.grid_points() if tuple(p[n] for n in config.search) not in ran]


def duplicate_proposals(study_storage: str, study_name: str) -> int:
    import optuna

    from pipeline.optuna_search import DUPLICATE_OF, rdb_storage

    study = optuna.load_study(study_name=study_name, storage=rdb_storage(study_storage))
    return sum(1 for t in study.get_trials(deepcopy=False) if DUPLICATE_OF in t.user_attrs)


def _trial_namer(model: str):
    """Ray's name for a trial: the one MLflow and the summary use (``clear k=8 lam=0.9 tau=2 [id]``)."""
    from pipeline.tracking import trial_name

    def name(trial) -> str:
        return trial_name(model, dict(trial.config or {}), trial.trial_id)

    return name


def _scheduler(config: SweepConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if config.scheduler.type == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=config.scheduler.max_t or config.max_epochs,
        grace_period=config.scheduler.grace_period,
        reduction_factor=config.scheduler.reduction_factor,
    )
