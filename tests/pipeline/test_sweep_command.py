"""``clearrec sweep`` and ``clearrec evaluate`` end to end on a tiny synthetic dataset: a real local
Ray, real Tune + Optuna trials, a real SQLite MLflow store and Optuna study; checked through
MLflow's and Optuna's own clients."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import tracking
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]


# Small enough for a 2-core CI box: ~100 users, 3 trials of at most 3 epochs, two at once.
TINY_SWEEP = {
    "name": "clear-tiny",
    "dataset": {"synthetic": True, "raw": False, "set": {"n_users": 100, "n_items": 80, "n_interactions": 1500}},
    "train": {"max_epochs": 3, "patience": 1, "batch_size": 512},
    "search": {
        "redundancy_rank": {"type": "choice", "values": [2, 4]},
        "projection_strength": {"type": "choice", "values": [0.5, 0.9]},
        "refresh_every": {"type": "choice", "values": [1, 2]},
    },
    "num_samples": 3,
    "max_concurrent": 2,
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": None},
    "storage": {"path": "runs/ray_results"},
}


def write_sweep(folder: Path, **changes) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_SWEEP, **changes}))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """One real sweep in its own folder (relative mlruns.db, optuna.db, runs/ as in `make sweep`)."""
    folder = tmp_path_factory.mktemp("sweep")
    config = write_sweep(folder)
    old = os.getcwd()
    os.chdir(folder)
    env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        started = time.monotonic()
        code = main(["sweep", "--config", str(config), "--no-progress", "--in-process", "--register", "clear-tiny"])
        seconds = time.monotonic() - started
    finally:
        os.chdir(old)
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    assert code == 0
    outcome_files = list((folder / "runs" / "sweep").glob("*/outcome.json"))
    assert len(outcome_files) == 1
    outcome = json.loads(outcome_files[0].read_text())
    tracker = tracking.Tracker(f"sqlite:///{folder}/mlruns.db", "clearrec-synthetic")
    return {"folder": folder, "config": config, "outcome": outcome, "tracker": tracker, "seconds": seconds}


def test_one_parent_run_with_a_child_per_trial_and_no_run_left_running(finished_sweep):
    tracker, outcome = finished_sweep["tracker"], finished_sweep["outcome"]
    parent = tracker.client.get_run(outcome["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = tracker.children(parent.info.run_id)
    assert len(children) == TINY_SWEEP["num_samples"] == len(outcome["trials"])
    expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    by_trial = {t["trial_id"]: t for t in outcome["trials"]}
    for child in children:
        trial = by_trial[child.data.tags[tracking.TAG_TRIAL_ID]]
        assert child.info.status == expected[trial["status"]]
        p = trial["params"]
        # One name in Ray, MLflow and the summary.
        assert child.info.run_name == (
            f"clear k={p['redundancy_rank']} lam={p['projection_strength']} tau={p['refresh_every']} "
            f"[{trial['trial_id']}]"
        )
        # Every resolved field, not only the searched ones.
        assert child.data.params["model.redundancy_rank"] == str(p["redundancy_rank"])
        assert child.data.params["train.batch_size"] == "512"
        assert child.data.params["train.learning_rate"] == "0.001"
        history = tracker.client.get_metric_history(child.info.run_id, "valid/recall_at_20")
        assert [m.step for m in history] == list(range(1, trial["epochs"] + 1))
        # The run's best/* are the figures at its best-validation epoch, as the sweep reports them.
        metrics = child.data.metrics
        at_best = {m.step: m.value for m in history}[trial["best_epoch"]]
        assert metrics["best/valid/recall_at_20"] == pytest.approx(trial["valid"]["recall@20"]) == pytest.approx(at_best)
        assert metrics["best/test/recall_at_20"] == pytest.approx(trial["test"]["recall@20"])
        test_history = {m.step: m.value for m in
                        tracker.client.get_metric_history(child.info.run_id, "test/recall_at_20")}
        assert metrics["best/test/recall_at_20"] == pytest.approx(test_history[trial["best_epoch"]])
        assert metrics["best/epoch"] == trial["best_epoch"]
        assert "train/loss" in metrics and not any("@" in k or k.startswith("valid_") for k in metrics)
        # The dataset is an input of every run: its fingerprint as digest, per-split counts.
        (data_input,) = child.inputs.dataset_inputs
        assert data_input.dataset.digest == outcome["final"]["dataset_fingerprint"][:36]
        assert json.loads(data_input.dataset.profile)["train_rows"] > 0
        # Only parameters that act: the synthetic data has no audio.
        assert "model.modality_weights.audio" not in child.data.params
        # Its own artifacts: learning curves and the projector spectrum at its best epoch.
        names = {a.path for a in tracker.client.list_artifacts(child.info.run_id)}
        assert {"learning_curves.png", "spectrum_best_epoch.png"} <= names
        # The projector's state each epoch, beside the metrics: here the trial's fixed k.
        ranks = tracker.client.get_metric_history(child.info.run_id, "projection/rank")
        assert [(m.step, m.value) for m in ranks] == [(e, p["redundancy_rank"]) for e in range(1, trial["epochs"] + 1)]
    running = tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'RUNNING'")
    assert running == []


def test_parent_run_carries_tags_params_and_artifacts(finished_sweep):
    tracker, outcome = finished_sweep["tracker"], finished_sweep["outcome"]
    parent = tracker.client.get_run(outcome["parent_run_id"])
    tags = parent.data.tags
    assert tags["clearrec.sweep_id"] == outcome["sweep_id"]
    assert tags["clearrec.seed"] == "999"
    assert len(tags["clearrec.dataset_fingerprint"]) == 64
    assert tags["clearrec.git_commit"] != ""
    # The study lies beside the MLflow database.
    # Beside mlruns.db, named by its absolute path so that the tag holds wherever it is read.
    assert tags["optuna.storage"] == f"sqlite:///{finished_sweep['folder'].resolve()}/optuna.db"
    assert parent.data.params["sweep.num_samples"] == "3"
    # The parent's params are the best trial's configuration, not the model defaults.
    best = outcome["best"]["params"]
    for name in ("redundancy_rank", "projection_strength", "refresh_every"):
        assert parent.data.params[f"model.{name}"] == str(best[name])
    # The search space is one artifact, not dozens of params.
    assert not any(k.startswith("sweep.search") for k in parent.data.params)
    assert len(parent.data.params) < 45
    names = {a.path for a in tracker.client.list_artifacts(parent.info.run_id)}
    assert {"sweep_config.yaml", "search_space.json", "results.csv", "results.md", "results_table.json",
            "outcome.json", "best_checkpoint", "model", "optuna",
            "heatmap_recall_lambda_k.png", "spectrum_best_trial.png"} <= names
    plots = {a.path for a in tracker.client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/optuna_optimization_history.png", "optuna/optuna_intermediate_values.png",
            "optuna/optuna_parallel_coordinate.png"} <= plots
    (data_input,) = parent.inputs.dataset_inputs
    assert data_input.dataset.name == "synthetic"
    assert json.loads(data_input.dataset.profile)["fingerprint"] == tags["clearrec.dataset_fingerprint"]
    # The run description is the closing summary.
    assert "Best configuration (selected on validation)" in tags["mlflow.note.content"]
    assert parent.data.metrics["best/test/recall_at_20"] == pytest.approx(outcome["best"]["test"]["recall@20"])
    ckpt = [a.path for a in tracker.client.list_artifacts(parent.info.run_id, "best_checkpoint")]
    assert ckpt == ["best_checkpoint/best.pt"]


def test_final_evaluation_reproduces_the_best_trials_test_metrics(finished_sweep):
    outcome = finished_sweep["outcome"]
    best, final = outcome["best"], outcome["final"]
    assert final["epoch"] == best["best_epoch"]
    assert final["test"]["recall@20"] == pytest.approx(best["test"]["recall@20"], abs=1e-6)
    assert final["valid"]["recall@20"] == pytest.approx(best["valid"]["recall@20"], abs=1e-6)
    tracker = finished_sweep["tracker"]
    logged = tracker.client.get_run(outcome["parent_run_id"]).data.metrics
    assert logged["best/test/recall_at_20"] == pytest.approx(final["test"]["recall@20"])


def test_the_logged_model_loads_back_and_scores_as_the_checkpoint(finished_sweep):
    import mlflow.pytorch
    import torch

    from clear_core.checkpoints import load_trained_model
    from clear_core.data.loading import load_dataset

    outcome, tracker = finished_sweep["outcome"], finished_sweep["tracker"]
    local = tracker.client.download_artifacts(outcome["parent_run_id"], "model", str(finished_sweep["folder"]))
    model = mlflow.pytorch.load_model(local)
    card = json.loads((Path(local) / "extra_files" / "model_config.json").read_text())
    assert card["dataset_fingerprint"] == outcome["final"]["dataset_fingerprint"]
    assert card["model_params"]["redundancy_rank"] == outcome["best"]["params"]["redundancy_rank"]
    dataset = load_dataset(outcome["dataset_path"])
    # outcome.json was written in the stage's work folder; the checkpoint lies in the finished one.
    checkpoint = next((finished_sweep["folder"] / "runs" / "sweep").glob("*/best_checkpoint/best.pt"))
    reference, _, _ = load_trained_model(dataset, checkpoint, model="clear",
                                         model_params=outcome["best_model_params"], device="cpu")
    users = torch.arange(10)
    with torch.no_grad():
        for net in (model, reference):
            net.eval()
            net.prepare_scoring()
        assert torch.allclose(model.score(users), reference.score(users), atol=1e-6)


def test_register_puts_the_best_model_in_the_registry(finished_sweep):
    outcome, tracker = finished_sweep["outcome"], finished_sweep["tracker"]
    (version,) = tracker.client.search_model_versions("name = 'clear-tiny'")
    assert version.run_id == outcome["parent_run_id"]
    assert version.tags["dataset_fingerprint"] == outcome["final"]["dataset_fingerprint"]
    assert outcome["registered_uri"] == "models:/clear-tiny/1"


def test_results_tables_show_test_only_for_the_selected_configuration(finished_sweep):
    import csv

    outcome = finished_sweep["outcome"]
    folder = next((finished_sweep["folder"] / "runs" / "sweep").glob("*/results.csv")).parent
    rows = list(csv.DictReader((folder / "results.csv").open()))
    with_test = [r["trial"] for r in rows if r["test/recall@20"]]
    assert with_test == [outcome["best"]["trial_id"]]
    assert all(r["valid/recall@20"] for r in rows if r["status"] != "FAIL")


def test_after_the_sweep_only_the_best_trials_checkpoints_are_kept(finished_sweep):
    outcome = finished_sweep["outcome"]
    kept = {t["trial_id"] for t in outcome["trials"] if list(Path(t["path"]).glob("checkpoint_*"))}
    assert kept == {outcome["best"]["trial_id"]}


def test_study_states_match_the_mlflow_statuses(finished_sweep):
    import optuna

    outcome = finished_sweep["outcome"]
    study = optuna.load_study(study_name=outcome["study_name"],
                              storage=f"sqlite:///{finished_sweep['folder']}/optuna.db")
    states = sorted(t.state.name for t in study.trials)
    sweep_states = sorted(t["status"] for t in outcome["trials"])
    assert states == sweep_states


def test_an_unchanged_rerun_reuses_the_sweep_and_logs_nothing_new(finished_sweep, capsys):
    folder, tracker = finished_sweep["folder"], finished_sweep["tracker"]
    before = len(tracker.client.search_runs([tracker.experiment_id]))
    old = os.getcwd()
    os.chdir(folder)
    try:
        started = time.monotonic()
        code = main(["sweep", "--config", str(finished_sweep["config"]), "--no-progress", "--in-process"])
        seconds = time.monotonic() - started
    finally:
        os.chdir(old)
    assert code == 0
    out = capsys.readouterr().out
    assert "reused" in out and finished_sweep["outcome"]["parent_run_id"] in out
    assert "Best configuration (selected on validation)" in out and "make ui" in out
    experiment_id = tracker.experiment_id
    assert (f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={finished_sweep['outcome']['parent_run_id']}") in out
    assert len(tracker.client.search_runs([tracker.experiment_id])) == before
    assert seconds < finished_sweep["seconds"]


def test_evaluate_command_scores_the_best_checkpoint_and_logs_a_run(finished_sweep, capsys):
    folder, outcome = finished_sweep["folder"], finished_sweep["outcome"]
    best = outcome["best"]["params"]
    dataset = next((folder / "runs" / "synthesize").glob("*/dataset"))
    ckpt = next((folder / "runs" / "sweep").glob("*/best_checkpoint"))
    sets = [f"--set={k}={v}" for k, v in best.items()]
    uri = f"sqlite:///{folder}/mlruns.db"
    code = main(["evaluate", str(ckpt), "--dataset", str(dataset), "--model", "clear", "--tracking-uri", uri,
                 "--out", str(folder / "eval"), *sets])
    assert code == 0
    result = json.loads((folder / "eval" / "metrics.json").read_text())
    assert result["test"]["recall@20"] == pytest.approx(outcome["final"]["test"]["recall@20"], abs=1e-6)
    run = finished_sweep["tracker"].client.get_run(result["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("evaluate clear k=")
    assert run.data.metrics["test/recall_at_20"] == pytest.approx(result["test"]["recall@20"])
    capsys.readouterr()


def test_evaluate_takes_everything_from_a_sweep_output_folder(finished_sweep, capsys):
    folder, outcome = finished_sweep["folder"], finished_sweep["outcome"]
    sweep_dir = next((folder / "runs" / "sweep").glob("*/outcome.json")).parent
    code = main(["evaluate", str(sweep_dir), "--no-track", "--out", str(folder / "eval2")])
    assert code == 0
    result = json.loads((folder / "eval2" / "metrics.json").read_text())
    assert result["model"] == "clear"
    assert result["model_params"]["redundancy_rank"] == outcome["best"]["params"]["redundancy_rank"]
    assert result["test"]["recall@20"] == pytest.approx(outcome["final"]["test"]["recall@20"], abs=1e-6)
    capsys.readouterr()


def test_evaluate_refuses_a_checkpoint_trained_with_other_parameters(finished_sweep, capsys):
    folder = finished_sweep["folder"]
    dataset = next((folder / "runs" / "synthesize").glob("*/dataset"))
    ckpt = next((folder / "runs" / "sweep").glob("*/best_checkpoint"))
    code = main(["evaluate", str(ckpt), "--dataset", str(dataset), "--model", "lightgcn", "--no-track"])
    assert code == 2
    assert "does not fit model 'lightgcn'" in capsys.readouterr().err


def test_unreachable_tracking_server_fails_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code = main(["sweep", "--config", str(write_sweep(tmp_path)), "--no-progress"])
    assert code == 2
    assert uri in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_unreachable_s3_results_storage_fails_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    endpoint = f"http://127.0.0.1:{free_port()}"
    config = write_sweep(tmp_path, storage={"path": "s3://results/sweeps", "endpoint_url": endpoint})
    code = main(["sweep", "--config", str(config), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert code == 2
    assert endpoint in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_dataset_folder_that_fails_validation_stops_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bad.inter").write_text("userID\titemID\tx_label\n0\tnot-a-number\t0\n")
    uri = f"sqlite:///{tmp_path}/m.db"
    code = main(["sweep", "--config", str(write_sweep(tmp_path)), "--dataset", str(bad), "--tracking-uri", uri,
                 "--in-process"])
    assert code == 2
    assert "bad.inter" in capsys.readouterr().err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_an_unreachable_ray_cluster_is_a_clear_error_naming_its_address(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    code = main(["sweep", "--config", str(write_sweep(tmp_path)), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert code == 2
    assert f"RAY_ADDRESS={address}: cannot join the Ray cluster" in capsys.readouterr().err


def test_bad_sweep_fields_are_all_reported_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "--config", str(write_sweep(tmp_path)), "--set", "num_samples=many",
                 "--set", "bogus=1", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err
    assert code == 2
    assert "num_samples" in err and "bogus" in err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_whose_every_trial_crashes_closes_every_run_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_sweep(tmp_path, num_samples=2, max_failures=0, train={"max_epochs": 2, "batch_size": 512},
                         fault_injection={"crash_once_at_epoch": 1})
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    code = main(["sweep", "--config", str(config), "--tracking-uri", uri, "--no-progress", "--in-process"])
    assert code == 2
    assert "no trial produced a validation score" in capsys.readouterr().err
    tracker = tracking.Tracker(uri, "clearrec-synthetic")
    runs = tracker.client.search_runs([tracker.experiment_id])
    roles = sorted((r.data.tags[tracking.TAG_ROLE], r.info.status) for r in runs)
    assert roles == [("sweep", "FAILED"), ("trial", "FAILED"), ("trial", "FAILED")]


@pytest.mark.slow
@pytest.mark.parametrize("sig, left", [(signal.SIGKILL, "RUNNING"), (signal.SIGINT, "KILLED")])
def test_a_killed_driver_is_resumed_by_rerunning_the_same_command(tmp_path, sig, left):
    """Kill the driver mid-sweep (SIGKILL: nothing can close its runs; Ctrl-C: the parent is
    closed KILLED); the same command then resumes into the same parent run and ends with every
    run closed."""
    config = write_sweep(tmp_path, num_samples=4, max_concurrent=1,
                         train={"max_epochs": 6, "patience": 6, "batch_size": 256},
                         scheduler={"type": "none", "grace_period": 1, "reduction_factor": 2, "max_t": None})
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [str(Path(sys.executable).parent / "clearrec"), "sweep", "--config", str(config), "--no-progress",
           "--in-process"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tracker = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            time.sleep(2)
            if tracker is None and (tmp_path / "mlruns.db").exists():
                # The driver may still be creating the tables: opening the store then races it.
                with contextlib.suppress(Exception):
                    if (tmp_path / "runs" / "sweep").exists():
                        tracker = tracking.Tracker(f"sqlite:///{tmp_path}/mlruns.db", "clearrec-synthetic")
            if tracker is not None:
                done = tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'FINISHED'")
                if any(r.data.tags.get(tracking.TAG_ROLE) == "trial" for r in done):
                    break
            assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        if sig == signal.SIGINT:
            proc.send_signal(sig)
            assert proc.wait(timeout=120) == 130
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it started (its private Ray) goes too
        proc.wait(timeout=30)
    first_parent = tracker.find_run(**{tracking.TAG_ROLE: "sweep"})
    assert first_parent.info.status == left

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "(resumed)" in rerun.stdout
    parents = tracker.client.search_runs([tracker.experiment_id], f"tags.`{tracking.TAG_ROLE}` = 'sweep'")
    assert [p.info.run_id for p in parents] == [first_parent.info.run_id]
    assert parents[0].info.status == "FINISHED"
    children = tracker.children(first_parent.info.run_id)
    assert len({c.data.tags[tracking.TAG_TRIAL_ID] for c in children}) == 4 == len(children)
    assert all(c.info.status in ("FINISHED", "KILLED", "FAILED") for c in children)


@pytest.mark.slow
def test_baselines_land_in_the_same_experiment_as_clear(finished_sweep):
    folder = finished_sweep["folder"]
    old = os.getcwd()
    os.chdir(folder)
    try:
        code = main(["sweep", "--config", str(finished_sweep["config"]), "--model", "lightgcn", "--no-progress",
                     "--in-process", "--num-samples", "2"])
    finally:
        os.chdir(old)
    assert code == 0
    tracker = finished_sweep["tracker"]
    parents = tracker.client.search_runs([tracker.experiment_id], f"tags.`{tracking.TAG_ROLE}` = 'sweep'")
    assert sorted(p.data.tags["clearrec.model"] for p in parents) == ["clear", "lightgcn"]
    assert all(p.info.status == "FINISHED" for p in parents)


@pytest.mark.slow
def test_cluster_style_run_with_a_tracking_server_and_s3_results(tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI pointing at a real server whose artifacts go to S3 (moto), and Tune's
    results on the same S3: checkpoints are fetched back for the final evaluation."""
    import boto3
    from test_tracking import BIN, stop, wait_http
    from test_tracking import free_port as port

    s3_port = port()
    moto = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        endpoint = f"http://127.0.0.1:{s3_port}"
        wait_http(endpoint + "/", moto)
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        for k, v in creds.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="mlflow")
        s3.create_bucket(Bucket="results")
        ml_port = port()
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(ml_port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", "s3://mlflow/a"],
            cwd=tmp_path, env={**os.environ, "MLFLOW_S3_ENDPOINT_URL": endpoint},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        uri = f"http://127.0.0.1:{ml_port}"
        wait_http(uri + "/health", server, timeout=90)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.chdir(tmp_path)
        config = write_sweep(tmp_path, num_samples=2, storage={"path": "s3://results/sweeps", "endpoint_url": endpoint})
        assert main(["sweep", "--config", str(config), "--no-progress", "--in-process"]) == 0
        tracker = tracking.Tracker(uri, "clearrec-synthetic")
        parent = tracker.find_run(**{tracking.TAG_ROLE: "sweep"})
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["optuna.storage"] == "sqlite:///optuna.db"  # not beside a server's database
        assert len(tracker.children(parent.info.run_id)) == 2
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
        assert any(k.endswith("best_checkpoint/best.pt") for k in keys)
        assert s3.list_objects_v2(Bucket="results").get("KeyCount", 0) > 0
    finally:
        if server is not None:
            stop(server)
        stop(moto)
