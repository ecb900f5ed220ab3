"""The sweep on the local container cluster (`make cluster-up`), and the faults it must survive:
a worker container killed mid-sweep, the MLflow server stopped for 30 s, the cluster taken down
and up again. Also: trials run on the workers, nothing leaks a secret, nothing runs as root.

Marker `cluster` (`make test-cluster`, in CI after `make test`): needs a Docker engine and the
images from `make images`. Where no engine can start, the suite fails loudly; it never skips.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline.deploy import local_cluster as lc
from pipeline.deploy import parts

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[3]
SETTINGS = lc.ClusterSettings(state_dir=REPO / ".cluster")
WORKERS = SETTINGS.worker_names()
# Every job's log, for the secret check.
JOB_LOGS: list[str] = []


def sweep_file(tmp_path: Path, tag: str, **fields) -> Path:
    """A small sweep on the generator's dataset, with a name of its own so that no earlier
    sweep's outputs are reused."""
    config = {
        "name": f"cluster-{tag}-{uuid.uuid4().hex[:6]}",
        "dataset": {"synthetic": True, "raw": False},
        "num_samples": 4, "max_concurrent": 2,
        "train": {"max_epochs": 6, "patience": 10},
        "scheduler": {"type": "none"},
        **fields,
    }
    path = tmp_path / f"{config['name']}.yaml"
    path.write_text(json.dumps(config))
    return path


class Job:
    """A sweep submitted to the cluster from a thread, its log collected."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.name = json.loads(config.read_text())["name"]
        self.log: list[str] = []
        self.status: str | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.status = lc.submit_sweep(SETTINGS, self.config, ["--no-progress"], write=self.log.append)
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait()
            self.error = exc
        finally:
            JOB_LOGS.append("".join(self.log))

    def wait(self, timeout_s: float = 1500) -> str:
        self.thread.join(timeout_s)
        if self.error:
            raise self.error
        assert not self.thread.is_alive(), f"sweep {self.name} still running after {timeout_s}s"
        assert self.status == "SUCCEEDED", self.text[-4000:]
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.log)


@pytest.fixture(scope="module")
def cluster():
    engine = subprocess.run([str(REPO / "docker" / "engine.sh"), "up"], capture_output=True, text=True, timeout=600)
    if engine.returncode != 0:
        pytest.fail(f"no container engine could be started (docker/engine.sh up):\n{engine.stderr}")
    missing = [SETTINGS.image(k) for k in ("cpu", "postgres", "s3") if not lc.exists("image", SETTINGS.image(k))]
    if missing:
        pytest.fail(f"images missing: {missing}; run `make images`")
    yield lc.up(SETTINGS)
    # Idle Ray nodes left running would load whatever this machine runs next (CI's next run);
    # the volume and the secrets stay, as after `make cluster-down`.
    lc.down(SETTINGS)


def mlflow():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=SETTINGS.mlflow_url)


def sweep_runs(name: str):
    """(parent, children) of the sweep named ``name`` on the cluster's MLflow server."""
    client = mlflow()
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(experiments, f"attributes.run_name = 'clear sweep {name}'")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000)
    return parent, children


def optuna_trial_states(study_name: str) -> list[str]:
    sql = ("select t.state from trials t join studies s on s.study_id = t.study_id "
           f"where s.study_name = '{study_name}' order by t.number")
    out = lc.docker("exec", parts.POSTGRES_HOST, f"{lc.POSTGRES_BIN}/psql", "-U", parts.POSTGRES_USER, "-d",
                    parts.OPTUNA_DATABASE, "-tAc", sql)
    return out.split()


def tune_epochs(parent) -> dict[str, set[int]]:
    """trial id -> epochs it reported, from Tune's own result files on S3 (not from MLflow)."""
    keys = lc.Secrets.load_or_create(SETTINGS.state_dir)
    s3 = lc.s3_client(SETTINGS, keys)
    storage = parent.data.tags["clearrec.storage_path"]
    bucket, prefix = storage[len("s3://"):].split("/", 1) if storage.startswith("s3://") else storage.split("/", 1)
    epochs: dict[str, set[int]] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/result.json"):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
                for line in body.splitlines():
                    if line.strip():
                        row = json.loads(line)
                        epochs.setdefault(row["trial_id"], set()).add(int(row["epoch"]))
    return epochs


def check_nothing_lost(name: str, num_samples: int) -> tuple:
    """The sweep's parent and every child closed with a final state, each child's per-epoch
    metrics complete against Tune's own record, the study holding every trial finished."""
    parent, children = sweep_runs(name)
    assert parent.info.status == "FINISHED"
    assert len(children) == num_samples
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}, [c.info.status for c in children]
    client = mlflow()
    truth = tune_epochs(parent)
    for child in children:
        trial = child.data.tags["clearrec.trial_id"]
        steps = {m.step for m in client.get_metric_history(child.info.run_id, "valid/recall_at_20")}
        assert steps == truth[trial], (trial, sorted(steps), sorted(truth[trial]))
        assert steps == set(range(1, max(steps) + 1)), (trial, sorted(steps))
    states = optuna_trial_states(parent.data.tags["optuna.study_name"])
    assert len(states) == num_samples and set(states) <= {"COMPLETE", "PRUNED"}, states
    return parent, children


def worker_node_ids() -> dict[str, str]:
    keys = lc.Secrets.load_or_create(SETTINGS.state_dir)
    return {n["node_id"]: n.get("node_name") or n["node_ip"] for n in lc.alive_ray_nodes(SETTINGS, keys)
            if not n.get("is_head_node")}


def wait_until(what: str, predicate, timeout_s: float = 900, every_s: float = 3):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def running_child_on_worker(name: str, min_epochs: int):
    """A trial of the running sweep ``name`` that has logged ``min_epochs`` epochs, and its worker."""
    client = mlflow()
    try:
        _, children = sweep_runs(name)
    except AssertionError:
        return None
    for child in children:
        host = child.data.tags.get("clearrec.ray_hostname")
        if child.info.status == "RUNNING" and host in WORKERS:
            if len(client.get_metric_history(child.info.run_id, "valid/recall_at_20")) >= min_epochs:
                return child, host
    return None


def host_files() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return {line[3:] for line in out.splitlines()
            if not line[3:].startswith((".cluster/", "build/", "docker/pip-site/")) and "__pycache__" not in line
            and not line[3:].startswith((".pytest_cache/", ".ruff_cache/"))}


def test_sweep_runs_its_trials_on_the_workers_and_tracks_them_in_mlflow(cluster, tmp_path):
    before = host_files()
    job = Job(sweep_file(tmp_path, "basic"))
    text = job.wait()
    assert "Sweep of clear on" in text and "finished: COMPLETE" in text  # the closing summary
    # Its links open here: the server as this machine reaches it, not the in-cluster name.
    assert f"{SETTINGS.mlflow_url}/#/experiments/" in text and parts.tracking_uri() not in text
    parent, children = check_nothing_lost(job.name, 4)
    workers = worker_node_ids()
    for child in children:
        assert child.data.tags["clearrec.ray_hostname"] in WORKERS
        assert child.data.tags["clearrec.ray_node_id"] in workers
    assert parent.data.tags["optuna.storage"] == parts.postgres_url(parts.OPTUNA_DATABASE)
    assert parent.data.tags["clearrec.storage_path"].startswith(f"s3://{parts.BUCKET}/sweeps/{job.name}/")
    # The job ran on the cluster: nothing of it was written on this machine.
    assert host_files() == before


def test_no_secret_leaks_and_nothing_runs_as_root(cluster):
    keys = lc.Secrets.load_or_create(SETTINGS.state_dir)
    containers = [c.name for c in lc.containers(SETTINGS, keys)]
    inspected = lc.docker("inspect", *containers)
    logs = "".join(lc.docker("logs", name) + subprocess.run(["docker", "logs", name], capture_output=True,
                                                            text=True).stderr for name in containers)
    client = mlflow()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=5000)
    tracked = json.dumps([{"params": r.data.params, "tags": r.data.tags} for r in runs])
    assert runs and JOB_LOGS, "run after a sweep"
    for where, text in {"docker inspect": inspected, "container logs": logs, "MLflow params/tags": tracked,
                        "job logs": "".join(JOB_LOGS)}.items():
        for value in keys.values():
            assert value not in text, f"a secret appears in {where}"
    for name in containers:
        assert lc.docker("exec", name, "id", "-u") != "0", name
        assert json.loads(lc.docker("inspect", name))[0]["Config"]["User"] not in ("", "0", "root"), name


def test_mlflow_server_stopped_for_30s_mid_sweep_loses_no_metric(cluster, tmp_path):
    job = Job(sweep_file(tmp_path, "mlflow-stop", train={"max_epochs": 8, "patience": 10}))
    wait_until("a trial with an epoch logged", lambda: running_child_on_worker(job.name, 1))
    lc.docker("stop", parts.MLFLOW_HOST)
    time.sleep(30)
    lc.docker("start", parts.MLFLOW_HOST)
    job.wait()
    check_nothing_lost(job.name, 4)


def test_worker_killed_mid_sweep_its_trials_resume_on_the_other(cluster, tmp_path):
    job = Job(sweep_file(tmp_path, "worker-kill", train={"max_epochs": 8, "patience": 10}, max_failures=3))
    child, worker = wait_until("a trial two epochs in on a worker", lambda: running_child_on_worker(job.name, 2))
    lc.docker("kill", worker)
    try:
        job.wait()
        _, children = check_nothing_lost(job.name, 4)
        moved = next(c for c in children if c.info.run_id == child.info.run_id)
        hosts = moved.data.tags["clearrec.ray_hostnames"].split(",")
        assert hosts[0] == worker and hosts[-1] in set(WORKERS) - {worker}, hosts
        assert int(moved.data.tags["clearrec.retries"]) >= 1
    finally:
        lc.up(SETTINGS)  # the killed worker back, for whatever runs next


def test_down_then_up_keeps_every_mlflow_run(cluster):
    client = mlflow()
    experiments = [e.experiment_id for e in client.search_experiments()]
    before = {r.info.run_id: r.info.status for r in client.search_runs(experiments, max_results=5000)}
    assert before
    lc.down(SETTINGS)
    assert lc.container_state(parts.MLFLOW_HOST) is None
    lc.up(SETTINGS)
    client = mlflow()
    after = {r.info.run_id: r.info.status for r in client.search_runs(experiments, max_results=5000)}
    assert after == before


def test_a_kept_cluster_opens_to_new_secrets(cluster):
    """What a fresh clone (CI's), or a deleted .cluster/, brings to this machine's cluster: secrets
    its containers and database were not created with. Every part holding secrets is created
    again with the new ones, PostgreSQL's role takes the new password, MLflow starts, runs intact."""
    client = mlflow()
    experiments = [e.experiment_id for e in client.search_experiments()]
    before = {r.info.run_id for r in client.search_runs(experiments, max_results=5000)}
    old_password = lc.Secrets.load_or_create(SETTINGS.state_dir).postgres_password
    # Stopped, not removed: the state an earlier checkout's run, or a machine restart, leaves.
    lc.docker("stop", parts.POSTGRES_HOST, parts.MLFLOW_HOST, timeout=180)
    (SETTINGS.state_dir / "secrets.json").unlink()
    lc.up(SETTINGS)
    assert lc.Secrets.load_or_create(SETTINGS.state_dir).postgres_password != old_password
    after = {r.info.run_id for r in mlflow().search_runs(experiments, max_results=5000)}
    assert after == before
