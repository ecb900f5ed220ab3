"""What a sweep shows in MLflow beyond runs and statuses: one metric vocabulary, the parameters
that apply, the dataset as an MLflow dataset input, the run description, the results table, the
per-trial artifacts and the link that opens the sweep in the UI.

Metric vocabulary (parents and children alike), grouped by ``/`` so that the UI's charts group
them: ``train/loss``, ``valid/recall_at_20``, ``test/...``, ``projection/rank``, ``time/...``
and, on every run, ``best/valid/...``/``best/test/...``: the metrics at the run's
best-validation epoch (on the parent, the best trial's). MLflow refuses ``@`` in keys, so
``recall@20`` is written ``recall_at_20``; ``/`` is kept.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import tags

log = logging.getLogger(__name__)

#: The host and port `make ui` serves on; a tracking server is its own UI.
DEFAULT_UI = "http://127.0.0.1:5000"

# Tune result keys renamed into the vocabulary; keys mapped to None are bookkeeping, not metrics.
RENAMED = {
    "train_loss": "train/loss",
    "train_seconds": "time/train_seconds",
    "eval_seconds": "time/eval_seconds",
    "best_epoch": "best/epoch",
    "best_valid": None,  # the same number as best/valid/<selection metric>
    "resumed_from": None,
}


def metric_key(name: str) -> str:
    """``valid/recall@20`` -> ``valid/recall_at_20``; ``train_loss`` -> ``train/loss``."""
    name = RENAMED.get(name, name) or ""
    return name.replace("@", "_at_")


def trial_metrics(result: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, float]:
    """A trial's Tune result as MLflow metrics: the epoch's own figures, and ``best/valid/*``,
    ``best/test/*`` (the metrics at the best-validation epoch so far, so the last value of a
    run is the one reported for it)."""
    skip = set(skip)
    out: dict[str, float] = {}
    for key, value in result.items():
        if key in skip:
            continue
        if key == "best" and isinstance(value, Mapping):
            for split in ("valid", "test"):
                for name, v in (value.get(split) or {}).items():
                    _put(out, f"best/{split}/{name}", v)
            continue
        _put(out, key, value)
    return out


def _put(out: dict[str, float], key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    name = metric_key(key)
    if name and math.isfinite(float(value)):
        out[name] = float(value)


# --- parameters ------------------------------------------------------------------------------

def applicable_params(flat: Mapping[str, Any], modalities: Sequence[str] | None) -> dict[str, Any]:
    """Resolved parameters less those that cannot act in this run: a modality's weight when
    the dataset has no such modality, the dynamic-projection ``energy_ratio`` when the
    projection is fixed or off. ``flat`` has dotted keys (``model.modality_weights.audio``)."""
    out = {}
    projection = next((v for k, v in flat.items() if k.rsplit(".", 1)[-1] == "projection"), None)
    for key, value in flat.items():
        parts = key.split(".")
        if modalities is not None and "modality_weights" in parts[:-1] and parts[-1] not in modalities:
            continue
        if parts[-1] == "energy_ratio" and projection is not None and projection != "dynamic":
            continue
        out[key] = value
    return out


def sweep_params(config: Any) -> dict[str, Any]:
    """The few sweep-level settings worth a column; the whole search space is an artifact
    (``search_space.json``), not dozens of params."""
    return {
        "sweep.name": config.name, "sweep.sampler": config.sampler, "sweep.num_samples": config.num_samples,
        "sweep.metric": config.metric, "sweep.scheduler": config.scheduler.type,
    }


def write_search_space(config: Any, path: Path) -> Path:
    space = {"model": config.model, "metric": config.metric, "mode": config.mode,
             "search": config.to_dict().get("search", {})}
    path.write_text(json.dumps(space, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


# --- dataset input ---------------------------------------------------------------------------

def dataset_input(dataset: Any, source: str, context: str = "training") -> Any:
    """The dataset as an MLflow dataset input: its name, its content fingerprint as the digest
    (MLflow shows the first characters), where it lies, the schema of its interaction rows
    and a profile with the per-split counts and feature sizes."""
    from mlflow.entities import Dataset as DatasetEntity
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types import ColSpec, Schema

    schema = Schema([ColSpec("long", "user"), ColSpec("long", "item"), ColSpec("string", "split")])
    profile = {
        "users": int(dataset.n_users), "items": int(dataset.n_items),
        **{f"{split}_rows": int(len(getattr(dataset, split))) for split in ("train", "valid", "test")},
        "features": {m: int(f.shape[1]) for m, f in dataset.features.items()},
        "fingerprint": dataset.fingerprint,
    }
    entity = DatasetEntity(
        name=dataset.name,
        # MLflow stores at most 36 characters of a digest; the whole fingerprint is in the profile.
        digest=dataset.fingerprint[:36],
        source_type="local", source=json.dumps({"uri": str(source)}),
        schema=json.dumps({"mlflow_colspec": schema.to_dict()}), profile=json.dumps(profile),
    )
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])


def log_dataset(client: Any, run_id: str, entity: Any | None) -> None:
    if entity is not None:
        client.log_inputs(run_id, datasets=[entity])


# --- the parent's closing record ---------------------------------------------------------------

VIEW_TAG_PREFIX = "mlflow.sharedViewState."


def ui_link(tracking_uri: str, experiment_id: str, view_key: str) -> str:
    """The sweep's runs table in the UI's model-training view (MLflow 3 opens on GenAI
    otherwise), set up by :func:`share_runs_view`: the tracking server's own address, else
    where `make ui` serves."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else DEFAULT_UI
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={view_key}"


def share_runs_view(client: Any, experiment_id: str, *, parent_run_id: str, param_columns: Sequence[str]) -> str:
    """Store a view of the runs table for this sweep (MLflow's shared view state: an
    experiment tag the UI reads when the link names its key): the runs table with the searched
    parameters, ``best/valid``/``best/test`` Recall@20, the best epoch and each trial's outcome
    as columns. Returns the key.

    The view filters nothing and sorts by start time: the UI nests trials under their parent
    only then (a filter or a metric sort lists every run flat), so the newest sweep's parent is
    the first row, its trials one click (its ⊞) away. A shared view cannot open a parent
    expanded: MLflow leaves the per-run state (expanded, pinned, hidden) out of shared views."""
    columns = [f"params.`{name}`" for name in param_columns]
    columns += [f"metrics.`{m}`" for m in ("best/valid/recall_at_20", "best/test/recall_at_20", "best/epoch")]
    columns += [f"tags.`{tags.OUTCOME}`", "attributes.`Dataset`"]
    state = {
        "searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
    }
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + parent_run_id, json.dumps(state))
    return parent_run_id


def set_description(client: Any, run_id: str, text: str) -> None:
    """The run's description in the UI (MLflow's note tag), in Markdown."""
    client.set_tag(run_id, "mlflow.note.content", "```\n" + text + "\n```")


def log_results_table(client: Any, run_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """The results as an MLflow table (the Artifacts tab and the evaluation views read it)."""
    if not rows:
        return
    columns = list(rows[0])
    data = {c: [row.get(c) for row in rows] for c in columns}
    client.log_table(run_id, data=data, artifact_file="results_table.json")


# --- per-trial artifacts ---------------------------------------------------------------------

def plot_learning_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: Path, title: str) -> Path | None:
    """``train/loss`` and the validation/test metrics over epochs, one panel each."""
    panels = [k for k in ("train/loss", "valid/recall_at_20", "valid/ndcg_at_20", "test/recall_at_20")
              if history.get(k)]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clear_core.atomic_io import write_atomic

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    loss = history.get("train/loss") or []
    if loss:
        axes[0].plot([s for s, _ in loss], [v for _, v in loss], "o-", ms=3)
    axes[0].set_title("train/loss", fontsize=9)
    axes[0].set_xlabel("epoch")
    for key in panels:
        if key == "train/loss":
            continue
        points = history[key]
        axes[1].plot([s for s, _ in points], [v for _, v in points], "o-", ms=3, label=key)
    axes[1].set_xlabel("epoch")
    axes[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        return write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        plt.close(fig)


def metric_history(client: Any, run_id: str, keys: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for key in keys:
        points = client.get_metric_history(run_id, key)
        out[key] = sorted((int(m.step), float(m.value)) for m in points)
    return out


def log_trial_artifacts(client: Any, trials: Sequence[Any], run_ids: Mapping[str, str], work: Path, *,
                        spectrum_of: Any | None = None) -> int:
    """On each trial's child run: its learning curves and, where ``spectrum_of(trial)`` gives
    one, the projector spectrum at its best epoch. Returns how many runs got artifacts.
    A figure that cannot be drawn is logged and skipped: the sweep has already succeeded."""
    from pipeline.plots import plot_spectrum

    done = 0
    for trial in trials:
        run_id = run_ids.get(trial.trial_id)
        if run_id is None:
            continue
        folder = work / "trial_artifacts" / trial.trial_id
        folder.mkdir(parents=True, exist_ok=True)
        try:
            history = metric_history(client, run_id, ("train/loss", "valid/recall_at_20", "valid/ndcg_at_20",
                                                      "test/recall_at_20"))
            curves = plot_learning_curves(history, folder / "learning_curves.png",
                                          f"trial {trial.trial_id} ({trial.status})")
            if curves is not None:
                client.log_artifact(run_id, str(curves))
            spectrum = spectrum_of(trial) if spectrum_of is not None else None
            if spectrum:
                png = plot_spectrum(spectrum, folder / "spectrum_best_epoch.png",
                                    title=f"trial {trial.trial_id}, best epoch {trial.best_epoch}: "
                                          "cross-modal spectrum before/after projection")
                client.log_artifact(run_id, str(png))
            done += 1
        except Exception as exc:  # noqa: BLE001 - a figure must not sink a finished sweep
            log.warning("trial %s: no artifacts (%s)", trial.trial_id, exc)
    return done


# --- the end of a sweep ------------------------------------------------------------------------

def record_sweep_end(tracker: Any, parent: str, *, config: Any, outcome: Any, final: Mapping[str, Any],
                     train: Mapping[str, Any], work: Path, best_params: Mapping[str, Any],
                     modalities: Sequence[str], dataset_path: str, register_model: str | None = None) -> dict[str, Any]:
    """What the parent and the children get once the trials are over: the best trial's
    configuration as the parent's params, the best model (registered when asked), Optuna's
    study plots, and each child's learning curves and projector spectrum. Returns what goes
    into ``outcome.json`` (model URI, registered version, the best trial's name)."""
    from pipeline import tracking
    from pipeline.model_logging import log_best_model
    from pipeline.study_plots import write_study_plots

    best = outcome.best
    existing = tracker.client.get_run(parent).data.params
    tracker.log_params(parent, applicable_params(tracking.flatten(dict(best_params)), modalities), existing=existing)
    record: dict[str, Any] = {"best_trial_name": tracking.trial_name(config.model, best.params, best.trial_id)}
    if final.get("checkpoint"):
        record.update(log_best_model(tracker.client, parent, dataset_path=dataset_path, checkpoint=final["checkpoint"],
                                     final=final, train=train, register=register_model))
    plots = write_study_plots(outcome.study_storage, outcome.study_name, work / "optuna")
    if plots:
        tracker.log_artifact(parent, work / "optuna", "optuna")
    run_ids = {run.data.tags.get(tags.TRIAL_ID): run.info.run_id for run in tracker.children(parent)}
    log_trial_artifacts(tracker.client, outcome.trials, run_ids, work,
                        spectrum_of=lambda trial: trial_spectrum(config, trial, dataset_path, work))
    return record


def trial_spectrum(config: Any, trial: Any, dataset_path: str, work: Path) -> dict[str, Any] | None:
    """The cross-modal spectrum before/after projection of a trial's best-epoch weights (its
    checkpoint's ``best.pt``); None for models without a projector or trials without a checkpoint."""
    from pipeline.checkpoint_evaluation import evaluate_checkpoint, fetch_checkpoint

    if not trial.checkpoint:
        return None
    model_params, train = config.split_params(trial.params)
    local = fetch_checkpoint(trial.checkpoint, work / "trial_checkpoint", config.storage.endpoint_url)
    try:
        out = evaluate_checkpoint(dataset_path, local, model=config.model, model_params=model_params,
                                  train={**train, "valid_metric": config.metric.split("/", 1)[1]},
                                  splits=("valid",), spectrum=True)
    finally:
        if local != Path(trial.checkpoint):
            import shutil

            shutil.rmtree(local, ignore_errors=True)
    return out.get("spectrum")


def prune_after_sweep(config: Any, outcome: Any) -> int:
    """Apply ``storage.keep_after_sweep`` (see :mod:`pipeline.checkpoint_retention`)."""
    from pipeline.checkpoint_retention import prune_trial_checkpoints
    from pipeline.storage import resolve_storage

    storage = resolve_storage(config.storage.path, config.storage.endpoint_url)
    return prune_trial_checkpoints(outcome.trials, outcome.best.trial_id, storage, config.storage.keep_after_sweep)


def latest_sweep_link(tracking_uri: str) -> str | None:
    """The link of the newest sweep in the store (what `make ui` prints), None when there is none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], f"tags.`{tags.ROLE}` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
    if not runs:
        return None
    run = runs[0]
    experiment_tags = client.get_experiment(run.info.experiment_id).tags
    if VIEW_TAG_PREFIX + run.info.run_id in experiment_tags:
        return ui_link(tracking_uri, run.info.experiment_id, run.info.run_id)
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else DEFAULT_UI
    return f"{base}/#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning"


if __name__ == "__main__":  # `make ui`: python -m pipeline.mlflow_logging [TRACKING_URI]
    import sys

    from pipeline.tracking import resolve_tracking_uri

    link = latest_sweep_link(resolve_tracking_uri(sys.argv[1] if len(sys.argv) > 1 else None))
    print(f"Latest sweep: {link}" if link else "No sweep in this store yet (run `make sweep`).")
