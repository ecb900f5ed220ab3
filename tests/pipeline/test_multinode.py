"""A real two-node Ray cluster on this machine: sweep trials that need the worker's custom
resource run on the worker, never on the head.

The head and the worker are started with ``ray start --block`` in their own sessions, with
token authentication on both (``RAY_AUTH_MODE=token`` and one shared ``RAY_AUTH_TOKEN``), free
ports and a private ``--temp-dir``. Only the worker carries ``gpu_stand_in``, the custom
resource that stands in for a GPU. The driver runs in a subprocess because Ray keeps its
connection and its cached auth token per process: other tests in this pytest process use
their own local clusters, without our token.

Other engineers run Ray on this machine at the same time, so the cluster is stopped by
killing the process sessions this test started (``ray stop`` would stop everyone's).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 90
DRIVER_TIMEOUT_S = 240
STOP_GRACE_S = 5

pytestmark = pytest.mark.timeout(START_TIMEOUT_S + 2 * DRIVER_TIMEOUT_S + 60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_members(session_ids: set[int]) -> list[int]:
    """PIDs whose session id is one of ``session_ids``.

    Ray's worker processes move to their own process group but stay in the session of the
    ``ray start`` that spawned them, so the session is what identifies this cluster.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        # A zombie is already dead; it only waits for its parent (maybe us) to reap it.
        if fields[0] != "Z" and int(fields[3]) in session_ids:
            pids.append(int(entry.name))
    return pids


def stop_sessions(session_ids: set[int]) -> list[int]:
    """SIGTERM every process of these sessions, then SIGKILL what is left; returns survivors."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5)):
        for pid in session_members(session_ids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while session_members(session_ids) and time.monotonic() < deadline:
            time.sleep(0.2)
    return session_members(session_ids)


@dataclass
class LocalCluster:
    address: str
    env: dict[str, str]
    head_node_id: str
    worker_node_id: str
    temp_dir: Path
    starters: list[subprocess.Popen]


def node_args(temp_dir: Path) -> list[str]:
    """Ports a node would otherwise take from fixed defaults, which a concurrent cluster may hold."""
    return [
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
        f"--temp-dir={temp_dir}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(RAY), "start", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_driver(mode: str, cluster_env: dict[str, str], *extra: str, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, mode, *extra], env=cluster_env, cwd=REPO,
        capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"driver {mode} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def log_tails(temp_dir: Path) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
        for log in sorted(temp_dir.glob("*.log"))
    )


@pytest.fixture(scope="module")
def two_node_cluster():
    # Unix socket paths under the temp dir must stay short (about 107 bytes), hence /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="crmn-", dir="/tmp"))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    gcs_port = free_port()
    address = f"127.0.0.1:{gcs_port}"
    starters: list[subprocess.Popen] = []
    try:
        starters.append(start_node(
            ["--head", f"--port={gcs_port}", "--include-dashboard=false",
             f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}",
             *node_args(temp_dir)],
            env, temp_dir / "head.log",
        ))
        starters.append(start_node(
            [f"--address={address}", '--resources={"gpu_stand_in": 1}', *node_args(temp_dir)],
            env, temp_dir / "worker.log",
        ))
        driver_env = {**env, "RAY_ADDRESS": address}
        try:
            nodes = run_driver("nodes", driver_env, timeout=START_TIMEOUT_S)
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            raise AssertionError(f"cluster did not come up: {exc}\n{log_tails(temp_dir)}") from None
        yield LocalCluster(
            address=address, env=driver_env, head_node_id=nodes["head"],
            worker_node_id=nodes["worker"], temp_dir=temp_dir, starters=starters,
        )
    finally:
        survivors = stop_sessions({p.pid for p in starters})
        for proc in starters:
            proc.wait(timeout=5)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors, f"processes of the test cluster survived SIGKILL: {survivors}"


def test_cluster_has_a_head_and_a_worker_that_alone_carries_the_stand_in_resource(two_node_cluster):
    nodes = run_driver("nodes", two_node_cluster.env, timeout=DRIVER_TIMEOUT_S)
    assert nodes["head"] != nodes["worker"]
    assert nodes["resources"][nodes["worker"]].get("gpu_stand_in") == 1
    assert "gpu_stand_in" not in nodes["resources"][nodes["head"]]


def test_a_client_without_the_cluster_token_is_refused(two_node_cluster):
    # A refused client retries its GCS connection for about 20 s by default; 2 attempts suffice.
    env = {**two_node_cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_gcs_server_port_wait_time_s": "2"}
    proc = subprocess.run(
        [sys.executable, __file__, "nodes"], env=env, cwd=REPO,
        capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S,
    )
    assert proc.returncode != 0
    assert "InvalidAuthToken" in proc.stderr, proc.stderr[-2000:]


def test_tasks_needing_the_stand_in_resource_run_on_the_worker(two_node_cluster):
    placed = run_driver("tasks", two_node_cluster.env, timeout=DRIVER_TIMEOUT_S)
    assert placed["node_ids"], "no task ran"
    assert set(placed["node_ids"]) == {two_node_cluster.worker_node_id}


def test_sweep_trials_needing_the_stand_in_resource_are_all_placed_on_the_worker(two_node_cluster, tmp_path):
    outcome = run_driver("sweep", two_node_cluster.env, str(tmp_path), timeout=DRIVER_TIMEOUT_S)
    assert len(outcome["trials"]) == 2
    assert all(t["status"] == "COMPLETE" for t in outcome["trials"]), outcome
    nodes = {t["node_id"] for t in outcome["trials"]}
    assert nodes == {two_node_cluster.worker_node_id}, (
        f"trials ran on {nodes}; head is {two_node_cluster.head_node_id}"
    )


def test_a_trial_request_no_node_can_meet_is_refused_naming_the_largest_node(two_node_cluster):
    """Two nodes of one CPU each, one gpu_stand_in on the worker: a trial asking for two of it
    (the cluster's total would do, no node does) is a configuration error naming the worker;
    one is placed."""
    verdicts = run_driver("resources", two_node_cluster.env, timeout=DRIVER_TIMEOUT_S)
    assert verdicts["fits"] is None
    assert "each trial asks for 1 CPU, 2 gpu_stand_in" in verdicts["too_big"]
    assert "offers 1 CPU, 1 gpu_stand_in" in verdicts["too_big"] and "no autoscaler" in verdicts["too_big"]
    assert "asks for 2 CPU" in verdicts["two_cpus"] and "offers 1 CPU" in verdicts["two_cpus"]


# --- drivers, run in a subprocess connected to the cluster through RAY_ADDRESS ---------------


def driver_nodes() -> dict:
    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], logging_level="WARNING")
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        if len(alive) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    head = [n["NodeID"] for n in alive if "node:__internal_head__" in n["Resources"]]
    others = [n["NodeID"] for n in alive if "node:__internal_head__" not in n["Resources"]]
    if len(head) != 1 or len(others) != 1:
        raise SystemExit(f"expected one head and one worker, got {alive}")
    return {
        "head": head[0],
        "worker": others[0],
        "resources": {n["NodeID"]: n["Resources"] for n in alive},
    }


def driver_tasks() -> dict:
    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], logging_level="WARNING")

    @ray.remote(num_cpus=1, resources={"gpu_stand_in": 1})
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    return {"node_ids": ray.get([where.remote() for _ in range(2)], timeout=DRIVER_TIMEOUT_S)}


def driver_sweep(work: str) -> dict:
    """A tiny sweep (2 trials, one at a time) whose trials each need one ``gpu_stand_in``."""
    from clear_core.data.synthetic import write_synthetic
    from pipeline.sweep import run_sweep
    from pipeline.sweep_config import load_sweep_config

    data = Path(work) / "data"
    write_synthetic(data, n_users=100, n_items=60, n_interactions=1500)
    config = load_sweep_config(REPO / "configs" / "sweeps" / "smoke.yaml", {
        "num_samples": 2,
        "max_concurrent": 1,
        "max_failures": 0,
        "scheduler.type": "none",
        "train.max_epochs": 1,
        "resources.cpu": 1,
        "resources.custom": {"gpu_stand_in": 1},
        "storage.path": str(Path(work) / "ray_results"),
    })
    outcome = run_sweep(config, str(data), study_storage=f"sqlite:///{work}/optuna.db", progress=False)
    return {"trials": [
        {"trial_id": t.trial_id, "status": t.status, "node_id": t.node_id} for t in outcome.trials
    ]}


def driver_resources() -> dict:
    """The check run before a sweep starts, against this cluster."""
    import ray

    from pipeline.ray_runtime import ClusterResourcesError, ensure_trial_resources

    ray.init(address=os.environ["RAY_ADDRESS"], logging_level="WARNING")
    out = {}
    for name, request in (("fits", {"cpu": 1, "gpu_stand_in": 1}), ("too_big", {"cpu": 1, "gpu_stand_in": 2}),
                          ("two_cpus", {"cpu": 2})):
        try:
            ensure_trial_resources(request, wait_s=5)
            out[name] = None
        except ClusterResourcesError as exc:
            out[name] = str(exc)
    return out


if __name__ == "__main__":
    drivers = {"nodes": driver_nodes, "tasks": driver_tasks, "sweep": driver_sweep, "resources": driver_resources}
    result = drivers[sys.argv[1]](*sys.argv[2:])
    print(json.dumps(result))
