"""MLflow tracking of sweeps: experiments, nested runs, statuses, params, metric steps and
artifacts, against a real SQLite store and a real ``mlflow server`` whose artifacts go to a moto
S3 server, both on 127.0.0.1. Trials come from a tiny real Ray Tune run with ASHA."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.tracking import Tracker, TrackingError
from pipeline.trial_tracking import MLflowTrialCallback

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def s3_server():
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="mlflow")
        yield endpoint, s3
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def mlflow_server(s3_server, tmp_path_factory):
    endpoint, s3 = s3_server
    port = free_port()
    workdir = tmp_path_factory.mktemp("mlflow-server")
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{workdir}/server.db",
            "--artifacts-destination", "s3://mlflow/artifacts", "--workers", "1",
        ],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(uri + "/health", proc, timeout=90)
        yield uri, s3
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def local_ray():
    import ray
    from ray import cloudpickle

    # Test modules are not importable on Ray workers; ship this module's trainable by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def sqlite_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path}/mlruns.db"


# --- names and keys ----------------------------------------------------------------------

def test_metric_keys_keep_their_groups_and_replace_only_what_mlflow_rejects():
    assert tracking.mlflow_key("valid/recall@20") == "valid/recall_at_20"
    assert tracking.mlflow_key("train_loss") == "train/loss"
    assert tracking.mlflow_key("projection/rank") == "projection/rank"


def test_a_trial_result_logs_the_best_epoch_metrics_under_best():
    result = {"epoch": 3, "train_loss": 0.5, "valid/recall@20": 0.2, "test/recall@20": 0.25, "best_epoch": 2,
              "best_valid": 0.3, "best": {"valid": {"recall@20": 0.3}, "test": {"recall@20": 0.28}},
              "node_id": "n", "finished": True}
    assert tracking.numeric_metrics(result) == {
        "epoch": 3.0, "train/loss": 0.5, "valid/recall_at_20": 0.2, "test/recall_at_20": 0.25, "best/epoch": 2.0,
        "best/valid/recall_at_20": 0.3, "best/test/recall_at_20": 0.28,
    }


def test_parameters_that_cannot_act_are_not_logged():
    from pipeline.mlflow_logging import applicable_params

    flat = {"model.modality_weights.image": 0.1, "model.modality_weights.audio": 0.9, "model.projection": "fixed",
            "model.energy_ratio": 0.9, "model.redundancy_rank": 4}
    assert applicable_params(flat, ["image", "text"]) == {
        "model.modality_weights.image": 0.1, "model.projection": "fixed", "model.redundancy_rank": 4}
    assert "model.energy_ratio" in applicable_params({**flat, "model.projection": "dynamic"}, ["image", "audio"])


def test_run_name_lists_the_papers_parameters_first_by_their_symbols():
    name = tracking.run_name("clear", {"refresh_every": 2, "learning_rate": 0.001, "redundancy_rank": 8,
                                       "projection_strength": 0.9})
    assert name == "clear k=8 lam=0.9 tau=2 lr=0.001"
    assert tracking.run_name("clear", {"model": {"redundancy_rank": 4}}) == "clear k=4"


def test_study_storage_lies_beside_the_sqlite_tracking_database():
    assert tracking.default_study_storage("sqlite:///runs/x/mlruns.db") == "sqlite:///runs/x/optuna.db"
    assert tracking.default_study_storage("sqlite:///mlruns.db") == "sqlite:///optuna.db"
    assert tracking.default_study_storage("http://h:5000", "sqlite:///s.db") == "sqlite:///s.db"


def test_tracking_uri_comes_from_the_environment_unless_given(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert tracking.resolve_tracking_uri() == "http://example:5000"
    assert tracking.resolve_tracking_uri("sqlite:////abs/a.db") == "sqlite:////abs/a.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    configured = tracking.load_pipeline_config()["tracking_uri"]
    assert tracking.resolve_tracking_uri() == tracking.absolute_uri(configured)


def test_a_relative_sqlite_uri_is_pinned_to_the_directory_it_was_resolved_in(monkeypatch, tmp_path):
    # MLflow keeps one store per URI string per process: a relative URI resolved in a second
    # folder would otherwise still write to the first folder's database.
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    monkeypatch.chdir(first)
    in_first = tracking.resolve_tracking_uri("sqlite:///mlruns.db")
    monkeypatch.chdir(second)
    in_second = tracking.resolve_tracking_uri("sqlite:///mlruns.db")
    assert in_first == f"sqlite:///{first.resolve()}/mlruns.db"
    assert in_second == f"sqlite:///{second.resolve()}/mlruns.db"
    assert tracking.absolute_uri("http://h:5000") == "http://h:5000"


def test_unreachable_server_fails_fast_naming_its_address():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingError, match=uri.replace(".", r"\.")):
        tracking.check_reachable(uri, timeout_s=2)
    assert time.monotonic() - start < 5


def test_missing_sqlite_folder_is_reported_before_any_run(tmp_path):
    with pytest.raises(TrackingError, match="does not exist"):
        tracking.check_reachable(f"sqlite:///{tmp_path}/nowhere/mlruns.db")


# --- parent run lifecycle (SQLite) ---------------------------------------------------------

def test_an_interrupted_parent_run_is_reopened_by_the_same_sweep_id_a_finished_one_is_not(sqlite_uri):
    tracker = Tracker(sqlite_uri, "clearrec-synthetic")
    with pytest.raises(KeyboardInterrupt):
        with tracker.parent_run("sweep a", sweep_id="s1", params={"model": {"k": 2}}) as first:
            raise KeyboardInterrupt
    assert tracker.client.get_run(first).info.status == "KILLED"
    with tracker.parent_run("sweep a", sweep_id="s1", params={"model": {"k": 2}}) as again:
        assert tracker.client.get_run(again).info.status == "RUNNING"
    assert again == first
    assert tracker.client.get_run(first).info.status == "FINISHED"
    assert tracker.client.get_run(first).data.params == {"model.k": "2"}
    with tracker.parent_run("sweep a", sweep_id="s1") as fresh:
        pass
    assert fresh != first
    # Artifacts of a sqlite store go to a local folder beside the database.
    location = tracker.client.get_experiment(tracker.experiment_id).artifact_location
    assert location.startswith("file://") and "mlartifacts" in location


@pytest.mark.parametrize("exc, status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_crashed_or_interrupted_sweep_leaves_no_run_running(sqlite_uri, exc, status):
    tracker = Tracker(sqlite_uri, "clearrec-synthetic")
    with pytest.raises(type(exc)):
        with tracker.parent_run("sweep", sweep_id=f"s-{status}") as parent:
            child = tracker.start_run("clear k=2", parent_run_id=parent)
            raise exc
    assert tracker.client.get_run(parent).info.status == status
    assert tracker.client.get_run(child).info.status == "KILLED"


# --- a real Tune run through the callback ----------------------------------------------------

def trainable(config):
    from ray import tune

    if config["redundancy_rank"] == 3:
        raise RuntimeError("deliberate failure")
    for epoch in range(1, 5):
        value = config["projection_strength"] * epoch
        tune.report({
            "epoch": epoch, "train_loss": 1.0 / epoch, "valid/recall@20": value,
            "test/recall@20": value / 2, "best_epoch": epoch, "finished": epoch == 4,
        })


def run_tiny_sweep(tracker: Tracker, parent: str):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    callback = MLflowTrialCallback(
        tracker, parent, model="clear", tags={"clearrec.seed": 7},
        resolve=lambda c: {"model": {**c, "refresh_every": 1}, "train": {"learning_rate": 0.001}},
    )
    # One at a time, strongest first, so that ASHA prunes the weaker ones deterministically.
    space = {
        "redundancy_rank": tune.grid_search([8, 4, 3, 2]),
        "projection_strength": tune.sample_from(
            lambda spec: {8: 0.9, 4: 0.3, 3: 0.5, 2: 0.1}[spec.config["redundancy_rank"]]
        ),
    }
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="valid/recall@20", mode="max", max_concurrent_trials=1,
            scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2),
        ),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), callbacks=[callback], verbose=0),
    )
    tuner.fit()


def check_sweep_runs(tracker: Tracker, parent: str) -> dict:
    children = {r.data.params["model.redundancy_rank"]: r for r in tracker.children(parent)}
    assert set(children) == {"8", "4", "3", "2"}
    statuses = {k: r.info.status for k, r in children.items()}
    assert statuses == {"8": "FINISHED", "4": "KILLED", "3": "FAILED", "2": "KILLED"}
    best = children["8"]
    assert best.info.run_name == f"clear k=8 lam=0.9 [{best.data.tags[tracking.TAG_TRIAL_ID]}]"
    assert best.data.tags[tracking.PARENT_TAG] == parent
    assert best.data.tags["clearrec.seed"] == "7"
    assert best.data.params == {
        "model.redundancy_rank": "8", "model.projection_strength": "0.9", "model.refresh_every": "1",
        "train.learning_rate": "0.001",
    }
    history = tracker.client.get_metric_history(best.info.run_id, "valid/recall_at_20")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [round(m.value, 6) for m in history] == [0.9, 1.8, 2.7, 3.6]
    pruned = tracker.client.get_metric_history(children["4"].info.run_id, "valid/recall_at_20")
    assert [m.step for m in pruned] == [1]
    assert children["4"].data.tags["clearrec.outcome"] == "PRUNED"
    # Where each trial ran: the node it reported from (here the one local node).
    import socket

    import ray

    assert best.data.tags["clearrec.ray_hostname"] == socket.gethostname()
    assert best.data.tags["clearrec.ray_hostnames"] == socket.gethostname()
    assert best.data.tags["clearrec.ray_node_id"] == ray.get_runtime_context().get_node_id()
    return children


def test_tune_trials_become_nested_runs_with_truthful_statuses_in_sqlite(sqlite_uri, local_ray):
    tracker = Tracker(sqlite_uri, "clearrec-synthetic")
    with tracker.parent_run("clear sweep", sweep_id="tiny") as parent:
        run_tiny_sweep(tracker, parent)
    check_sweep_runs(tracker, parent)
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    running = tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'RUNNING'")
    assert running == []


def test_tracking_server_with_s3_artifacts(mlflow_server, local_ray, tmp_path):
    uri, s3 = mlflow_server
    tracking.check_reachable(uri, timeout_s=5)
    tracker = Tracker(uri, "clearrec-synthetic")
    with tracker.parent_run("clear sweep", sweep_id="server", tags={"optuna.storage": "sqlite:///optuna.db"}) as parent:
        run_tiny_sweep(tracker, parent)
        table = tmp_path / "results.csv"
        table.write_text("trial,recall\n1,0.5\n")
        tracker.log_artifact(parent, table)
    check_sweep_runs(tracker, parent)
    run = tracker.client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.tags["optuna.storage"] == "sqlite:///optuna.db"
    assert [a.path for a in tracker.client.list_artifacts(parent)] == ["results.csv"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(k.endswith(f"{parent}/artifacts/results.csv") for k in keys), keys
