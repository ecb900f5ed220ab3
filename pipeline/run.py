"""The pipeline run: dataset stages -> sweep (Tune + Optuna, tracked in MLflow) -> final evaluation
of the best checkpoint -> tables, figures and the closing summary.

:func:`run_pipeline` does it in this order, every step a named function below:

1. probe every remote part (tracking server, S3 results storage, Optuna storage, Ray address)
   before any work, so that an unreachable one is reported in seconds, with its address;
2. start or join Ray and build the dataset with the dataset stages (:mod:`pipeline.stages`);
3. run the sweep stage (:func:`sweep_stage`): inside an MLflow parent run, the trials
   (:func:`pipeline.sweep.run_sweep`) with one child run each, then :func:`finish_sweep`;
4. put together the closing summary.

The sweep stage is cached like every stage: an unchanged re-run whose MLflow parent run is still
there and finished (:func:`parent_run_alive`) is reused without starting a trial.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import tags
from pipeline.stages import dataset_stages, run_stage

if TYPE_CHECKING:
    from clear_core.data.dataset import Dataset
    from pipeline.sweep import SweepOutcome
    from pipeline.sweep_config import SweepConfig
    from pipeline.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPlan:
    """What the sweep stage needs, settled before it starts: the config, the built dataset, where
    the study and the tracking live, and the tags every run of the sweep carries."""

    config: SweepConfig
    dataset_path: str
    dataset: Dataset
    sweep_id: str
    study_storage: str
    tracking_uri: str
    tracker: Tracker
    common_tags: Mapping[str, Any]
    progress: bool
    register_model: str | None = None


def run_pipeline(
    config: SweepConfig,
    *,
    runs_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    study_storage: str | None = None,
    progress: bool = True,
    as_tasks: bool = True,
    on_stage: Callable[[dict[str, Any]], None] | None = None,
    register_model: str | None = None,
) -> dict[str, Any]:
    """dataset stages -> sweep (Tune + Optuna, tracked in MLflow) -> final evaluation -> reports.

    Checks the tracking backend first (an unreachable server fails here, before any work).
    Returns the sweep stage's summary: best trial, counts, final evaluation, MLflow ids, output
    paths and the closing summary text. A finished sweep with the same inputs and its MLflow
    parent run still present is reused without starting a trial. Ray is started (or joined at
    ``RAY_ADDRESS``) before the dataset stages, so that the trials' resources are checked first.
    """
    from clear_core.data.loading import load_dataset
    from pipeline import mlflow_logging, reporting, seed_replicates, tracking
    from pipeline.locks import SweepLock, ensure_tracking_store
    from pipeline.optuna_search import rdb_storage
    from pipeline.ray_runtime import join_or_start_ray, probe_ray_address
    from pipeline.storage import check_reachable, resolve_storage
    from pipeline.sweep import check_trial_resources, sweep_id_for

    check_trial_resources(config)  # a local Ray's limits are known before anything starts
    pcfg = tracking.load_pipeline_config()
    uri = tracking.resolve_tracking_uri(tracking_uri, pcfg)
    # Everything remote is probed before any stage: an unreachable server or bucket is reported
    # now, with its address, not after minutes of feature extraction.
    tracking.check_reachable(uri, pcfg["health_timeout_s"])
    check_reachable(resolve_storage(config.storage.path, config.storage.endpoint_url))
    runs_dir = Path(runs_dir or pcfg["runs_dir"]).absolute()
    study = (study_storage or config.study.storage
             or tracking.default_study_storage(uri, pcfg["study_storage"]))
    rdb_storage(study)
    ensure_tracking_store(uri)
    probe_ray_address(os.environ.get("RAY_ADDRESS"))

    # Ray is needed now even for in-process stages: the trials' resources are checked first.
    ray_started = join_or_start_ray()
    sweep_lock = None
    try:
        check_trial_resources(config)
        dataset_path = dataset_stages(config, runs_dir, as_tasks=as_tasks, on_stage=on_stage)
        dataset = load_dataset(dataset_path)
        sweep_id = sweep_id_for(config, dataset)
        # Held from before the MLflow parent run opens until the end (pipeline.locks).
        sweep_lock = SweepLock(study, sweep_id, describe=f"clearrec sweep {config.source}").acquire()
        experiment = config.tracking.experiment or tracking.experiment_name(dataset.name, pcfg)
        tracker = tracking.Tracker(uri, experiment, artifact_root=pcfg["artifact_root"])
        plan = SweepPlan(
            config=config, dataset_path=dataset_path, dataset=dataset, sweep_id=sweep_id, study_storage=study,
            tracking_uri=uri, tracker=tracker, common_tags=common_run_tags(config, dataset, sweep_id),
            progress=progress, register_model=register_model,
        )
        sweep_out = run_stage(
            "sweep", runs_dir,
            inputs={"dataset": dataset.fingerprint},
            config={"sweep": config.fingerprint(), "tracking": uri, "experiment": experiment},
            produce=partial(sweep_stage, plan=plan),
            still_valid=partial(parent_run_alive, tracker, sweep_id),
        )
    finally:
        if sweep_lock is not None:
            sweep_lock.release()
        if ray_started:
            import ray

            ray.shutdown()
    info = dict(sweep_out.info)
    info.update(reused=sweep_out.reused, outputs=sweep_out.path, dataset_path=dataset_path,
                experiment=experiment, experiment_id=tracker.experiment_id, tracking_uri=uri)
    view = mlflow_logging.share_runs_view(
        tracker.client, tracker.experiment_id, parent_run_id=info["parent_run_id"],
        param_columns=[f"{spec.target}.{spec.param}" for spec in config.search.values()])
    link = mlflow_logging.ui_link(uri, tracker.experiment_id, view)
    info["ui_link"] = link
    info["summary"] = reporting.closing_summary(
        model=config.model, dataset=dataset.name, best=info["best"], final_test=info["final"].get("test"),
        counts=info["counts"], experiment=experiment, experiment_id=tracker.experiment_id,
        parent_run_id=info["parent_run_id"], tracking_uri=uri, study_storage=info["study_storage"],
        study_name=info["study_name"], outputs=sweep_out.path, resumed=info.get("resumed", False),
        grid=info.get("grid"), duplicate_proposals=info.get("duplicate_proposals", 0),
        ui_link=link, trial_name=info.get("best_trial_name"),
        seed_lines=seed_replicates.summary_lines([seed_replicates.Replica(**r) for r in info.get("replicas", [])]),
    ) + ("\n(reused: inputs unchanged since the last run)" if sweep_out.reused else "")
    if not sweep_out.reused:
        mlflow_logging.set_description(tracker.client, info["parent_run_id"], info["summary"])
    return info


def common_run_tags(config: SweepConfig, dataset: Dataset, sweep_id: str) -> dict[str, Any]:
    """The tags of the sweep's parent run and of every trial's child run."""
    from pipeline.provenance import git_commit

    commit = git_commit()
    return {
        tags.GIT_COMMIT: commit, tags.MLFLOW_SOURCE_COMMIT: commit,
        tags.DATASET: dataset.name, tags.DATASET_FINGERPRINT: dataset.fingerprint,
        tags.SEED: config.seed, tags.MODEL: config.model, tags.SWEEP_ID: sweep_id,
    }


def resolve_trial(config: SweepConfig, trial_config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's full parameters (model defaults and trainer settings filled in), as tracked."""
    from clear_core.models import resolve_params
    from clear_core.trainer import TrainConfig

    model_params, train = config.split_params(trial_config)
    train = {**train, "valid_metric": config.metric.split("/", 1)[1]}
    return {"model": resolve_params(config.model, model_params),
            "train": asdict(TrainConfig.resolve(train))}


def parent_run_alive(tracker: Tracker, sweep_id: str, info: Mapping[str, Any]) -> bool:
    """Whether a cached sweep stage's MLflow parent run is still there and finished: without it
    the cached output would point at runs that have gone, so the stage runs again."""
    found = tracker.find_run(**{tags.SWEEP_ID: sweep_id, tags.ROLE: "sweep"})
    return found is not None and found.info.run_id == info.get("parent_run_id") \
        and found.info.status == "FINISHED"


def sweep_stage(work: Path, *, plan: SweepPlan) -> dict[str, Any]:
    """The sweep stage's work in ``work``: the trials inside an MLflow parent run (one child run
    per trial), then :func:`finish_sweep`. An interrupted sweep raises KeyboardInterrupt, so the
    stage is not recorded as finished."""
    import yaml

    from pipeline import mlflow_logging
    from pipeline.console import SweepProgress
    from pipeline.ray_runtime import ray_address
    from pipeline.sweep import run_sweep
    from pipeline.trial_tracking import MLflowTrialCallback

    config, tracker = plan.config, plan.tracker
    resolved = config.to_dict()
    config_file = work / "sweep_config.yaml"
    config_file.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    # The best trial's configuration is logged when it is known; the search space is an artifact.
    parent_params = mlflow_logging.sweep_params(config)
    data_input = mlflow_logging.dataset_input(plan.dataset, plan.dataset_path)
    parent_tags = {**plan.common_tags, tags.OPTUNA_STORAGE: plan.study_storage, tags.RAY_ADDRESS: ray_address(),
                   tags.TRACKING_URI: plan.tracking_uri}
    with tracker.parent_run(f"{config.model} sweep {config.name}", sweep_id=plan.sweep_id,
                            tags=parent_tags, params=parent_params) as parent:
        tracker.log_artifact(parent, config_file)
        tracker.log_artifact(parent, mlflow_logging.write_search_space(config, work / "search_space.json"))
        mlflow_logging.log_dataset(tracker.client, parent, data_input)
        callback = MLflowTrialCallback(
            tracker, parent, model=config.model, resolve=partial(resolve_trial, config),
            tags=dict(plan.common_tags), search_keys=list(config.search),
            dataset_input=data_input, modalities=plan.dataset.modalities,
        )
        # A progress bar (done / pruned / failed, best so far) instead of Tune's status table.
        bar = [SweepProgress(config.num_samples, config.metric, config.mode)] if plan.progress else []
        outcome = run_sweep(config, plan.dataset_path, study_storage=plan.study_storage,
                            callbacks=[callback, *bar], progress=False)
        if callback.interrupted:
            raise KeyboardInterrupt(f"sweep {plan.sweep_id} interrupted")
        tracker.set_tags(parent, {tags.OPTUNA_STUDY_NAME: outcome.study_name,
                                  tags.STORAGE_PATH: outcome.storage_path,
                                  tags.BEST_TRIAL: outcome.best.trial_id,
                                  tags.SELECTED_PARAMS: json.dumps(outcome.best.params, sort_keys=True, default=str)})
        return finish_sweep(config, outcome, plan.dataset_path, work, tracker, parent, plan.tracking_uri,
                            modalities=plan.dataset.modalities, register_model=plan.register_model,
                            dataset=plan.dataset, run_tags=plan.common_tags)


def finish_sweep(config: SweepConfig, outcome: SweepOutcome, dataset_path: str, work: Path, tracker: Tracker,
                 parent: str, uri: str, *, modalities: list[str] | None = None,
                 register_model: str | None = None, dataset: Dataset,
                 run_tags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """After the trials: final evaluation of the best checkpoint, the selected point on
    ``config.final_seeds`` (:mod:`pipeline.seed_replicates`), tables, figures, artifacts.

    Writes ``outcome.json`` into ``work`` and returns what it holds (the sweep stage's summary)."""
    from pipeline import mlflow_logging, reporting
    from pipeline.checkpoint_evaluation import evaluate_checkpoint, fetch_checkpoint
    from pipeline.sweep import coverage_report

    best = outcome.best
    model_params, train = config.split_params(best.params)
    train = {**train, "valid_metric": config.metric.split("/", 1)[1]}
    final: dict[str, Any] = {}
    if best.checkpoint:
        local = fetch_checkpoint(best.checkpoint, work / "downloaded_checkpoint", config.storage.endpoint_url)
        final = evaluate_checkpoint(dataset_path, local, model=config.model, model_params=model_params,
                                    train=train, spectrum=True)
        ckpt_dir = work / "best_checkpoint"
        ckpt_dir.mkdir(exist_ok=True)
        shutil.copy2(final["checkpoint"], ckpt_dir / Path(final["checkpoint"]).name)
        final["checkpoint"] = str(ckpt_dir / Path(final["checkpoint"]).name)
        shutil.rmtree(work / "downloaded_checkpoint", ignore_errors=True)
        tracker.log_artifact(parent, ckpt_dir, "best_checkpoint")
    else:
        log.warning("best trial %s left no checkpoint; no final evaluation", best.trial_id)
    tracker.log_metrics(parent, {f"best/valid/{k}": v for k, v in best.valid.items()}, step=best.best_epoch or 0)
    tracker.log_metrics(parent, {f"best/test/{k}": v for k, v in best.test.items()}, step=best.best_epoch or 0)
    tracker.log_metrics(parent, {"best/epoch": best.best_epoch or 0}, step=best.best_epoch or 0)
    best_params = resolve_trial(config, best.params)
    replicas = []
    if config.final_seeds:
        from pipeline import seed_replicates

        replicas = seed_replicates.replicate(
            config, dataset=dataset, model_params=model_params, train=train, tracker=tracker, parent=parent,
            run_tags={**(run_tags or {}), tags.SWEEP_ID: outcome.sweep_id, tags.MODEL: config.model},
            resolved_params=best_params)
    record = mlflow_logging.record_sweep_end(
        tracker, parent, config=config, outcome=outcome, final=final, train=train, work=work,
        best_params=best_params, modalities=modalities, dataset_path=dataset_path,
        register_model=register_model,
    )

    rows = reporting.results_rows(outcome.trials, metric=config.metric, mode=config.mode, selected=best.trial_id)
    for path in reporting.write_results_table(rows, work):
        tracker.log_artifact(parent, path)
    mlflow_logging.log_results_table(tracker.client, parent, rows)
    heatmap = reporting.plot_heatmap(outcome.trials, work / "heatmap_recall_lambda_k.png")
    if heatmap is not None:
        tracker.log_artifact(parent, heatmap)
    if final.get("spectrum"):
        from pipeline.plots import plot_spectrum

        spectrum = plot_spectrum(final["spectrum"], work / "spectrum_best_trial.png",
                                 title=f"best trial {best.trial_id}: cross-modal spectrum before/after projection")
        tracker.log_artifact(parent, spectrum)
    counts = {s: sum(1 for t in outcome.trials if t.status == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    outcome_json = {
        "sweep_id": outcome.sweep_id,
        "model": config.model,
        "dataset_path": str(dataset_path),
        "best_model_params": model_params,
        "best_train": train,
        "best": asdict(best),
        "trials": [asdict(t) for t in outcome.trials],
        "counts": counts,
        "final": final,
        "replicas": [asdict(r) for r in replicas],
        "replica_summary": seed_summary_of(replicas),
        "parent_run_id": parent,
        "study_storage": outcome.study_storage,
        "study_name": outcome.study_name,
        "storage_path": outcome.storage_path,
        "resumed": outcome.resumed,
        "tracking_uri": uri,
        **record,
    }
    coverage, coverage_tags = coverage_report(outcome)
    outcome_json.update(coverage)
    (work / "outcome.json").write_text(json.dumps(outcome_json, indent=2, default=str) + "\n", encoding="utf-8")
    tracker.log_artifact(parent, work / "outcome.json")
    tracker.set_tags(parent, {**{tags.trials_count_tag(k): v for k, v in counts.items()}, **coverage_tags})
    mlflow_logging.prune_after_sweep(config, outcome)
    return outcome_json


def seed_summary_of(replicas: list[Any]) -> dict[str, Any]:
    """The test figures over the replicas' seeds (empty without ``final_seeds``)."""
    from pipeline.seed_replicates import summarise

    return {"seeds": [r.seed for r in replicas], "test": summarise(replicas)} if replicas else {}
