"""The sweep engine end to end on a real local Ray (2 CPUs, 2 concurrent trials) and tiny
synthetic data: per-epoch results with checkpoints, truthful Optuna states, retries from a
checkpoint, a killed driver resumed, S3 results storage (moto on 127.0.0.1), and every check
that must fail before a trial starts."""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pyarrow.fs as pafs
import pytest
from optuna.trial import TrialState

from clear_core.data.synthetic import write_synthetic
from clear_core.errors import ConfigError, DataError
from pipeline.storage import resolve_storage
from pipeline.sweep import SweepFailedError, run_sweep, unfinished_saved_trials
from pipeline.sweep_config import load_sweep_config

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "sweeps" / "smoke.yaml"
# Small enough that an epoch takes well under a second on one CPU.
TINY_MODEL = {"embedding_size": 16, "knn_k": 5}
EXPECTED_KEYS = {
    "epoch", "train_loss", "valid/recall@20", "valid/ndcg@20", "test/recall@20", "test/map@50",
    "best_epoch", "best_valid", "finished", "resumed_from", "node_id",
    # CLEAR's projector, each epoch (its rank, sigma_1, suppressed energy share)
    "projection/rank", "projection/leading_singular_value", "projection/suppressed_energy_share",
}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_synthetic(out, n_users=120, n_items=80, n_interactions=1500, modalities={"image": 16, "text": 12})
    return str(out)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    # Workers inherit the environment Ray starts with: the moto credentials must be there
    # for trials to write checkpoints to S3.
    mp = pytest.MonkeyPatch()
    for key, value in S3_ENV.items():
        mp.setenv(key, value)
    # One declared GPU (there is none: the trainer's device "auto" still picks the CPU) and a
    # custom resource let the tests see Ray share a GPU between trials and honour custom demands.
    ray.init(
        address="local", num_cpus=2, num_gpus=1, resources={"gpu_stand_in": 2},
        include_dashboard=False, log_to_driver=False,
    )
    yield ray
    ray.shutdown()
    mp.undo()


def config_for(tmp_path: Path, **overrides):
    base = {
        "storage.path": str(tmp_path / "results"),
        "model_params": dict(TINY_MODEL),
        "train.batch_size": 256,
    }
    return load_sweep_config(SMOKE, {**base, **overrides})


def read_text(path: str, fs: pafs.FileSystem | None = None) -> str:
    with (fs or pafs.LocalFileSystem()).open_input_stream(path) as stream:
        return stream.read().decode("utf-8")


def rows_of(trial_path: str, fs: pafs.FileSystem | None = None) -> list[dict]:
    lines = read_text(f"{trial_path}/result.json", fs).splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def study_states(storage: str, name: str) -> list[TrialState]:
    return [t.state for t in optuna.load_study(study_name=name, storage=storage).trials]


def test_sweep_runs_concurrent_trials_reports_every_epoch_and_records_truthful_states(
    local_ray, dataset_dir, tmp_path
):
    config = config_for(tmp_path, **{"resources.gpu": 0.25, "resources.custom": {"gpu_stand_in": 1}})
    study = f"sqlite:///{tmp_path}/optuna.db"
    outcome = run_sweep(config, dataset_dir, study_storage=study, progress=False)

    assert not outcome.resumed
    assert len(outcome.trials) == config.num_samples == 4
    assert {t.status for t in outcome.trials} <= {"COMPLETE", "PRUNED"}
    node = local_ray.get_runtime_context().get_node_id()
    intervals = []
    for trial in outcome.trials:
        rows = rows_of(trial.path)
        assert EXPECTED_KEYS <= set(rows[0]), set(rows[0]) ^ EXPECTED_KEYS
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
        assert [r["finished"] for r in rows[:-1]] == [False] * (len(rows) - 1)
        assert rows[-1]["finished"] == (trial.status == "COMPLETE")
        assert trial.status != "COMPLETE" or trial.epochs == config.max_epochs
        assert trial.node_id == node
        assert rows[0]["resources"] == {"CPU": 1.0, "GPU": 0.25, "gpu_stand_in": 1.0}
        assert set(trial.params) == set(config.search)
        assert trial.valid["recall@20"] == pytest.approx(rows[-1]["best"]["valid"]["recall@20"])
        assert Path(trial.checkpoint, "trainer", "best.pt").exists()
        intervals.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]))
    # Two trials ran at the same time.
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(intervals) for b in intervals[i + 1:])

    # The study holds exactly what Tune saw: PRUNED for every trial the scheduler stopped.
    assert sorted(s.name for s in study_states(study, outcome.study_name)) == sorted(
        t.status for t in outcome.trials
    )
    completed = [t for t in outcome.trials if t.status == "COMPLETE"]
    assert completed and outcome.best in completed
    assert outcome.best.valid["recall@20"] == max(t.valid["recall@20"] for t in completed)

    # The same sweep again finds its finished experiment and starts nothing new.
    again = run_sweep(config, dataset_dir, study_storage=study, progress=False)
    assert again.resumed and again.sweep_id == outcome.sweep_id
    assert [t.trial_id for t in again.trials] == [t.trial_id for t in outcome.trials]
    assert len(study_states(study, outcome.study_name)) == 4


def test_a_trial_that_crashes_once_is_retried_from_its_checkpoint(local_ray, dataset_dir, tmp_path):
    config = config_for(
        tmp_path, num_samples=1, max_failures=1,
        fault_injection={"crash_once_at_epoch": 3}, **{"scheduler.type": "none"},
    )
    study = f"sqlite:///{tmp_path}/optuna.db"
    outcome = run_sweep(config, dataset_dir, study_storage=study, progress=False)

    (trial,) = outcome.trials
    assert trial.status == "COMPLETE" and trial.epochs == config.max_epochs
    rows = rows_of(trial.path)
    # Every epoch reported once: the retry continued rather than starting again from epoch 1.
    assert [r["epoch"] for r in rows] == list(range(1, config.max_epochs + 1))
    assert rows[0]["resumed_from"] == 0
    assert rows[-1]["resumed_from"] >= 1
    assert list(Path(trial.path).glob("fault_injection_crashed_once"))
    assert study_states(study, outcome.study_name) == [TrialState.COMPLETE]


def test_a_sweep_whose_trials_all_fail_says_why_and_records_fail(local_ray, dataset_dir, tmp_path):
    config = config_for(
        tmp_path, num_samples=1, max_failures=0,
        fault_injection={"crash_once_at_epoch": 1}, **{"scheduler.type": "none"},
    )
    study = f"sqlite:///{tmp_path}/optuna.db"
    with pytest.raises(SweepFailedError, match=r"no trial produced a validation score \([0-9a-f]+: .*fault injection"):
        run_sweep(config, dataset_dir, study_storage=study, progress=False)
    (name,) = optuna.get_all_study_names(study)
    assert study_states(study, name) == [TrialState.FAIL]


DRIVER = """
import json, sys
from pipeline.sweep import run_sweep
from pipeline.sweep_config import load_sweep_config
config = load_sweep_config(sys.argv[1], json.loads(sys.argv[4]))
run_sweep(config, sys.argv[2], study_storage=sys.argv[3], progress=False)
"""


def listing(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))


def named_checkpoints_of_unfinished(fs: pafs.FileSystem, experiment: str) -> list[str]:
    """The checkpoints the experiment's saved snapshot names for its unfinished trials (none
    before the first snapshot, or while it is caught mid-write)."""
    return [t.checkpoint.path for t in unfinished_saved_trials(experiment, fs) if t.checkpoint is not None]


def snapshot_statuses(fs: pafs.FileSystem, experiment: str) -> dict[str, str]:
    files = sorted(i.path for i in listing(fs, experiment)
                   if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
    if not files:
        return {}
    try:
        state = json.loads(read_text(files[-1], fs))
    except (json.JSONDecodeError, OSError):  # caught mid-write
        return {}
    out = {}
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        out[trial["trial_id"]] = trial["status"]
    return out


def drop_named_checkpoint(fs: pafs.FileSystem, named: str) -> None:
    """What Tune's race leaves: a newer checkpoint registered (here: the named one, moved to the
    next free index) and the one the snapshot names deleted. On S3, where the snapshot is
    uploaded less often than checkpoints, the race has often happened by itself: then there is
    nothing to do."""
    if fs.get_file_info(named).type == pafs.FileType.NotFound:
        return
    folder = posixpath.dirname(named)
    last = max(int(i.base_name.split("_")[1]) for i in listing(fs, folder)
               if i.base_name.startswith("checkpoint_"))
    newer = posixpath.join(folder, f"checkpoint_{last + 1:06d}")
    # Copy and delete: S3 has no directory rename.
    pafs.copy_files(named, newer, source_filesystem=fs, destination_filesystem=fs)
    fs.delete_dir(named)


@pytest.mark.parametrize("how, where", [
    ("killed", "local"), ("interrupted", "local"),
    ("killed_as_a_checkpoint_was_dropped", "local"), ("killed_as_a_checkpoint_was_dropped", "s3"),
])
def test_a_stopped_driver_is_resumed_without_redoing_finished_trials(
    local_ray, dataset_dir, tmp_path, request, how, where
):
    """``killed``: SIGKILL to the driver and its Ray instance (a lost machine or shell);
    ``interrupted``: SIGINT to the driver (Ctrl-C), which saves state and exits non-zero;
    ``killed_as_a_checkpoint_was_dropped``: killed just after Tune deleted the checkpoint that
    its last saved snapshot names (Tune drops the oldest kept checkpoint before the snapshot
    naming a newer one is saved); here the named checkpoint is moved to a newer name by hand.
    ``where``: the results storage, a local folder or S3 (moto on 127.0.0.1)."""
    study = f"sqlite:///{tmp_path}/optuna.db"
    storage = {"storage.path": str(tmp_path / "results")}
    if where == "s3":
        endpoint, _ = request.getfixturevalue("s3_endpoint")
        storage = {"storage.path": "s3://results/sweeps", "storage.endpoint_url": endpoint}
    overrides = {
        **storage, "model_params": dict(TINY_MODEL), "train.batch_size": 256,
        "train.max_epochs": 6, "scheduler.type": "none",
    }
    config = load_sweep_config(SMOKE, overrides)
    fs, results = resolve_storage(config.storage.path, config.storage.endpoint_url).filesystem_and_path()
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(SMOKE), dataset_dir, study, json.dumps(overrides)],
        cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    finished_before: dict[str, str] = {}
    experiment = ""
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            dirs = [i.path for i in listing(fs, results) if i.type == pafs.FileType.Directory]
            experiment = dirs[0] if dirs else ""
            statuses = snapshot_statuses(fs, experiment) if experiment else {}
            done = [t for t, s in statuses.items() if s == "TERMINATED"]
            caught = 1 <= len(done) < config.num_samples
            if how == "killed_as_a_checkpoint_was_dropped":
                # ... and the saved snapshot names a checkpoint of a running trial.
                caught = caught and bool(named_checkpoints_of_unfinished(fs, experiment))
            if caught:
                finished_before = {t: s for t, s in statuses.items() if s == "TERMINATED"}
                break
            time.sleep(0.2)
    finally:
        if how == "interrupted" and proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=120)
        else:
            code = None
        # The driver and the Ray instance it started go down together, as with a killed shell.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    if not finished_before:
        pytest.fail("the driver was not caught between its first and last trial")
    if how == "interrupted":
        # KeyboardInterrupt out of run_sweep: Python ends by SIGINT (-2).
        assert code == -signal.SIGINT
        # Trials still running when interrupted stay RUNNING in the study, for the resume.
        (name,) = optuna.get_all_study_names(study)
        assert TrialState.RUNNING in study_states(study, name)
    if how == "killed_as_a_checkpoint_was_dropped":
        named = named_checkpoints_of_unfinished(fs, experiment)
        if not named:
            pytest.fail("no unfinished trial had a checkpoint when the driver was killed")
        for path in named:
            drop_named_checkpoint(fs, path)
    trial_dirs = [i.path for i in listing(fs, experiment) if i.type == pafs.FileType.Directory]
    rows_before = {
        # Tune names a trial's folder after the trial's name, which ends in "[<trial id>]".
        t: len(rows_of(next(d for d in trial_dirs if f"[{t}]_" in posixpath.basename(d)), fs))
        for t in finished_before
    }

    outcome = run_sweep(config, dataset_dir, study_storage=study, progress=False)

    assert outcome.resumed
    assert len(outcome.trials) == config.num_samples
    assert all(t.status == "COMPLETE" for t in outcome.trials)
    after = {t.trial_id: t for t in outcome.trials}
    for trial_id, n_rows in rows_before.items():
        assert trial_id in after
        assert len(rows_of(after[trial_id].path, fs)) == n_rows  # not run again
    states = study_states(study, outcome.study_name)
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.COMPLETE) == config.num_samples


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="results")
    yield endpoint, s3
    server.stop()


def test_results_and_checkpoints_go_to_s3(local_ray, dataset_dir, tmp_path, s3_endpoint):
    endpoint, s3 = s3_endpoint
    config = config_for(
        tmp_path, num_samples=2, **{
            "storage.path": "s3://results/sweeps", "storage.endpoint_url": endpoint,
            "train.max_epochs": 2, "scheduler.type": "none",
        },
    )
    study = f"sqlite:///{tmp_path}/optuna.db"
    outcome = run_sweep(config, dataset_dir, study_storage=study, progress=False)
    assert outcome.storage_path == f"s3://results/sweeps/{outcome.sweep_id}"
    assert all(t.status == "COMPLETE" for t in outcome.trials)
    assert outcome.best.checkpoint.startswith(f"s3://results/sweeps/{outcome.sweep_id}/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results", Prefix="sweeps/")["Contents"]]
    prefix = outcome.best.checkpoint[len("s3://results/"):]
    assert any(k.startswith(prefix) and k.endswith("trainer/best.pt") for k in keys)
    assert any(k.endswith("tuner.pkl") for k in keys)
    again = run_sweep(config, dataset_dir, study_storage=study, progress=False)
    assert again.resumed and len(again.trials) == 2


# --- checks before any trial (no Ray needed: they fail before it starts) -----------------------


def test_rank_above_the_projected_dimension_fails_before_any_trial(dataset_dir, tmp_path):
    config = config_for(tmp_path, model_params={"embedding_size": 4, "knn_k": 5})
    study = f"sqlite:///{tmp_path}/optuna.db"
    with pytest.raises(ConfigError, match=r"redundancy_rank \(k\) up to 8 exceeds the projected dimension"):
        run_sweep(config, dataset_dir, study_storage=study, progress=False)
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "optuna.db").exists()


def test_a_dataset_folder_that_fails_validation_is_reported_with_its_file(dataset_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    inter = next(Path(dataset_dir).glob("*.inter"))
    lines = inter.read_text(encoding="utf-8").splitlines()
    lines[3] = "not\ta\tnumber\trow"
    (broken / inter.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for feat in Path(dataset_dir).glob("*_feat.npy"):
        (broken / feat.name).write_bytes(feat.read_bytes())
    with pytest.raises(DataError, match=inter.name):
        run_sweep(config_for(tmp_path), str(broken), study_storage=f"sqlite:///{tmp_path}/o.db", progress=False)
    assert not (tmp_path / "results").exists()


def test_unreachable_s3_fails_before_any_trial_naming_the_endpoint(dataset_dir, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    config = config_for(tmp_path, **{"storage.path": "s3://results/sweeps", "storage.endpoint_url": endpoint})
    start = time.monotonic()
    with pytest.raises(ConfigError, match=endpoint):
        run_sweep(config, dataset_dir, study_storage=f"sqlite:///{tmp_path}/o.db", progress=False)
    assert time.monotonic() - start < 30
