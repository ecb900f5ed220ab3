"""MLflow tracking for sweeps: one experiment per dataset, one parent run per sweep, one nested
child run per trial, each closed with the status that says what happened to it.

The child runs are written by a driver-side Tune callback
(:class:`pipeline.trial_tracking.MLflowTrialCallback`), not by Ray's ``setup_mlflow``: trials run
in worker processes, possibly on other nodes, where ``setup_mlflow`` with defaults fails every
trial, leaves runs RUNNING and names every run alike. The driver sees every trial start, report,
stop, error and retry, so it alone can give each child run a name, its parameters, its per-epoch
metrics and a truthful terminal status. This module imports neither Ray nor MLflow at import
time, so the CLI and the tools that only read the tracking settings start fast.

Metric keys: one vocabulary for parents and children, grouped by ``/`` (``valid/recall_at_20``,
``train/loss``, ``best/test/recall_at_20``; see :mod:`pipeline.mlflow_logging`). Each metric is
logged with ``step = epoch``.

Statuses: FINISHED for a trial that trained to its own end (early stopping or max epochs; its
last report carries ``finished: true``), KILLED for a trial the scheduler stopped (pruned), FAILED
for a trial that errored after its retries. The parent is FINISHED when the sweep returns,
FAILED when it raises, KILLED when interrupted; children still RUNNING then are closed KILLED.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clear_core.config import config_dir, load_yaml, validate_fields
from clear_core.errors import ClearrecError
from pipeline.sqlite_store import sqlite_file_problem
from pipeline.tags import MLFLOW_PARENT_RUN, ROLE, SWEEP_ID, TRIAL_ID

log = logging.getLogger(__name__)

TRACKING_ENV = "MLFLOW_TRACKING_URI"

PIPELINE_SCHEMA: dict[str, Any] = {
    "tracking_uri": str,
    "artifact_root": str,
    "study_storage": (str, type(None)),
    "runs_dir": str,
    "health_timeout_s": float,
    "experiment_prefix": str,
}

# Tag names live in pipeline.tags; these aliases keep tracking.TAG_* working for its callers.
TAG_SWEEP_ID = SWEEP_ID
TAG_TRIAL_ID = TRIAL_ID
TAG_ROLE = ROLE
PARENT_TAG = MLFLOW_PARENT_RUN

# Short names for run names; the paper's symbols (k, lambda, tau) are what people scan for.
SHORT_PARAM_NAMES = {
    "redundancy_rank": "k",
    "projection_strength": "lam",
    "refresh_every": "tau",
    "learning_rate": "lr",
    "embedding_size": "d",
    "n_layers": "L",
    "reg_weight": "reg",
}

TERMINAL = ("FINISHED", "FAILED", "KILLED")


class TrackingError(ClearrecError):
    """The tracking server cannot be used; the message names its address."""


def load_pipeline_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``configs/pipeline.yaml`` with ``overrides`` applied (every bad field listed at once)."""
    merged = {**load_yaml(config_dir() / "pipeline.yaml"), **dict(overrides or {})}
    return validate_fields(merged, PIPELINE_SCHEMA, source="configs/pipeline.yaml")


def resolve_tracking_uri(explicit: str | None = None, config: Mapping[str, Any] | None = None) -> str:
    """``explicit``, else ``$MLFLOW_TRACKING_URI``, else the configured default (sqlite); a
    relative sqlite path is made absolute against the working directory (see ``absolute_uri``)."""
    if explicit:
        return absolute_uri(explicit)
    if os.environ.get(TRACKING_ENV):
        return absolute_uri(os.environ[TRACKING_ENV])
    return absolute_uri(str((config or load_pipeline_config())["tracking_uri"]))


def absolute_uri(uri: str) -> str:
    """``sqlite:///mlruns.db`` as ``sqlite:////abs/dir/mlruns.db``. MLflow caches one store per
    URI string for the life of the process, so a relative URI would keep writing to the database
    of the first working directory it was opened in; Ray workers may also run elsewhere."""
    db = sqlite_path(uri)
    if db is None or db.is_absolute() or uri == "sqlite:///:memory:":
        return uri
    return f"sqlite:///{(Path.cwd() / db).resolve().as_posix()}"


def is_server(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def local_artifact_location(uri: str, artifact_root: str, experiment_name: str) -> str | None:
    """Where an experiment's artifacts go: a local folder for sqlite/file backends (beside the
    database), or ``None`` to let a server choose (it proxies ``--artifacts-destination``)."""
    if is_server(uri):
        return None
    root = Path(artifact_root)
    if not root.is_absolute():
        db = sqlite_path(uri)
        root = (db.parent if db is not None else Path.cwd()) / root
    return (root.resolve() / experiment_name).as_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def default_study_storage(tracking_uri: str, configured: str | None = None) -> str:
    """The Optuna study storage: configured, else ``optuna.db`` beside a sqlite MLflow database,
    else ``sqlite:///optuna.db`` in the working directory (a server's database is not ours)."""
    if configured:
        return configured
    db = sqlite_path(tracking_uri)
    if db is not None:
        return f"sqlite:///{(db.parent / 'optuna.db').as_posix()}"
    return "sqlite:///optuna.db"


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fail fast, before any trial, when the tracking backend cannot be used.

    A server must answer ``GET /health`` within ``timeout_s``; a sqlite database's folder must
    exist. The error names the address so that a typo is seen at once.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status != 200:
                    raise TrackingError(f"MLflow tracking server {uri}: /health answered {response.status}")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); check "
                f"{TRACKING_ENV} or start the server (e.g. `mlflow server --host 127.0.0.1`)"
            ) from None
        return
    db = sqlite_path(uri)
    if db is not None and not db.resolve().parent.is_dir():
        raise TrackingError(f"MLflow tracking database {uri}: folder {db.resolve().parent} does not exist")
    if db is not None and (problem := sqlite_file_problem(db)):
        raise TrackingError(f"MLflow tracking database {uri}: {problem}")
    if parsed.scheme not in ("", "file", "sqlite", "postgresql", "mysql", "databricks"):
        raise TrackingError(f"MLflow tracking URI {uri!r}: unsupported scheme {parsed.scheme!r}")


def mlflow_key(name: str) -> str:
    """``valid/recall@20`` -> ``valid/recall_at_20``: MLflow keys may not contain ``@``."""
    from pipeline.mlflow_logging import metric_key

    return metric_key(name)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (``{"model": {"k": 8}}`` -> ``{"model.k": 8}``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    # MLflow's limit on a parameter value; a longer one would fail the whole batch.
    return text if len(text) <= 6000 else text[:5997] + "..."


def short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_name(model: str, params: Mapping[str, Any]) -> str:
    """``clear k=8 lam=0.9 tau=2``: the model, then each searched parameter in a stable order
    (the paper's k, lambda, tau first), prefixes such as ``model.`` dropped."""
    flat = {key.rsplit(".", 1)[-1].rsplit("/", 1)[-1]: value for key, value in flatten(params).items()}
    order = list(SHORT_PARAM_NAMES)
    keys = sorted(flat, key=lambda k: (order.index(k) if k in order else len(order), k))
    parts = [f"{SHORT_PARAM_NAMES.get(k, k)}={short_value(flat[k])}" for k in keys]
    return " ".join([model, *parts])


def trial_name(model: str, params: Mapping[str, Any], trial_id: str) -> str:
    """``clear k=8 lam=0.9 tau=2 [ebc08c61]``: one name for a trial in Ray's table, in MLflow
    and in the summary (the id tells apart two trials of the same point)."""
    return f"{run_name(model, params)} [{trial_id}]"


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics mapping, keys made MLflow-safe."""
    from pipeline.mlflow_logging import trial_metrics

    return trial_metrics(values)


class Tracker:
    """The MLflow side of a sweep, through an explicit ``MlflowClient`` (no fluent global active
    run, so that a callback, a test and the CLI cannot step on each other's runs)."""

    def __init__(self, uri: str, experiment_name: str, *, artifact_root: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri = absolute_uri(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_name = experiment_name
        self.experiment_id = self._experiment(experiment_name, artifact_root)

    def _experiment(self, name: str, artifact_root: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = local_artifact_location(self.uri, artifact_root or "mlartifacts", name)
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - a concurrent driver may have created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # --- runs ---------------------------------------------------------------------------
    def find_run(self, **tags: str) -> Any | None:
        """The newest run of this experiment carrying all ``tags`` (used to resume)."""
        clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=clauses, order_by=["attributes.start_time DESC"], max_results=1
        )
        return runs[0] if runs else None

    def start_run(
        self,
        name: str,
        *,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        resume_tags: Mapping[str, str] | None = None,
        resume_finished: bool = True,
    ) -> str:
        """Create a run (nested under ``parent_run_id`` when given), or, when a run with
        ``resume_tags`` exists already (a resumed sweep), reopen that one. With
        ``resume_finished=False`` a FINISHED run is left alone and a new one is created."""
        existing = self.find_run(**resume_tags) if resume_tags else None
        if existing is not None and not resume_finished and existing.info.status == "FINISHED":
            existing = None
        all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        if existing is not None:
            run_id = existing.info.run_id
            if existing.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            log.info("resuming MLflow run %s (%s)", run_id, name)
        else:
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
            run_id = run.info.run_id
        if params:
            self.log_params(run_id, params, existing=existing.data.params if existing else None)
        if existing is not None:
            self.set_tags(run_id, all_tags)
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any], *, existing: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Param

        flat = {k: param_value(v) for k, v in flatten(params).items()}
        if existing:
            # Parameters are immutable in MLflow; a resumed run re-logs only what it lacks.
            flat = {k: v for k, v in flat.items() if k not in existing}
        items = [Param(k, v) for k, v in sorted(flat.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        if items:
            self.client.log_batch(run_id, tags=items)

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, int(step)) for k, v in numeric_metrics(metrics).items()]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def last_logged_step(self, run_id: str) -> int:
        """The highest step a run has logged metrics at (0: none). Each epoch logs all its keys
        in one batch, so any one key tells."""
        metrics = self.client.get_run(run_id).data.metrics
        if not metrics:
            return 0
        history = self.client.get_metric_history(run_id, sorted(metrics)[0])
        return max((m.step for m in history), default=0)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str) -> None:
        if status not in TERMINAL:
            raise ValueError(f"status {status!r}: expected one of {TERMINAL}")
        self.client.set_terminated(run_id, status=status)

    def children(self, parent_run_id: str) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10000
        )

    def close_children(self, parent_run_id: str, status: str = "KILLED") -> int:
        """Close every child still RUNNING (the sweep ended without Tune telling us about it)."""
        closed = 0
        for run in self.children(parent_run_id):
            if run.info.status == "RUNNING":
                self.end_run(run.info.run_id, status)
                closed += 1
        return closed

    @contextmanager
    def parent_run(
        self,
        name: str,
        *,
        sweep_id: str,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[str]:
        """The sweep's parent run; a re-run with the same ``sweep_id`` reopens it (resume) unless
        it had FINISHED.

        Leaves no run RUNNING: FINISHED on return, KILLED on interrupt, FAILED on error (and its
        children still RUNNING are closed KILLED)."""
        run_id = self.start_run(
            name,
            tags={**(tags or {}), TAG_SWEEP_ID: sweep_id, TAG_ROLE: "sweep"},
            params=params,
            resume_tags={TAG_SWEEP_ID: sweep_id, TAG_ROLE: "sweep"},
            # A finished sweep run again (its outputs deleted) is a new sweep: mixing its trials
            # into the old parent would make one run hold two sweeps.
            resume_finished=False,
        )
        status = "FINISHED"
        try:
            yield run_id
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            try:
                self.close_children(run_id, "KILLED")
                self.end_run(run_id, status)
            except Exception:  # noqa: BLE001 - never hide the sweep's own error behind ours
                log.exception("could not close MLflow run %s", run_id)


def experiment_name(dataset: str, config: Mapping[str, Any] | None = None) -> str:
    """One experiment per dataset, so the UI compares CLEAR and baselines side by side."""
    prefix = (config or load_pipeline_config())["experiment_prefix"]
    return f"{prefix}-{dataset}"
