"""The sweep's own faults (issues 22 and 23): what a sweep refuses before anything starts, what it
does when started twice, when stores are created by two drivers at once, and what it runs of a
grid.

The catalogue below holds one row per case: the command-line input, the expected exit code and
the words the error must contain. Every row also checks that nothing was started: no stage
output, no Optuna study, no MLflow store. The remaining tests exercise the mechanisms themselves
(the sweep lock, store creation by racing drivers, trials that must not be retried, grid
coverage) on real SQLite stores and a real local Ray.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "sweeps" / "smoke.yaml")


def local_cpus() -> int:
    from ray._private.utils import get_num_cpus

    return int(get_num_cpus())


def sweep_file(folder: Path, **changes) -> str:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(Path(SMOKE).read_text()), **changes}))
    return str(path)


def search_with(name: str, spec: dict) -> dict:
    search = yaml.safe_load(Path(SMOKE).read_text())["search"]
    return {**search, name: spec}


# (id, sweep-file changes, extra CLI arguments, expected exit, words the error must contain)
CATALOGUE = [
    ("asha-grace-above-max-epochs", {}, ["--max-epochs", "1", "--set", "scheduler.grace_period=3"], 2,
     ["scheduler.grace_period: 3", "at most 1 (train.max_epochs)"]),
    ("asha-grace-above-max-t", {}, ["--set", "scheduler.max_t=2", "--set", "scheduler.grace_period=3"], 2,
     ["scheduler.grace_period: 3", "at most 2 (scheduler.max_t)"]),
    ("k-zero-in-a-choice-list",
     {"search": search_with("redundancy_rank", {"type": "choice", "values": [2, 0, 4]})}, [], 2,
     ["search.redundancy_rank.values[1] = 0", "redundancy_rank (k): expected an integer >= 1"]),
    ("tau-zero-in-a-choice-list",
     {"search": search_with("refresh_every", {"type": "choice", "values": [0, 1]})}, [], 2,
     ["search.refresh_every.values[0] = 0", "refresh_every (tau): expected an integer >= 1"]),
    ("lambda-range-above-one",
     {"search": search_with("projection_strength", {"type": "uniform", "low": 0.5, "high": 1.5})}, [], 2,
     ["search.projection_strength.high = 1.5", "projection_strength (lambda): expected a number in [0, 1]"]),
    ("tau-int-range-from-zero",
     {"search": search_with("refresh_every", {"type": "int", "low": 0, "high": 3})}, [], 2,
     ["search.refresh_every.low = 0", "refresh_every (tau)"]),
    ("searched-train-field-out-of-range",
     {"search": {**search_with("learning_rate", {"type": "choice", "values": [0.001, 0.0]})}}, [], 2,
     ["search.learning_rate.values[1] = 0.0", "learning_rate: expected > 0"]),
    ("more-cpus-than-any-node", {}, ["--set", "resources.cpu=64"], 2,
     ["each trial asks for 64 CPU", f"offers {local_cpus()} CPU", "no trial could ever start"]),
    ("a-custom-resource-no-node-has", {"resources": {"cpu": 1, "gpu": 0, "custom": {"tpu_slice": 1}}}, [], 2,
     ["each trial asks for 1 CPU, 1 tpu_slice", "offers", "0 tpu_slice"]),
    ("grid-cap-above-the-grid", {"sampler": "grid"}, ["--num-samples", "13"], 2,
     ["num_samples: 13 is more than the 12 points of the grid"]),
]


@pytest.mark.parametrize(("changes", "args", "code", "words"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_a_sweep_fault_known_before_anything_starts_is_refused_with_nothing_started(
    tmp_path, monkeypatch, capsys, changes, args, code, words
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    started = time.monotonic()
    got = main(["sweep", "--config", sweep_file(tmp_path, **changes), "--tracking-uri", uri,
                "--num-samples", "1", "--no-progress", *args])
    err = capsys.readouterr().err
    assert got == code, err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    # Nothing started: no stage ran, no study, no MLflow store, no results folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]
    assert time.monotonic() - started < 60


def test_a_twenty_point_grid_with_the_default_budget_runs_all_twenty():
    from pipeline.sweep_config import load_sweep_config

    config = load_sweep_config(None, {"sampler": "grid", "search": {
        "redundancy_rank": {"type": "choice", "values": [2, 4, 8, 16, 20]},
        "projection_strength": {"type": "choice", "values": [0.3, 0.5, 0.7, 0.9]},
    }})
    # default.yaml's num_samples (12) is a TPE budget; a grid runs every point.
    assert config.grid_size == 20 and config.num_samples == 20
    assert len({tuple(p.items()) for p in config.grid_points()}) == 20
    capped = load_sweep_config(None, {"sampler": "grid", "num_samples": 12, "search": dict(config.to_dict()["search"])})
    assert capped.num_samples == 12 and capped.grid_size == 20


def test_the_summary_says_how_much_of_the_grid_ran_and_names_what_was_skipped():
    from pipeline.reporting import coverage_lines

    assert coverage_lines({"size": 20, "ran": 20, "skipped": []}) == ["Grid: all 20 points ran, each once"]
    (line,) = coverage_lines({"size": 4, "ran": 3, "skipped": [{"redundancy_rank": 8, "refresh_every": 2}]})
    assert line == "Grid: 3 of 4 points ran; 1 skipped by the num_samples cap: redundancy_rank=8 refresh_every=2"


# --- placement: what the cluster can ever offer --------------------------------------------------


@pytest.mark.parametrize(("request_", "nodes", "types", "verdict", "words"), [
    ({"CPU": 1}, [("a", {"CPU": 2})], None, "fits", []),
    ({"CPU": 64}, [("a", {"CPU": 2}), ("b", {"CPU": 8})], None, "never",
     ["asks for 64 CPU", "largest node of the Ray cluster (b) offers 8 CPU", "no autoscaler"]),
    ({"CPU": 1, "GPU": 2}, [("a", {"CPU": 4, "GPU": 1}), ("b", {"CPU": 4, "GPU": 1})], None, "never",
     ["asks for 1 CPU, 2 GPU", "offers 4 CPU, 1 GPU"]),
    ({"CPU": 1, "GPU": 1}, [("head", {"CPU": 2})], [("gpu-workers", {"CPU": 8, "GPU": 1})], "wait",
     ["node type gpu-workers"]),
    ({"CPU": 1, "GPU": 4}, [("head", {"CPU": 2})], [("gpu-workers", {"CPU": 8, "GPU": 1})], "never",
     ["largest node type the autoscaler can add (gpu-workers) offers 8 CPU, 1 GPU"]),
])
def test_a_trial_request_is_judged_by_the_largest_node_and_the_node_types_an_autoscaler_may_add(
    request_, nodes, types, verdict, words
):
    from pipeline.ray_runtime import placement_verdict

    got, message = placement_verdict(request_, nodes, types)
    assert got == verdict
    for word in words:
        assert word in message, message


# --- the sweep lock -------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pipeline.locks import SweepLock
    SweepLock(sys.argv[1], sys.argv[2], describe="the holder").acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def start_holder(url: str, sweep_id: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, sweep_id], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_running_sweep_is_refused_a_second_driver_and_a_killed_one_leaves_no_stuck_lock(tmp_path):
    from pipeline.locks import SweepLock, SweepRunningError

    url = f"sqlite:///{tmp_path}/optuna.db"
    holder = start_holder(url, "clear-smoke-abc")
    try:
        with pytest.raises(SweepRunningError) as info:
            SweepLock(url, "clear-smoke-abc").acquire()
        message = str(info.value)
        assert "sweep clear-smoke-abc is already running" in message
        assert f"pid {holder.pid}" in message and "the holder" in message
        # Another sweep in the same store is not held up.
        SweepLock(url, "another-sweep").acquire().release()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # kill -9 left the row behind; its process is gone, so the next driver takes it over.
    lock = SweepLock(url, "clear-smoke-abc").acquire()
    lock.release()


def test_a_lock_held_from_another_host_expires_only_without_heartbeat(tmp_path):
    import json

    import sqlalchemy as sa

    from pipeline import locks

    url = f"sqlite:///{tmp_path}/optuna.db"
    first = locks.SweepLock(url, "s").acquire()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # pretend the holder runs on another machine
        conn.execute(sa.text(f"UPDATE {locks.TABLE} SET owner = :o"),
                     {"o": json.dumps({"host": "elsewhere", "pid": 1, "started": "t"})})
    with pytest.raises(locks.SweepRunningError, match="on elsewhere"):
        locks.SweepLock(url, "s").acquire()
    first._stop.set()  # its heartbeat stops, as when that machine dies
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {locks.TABLE} SET heartbeat = :h"), {"h": time.time() - locks.STALE_S - 1})
    locks.SweepLock(url, "s").acquire().release()
    engine.dispose()


def test_the_same_sweep_started_while_it_runs_is_refused_before_its_mlflow_parent_opens(
    tmp_path, monkeypatch, capsys
):
    """The CLI: a second start of a running sweep (same config, same data) exits 2 naming the
    running driver, and neither opens nor fails the first one's MLflow parent."""
    from pipeline.stages import dataset_stages
    from pipeline.sweep import sweep_id_for
    from pipeline.sweep_config import load_sweep_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config_path = sweep_file(tmp_path, num_samples=1, train={"max_epochs": 1, "patience": 1, "batch_size": 512})
    config = load_sweep_config(config_path)
    from clear_core.data.loading import load_dataset

    dataset = load_dataset(dataset_stages(config, tmp_path / "runs"))
    holder = start_holder(f"sqlite:///{tmp_path}/optuna.db", sweep_id_for(config, dataset))
    try:
        code = main(["sweep", "--config", config_path, "--tracking-uri", f"sqlite:///{tmp_path}/mlruns.db",
                     "--in-process", "--no-progress"])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "is already running: the holder started" in err and f"pid {holder.pid}" in err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


# --- stores created by drivers started together -----------------------------------------------------

RACER = textwrap.dedent("""
    import sys, time
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.005)
    from pipeline.locks import ensure_tracking_store
    from pipeline.optuna_search import rdb_storage
    ensure_tracking_store(sys.argv[1])
    rdb_storage(sys.argv[2])
    print("ok")
""")


def test_drivers_started_together_on_a_fresh_store_all_create_it_without_error(tmp_path):
    """Without the creation lock, three such processes fail with sqlite3.OperationalError
    ("table ... already exists", "duplicate column name") from MLflow's schema creation."""
    start = time.time() + 20  # all imports done, then all at once
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, f"sqlite:///{tmp_path}/mlruns.db",
                          f"sqlite:///{tmp_path}/optuna.db", str(start)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-1500:] for _, err in outs]
    assert all(out.strip() == "ok" for out, _ in outs)


# --- trials on a real local Ray --------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def failing_trainable(config):
    """Reports a configuration error, then fails with it; counts its attempts in a file."""
    from ray import tune

    from clear_core.errors import ConfigError
    from pipeline.sweep import CONFIG_ERROR_KEY

    with open(config["attempts"], "a") as handle:
        handle.write("x")
    error = ConfigError("redundancy_rank (k): expected an integer >= 1, got 0")
    tune.report({CONFIG_ERROR_KEY: str(error), "epoch": 0, "finished": False})
    raise error


def test_a_configuration_error_in_a_trial_is_not_retried(local_ray, tmp_path):
    from ray import cloudpickle, tune

    from pipeline.sweep import _no_retry_callback

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    attempts = tmp_path / "attempts"
    grid = tune.Tuner(
        failing_trainable,
        param_space={"attempts": str(attempts)},
        run_config=tune.RunConfig(storage_path=str(tmp_path / "results"), name="noretry", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2),
                                  callbacks=[_no_retry_callback()]),
    ).fit()
    assert attempts.read_text() == "x"  # once, although max_failures allows two retries
    assert grid[0].error is not None


@pytest.mark.parametrize(("num_samples", "ran", "skipped"), [(None, 4, 0), (3, 3, 1)], ids=["whole", "capped"])
def test_a_grid_sweep_runs_each_point_once_or_names_the_points_its_cap_skipped(
    local_ray, tmp_path, num_samples, ran, skipped
):
    from clear_core.data.synthetic import write_synthetic
    from pipeline.sweep import coverage_report, run_sweep
    from pipeline.sweep_config import load_sweep_config

    data = tmp_path / "data"
    write_synthetic(data, n_users=80, n_items=60, n_interactions=900, modalities={"image": 16, "text": 12})
    overrides = {
        "sampler": "grid", "model_params": {"embedding_size": 16, "knn_k": 5},
        "search": {"redundancy_rank": {"type": "choice", "values": [2, 4]},
                   "refresh_every": {"type": "choice", "values": [1, 2]}},
        "train": {"max_epochs": 1, "patience": 1, "batch_size": 256}, "scheduler.type": "none",
        "storage.path": str(tmp_path / "results"),
    }
    if num_samples:
        overrides["num_samples"] = num_samples
    config = load_sweep_config(None, overrides)
    outcome = run_sweep(config, str(data), study_storage=f"sqlite:///{tmp_path}/optuna.db", progress=False)
    points = [tuple(t.params.values()) for t in outcome.trials]
    assert len(points) == len(set(points)) == ran
    fields, tags = coverage_report(outcome)
    assert fields["grid"]["size"] == 4 and fields["grid"]["ran"] == ran
    assert len(fields["grid"]["skipped"]) == skipped == int(tags["clearrec.grid_skipped"])
    for point in fields["grid"]["skipped"]:
        assert tuple(point.values()) not in points


# --- a driver killed with SIGKILL ----------------------------------------------------------------

LOCAL_RAY_DRIVER = textwrap.dedent("""
    import time
    from pipeline.ray_runtime import init_ray
    init_ray(num_cpus=1)
    print("up", flush=True)
    time.sleep(600)
""")


def test_a_killed_drivers_private_ray_leaves_no_process_behind(tmp_path):
    """kill -9 of the driver alone (not its process group): Ray's GCS and raylet die with it,
    and its two agents, which would wait 60 s to report to the dead GCS, go too."""
    from test_multinode import session_members

    proc = subprocess.Popen([sys.executable, "-c", LOCAL_RAY_DRIVER], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "up"
        assert len(session_members({proc.pid})) > 3  # the driver and its Ray
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while session_members({proc.pid}) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:60]
                for pid in session_members({proc.pid}) if Path(f"/proc/{pid}").exists()}
        assert not left, left
    finally:
        for pid in session_members({proc.pid}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_sweep_resumed_after_kill_9_logs_no_step_twice_and_leaves_no_spurious_fail(tmp_path):
    """kill -9 of the driver alone mid-sweep, then the same command: it resumes (the dead
    driver's lock is taken over), no child logs a step twice, Optuna is never told twice, the
    study holds one trial per sweep trial and no FAIL, and the dead driver's Ray is gone."""
    import optuna
    from test_multinode import session_members

    from pipeline import tracking
    from pipeline.optuna_search import sweep_trials

    config = sweep_file(tmp_path, num_samples=4, max_concurrent=1, max_failures=0,
                        train={"max_epochs": 5, "patience": 5, "batch_size": 256},
                        scheduler={"type": "none", "grace_period": 1, "reduction_factor": 2, "max_t": None})
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")},
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pipeline", "sweep", "--config", config, "--no-progress", "--in-process"]
    log_file = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=log_file, stderr=subprocess.STDOUT)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            time.sleep(1)
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            with contextlib.suppress(Exception):
                tracker = tracking.Tracker(uri, "clearrec-synthetic")
                done = tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'FINISHED'")
                if any(r.data.tags.get(tracking.TAG_ROLE) == "trial" for r in done):
                    break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while session_members({proc.pid}) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:200]
                for pid in session_members({proc.pid}) if Path(f"/proc/{pid}").exists()}
        assert not left, left
    finally:
        for pid in session_members({proc.pid}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "(resumed)" in rerun.stdout
    assert "Cannot tell" not in rerun.stderr and "Optuna refused" not in rerun.stderr
    tracker = tracking.Tracker(uri, "clearrec-synthetic")
    parent = tracker.find_run(**{tracking.TAG_ROLE: "sweep"})
    children = tracker.children(parent.info.run_id)
    assert len(children) == 4
    for child in children:
        steps = [m.step for m in tracker.client.get_metric_history(child.info.run_id, "valid_recall_at_20")]
        assert len(steps) == len(set(steps)), (child.info.run_name, steps)
    outcome = yaml.safe_load(next((tmp_path / "runs" / "sweep").glob("*/outcome.json")).read_text())
    study = optuna.load_study(study_name=outcome["study_name"], storage=f"sqlite:///{tmp_path}/optuna.db")
    states = sorted(t.state.name for t in sweep_trials(study))
    assert states == sorted(t["status"] for t in outcome["trials"]) and "FAIL" not in states
