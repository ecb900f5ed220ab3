"""benchmarks/plugin_table.py's runs: a table stopped at any moment loses no finished run and no
epoch of a run in progress (its rows take hours on a CPU, and a session ends when it ends)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import plugin_table as pt  # noqa: E402

from clear_core.data.synthetic import write_synthetic  # noqa: E402

TRAIN = {"max_epochs": 40, "patience": 40, "batch_size": 256, "learning_rate": 1e-3}


def _job(data: str, seed: int, **extra) -> dict:
    return {"data": data, "train": TRAIN, "method": "vbpr", "params": {"reg_weight": 0.1}, "seed": seed,
            "git_commit": "test", **extra}


def _long_run_waits_for_the_flag(job: dict) -> dict:
    """Seed 1 is the long run: it ends once the test has seen seed 2's row (or after a minute)."""
    if job["seed"] == 1:
        deadline = time.monotonic() + 60
        while not Path(job["flag"]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return {"method": job["method"], "params": job["params"], "seed": job["seed"],
            "valid": {"recall@20": 0.1}, "test": {"recall@20": 0.1}, "best_epoch": 1, "epochs_run": 1}


def test_a_run_is_recorded_when_it_ends_not_after_the_runs_started_before_it(tmp_path):
    out, flag = tmp_path / "table.jsonl", tmp_path / "flag"
    jobs = [_job("d", seed, flag=str(flag)) for seed in (1, 2)]
    table = threading.Thread(target=pt.run_jobs, args=(jobs, out, 2, _long_run_waits_for_the_flag))
    table.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(r["seed"] == 2 for r in pt.done_rows(out)):
        time.sleep(0.05)
    seen_before_the_long_run_ended = [r["seed"] for r in pt.done_rows(out)]
    flag.touch()
    table.join(timeout=90)
    assert seen_before_the_long_run_ended == [2]
    assert sorted(r["seed"] for r in pt.done_rows(out)) == [1, 2]


RUN_ONE_JOB = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import plugin_table as pt
pt.run_jobs([json.loads(sys.argv[2])], Path(sys.argv[3]), 1)
"""


def _table(job: dict, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN_ONE_JOB, str(BENCH), json.dumps(job), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_synthetic(out, n_users=200, n_items=150, n_interactions=3000, modalities={"image": 16, "text": 12})
    return str(out)


def test_a_killed_run_resumes_from_its_last_epoch_and_records_what_an_unbroken_run_does(data, tmp_path):
    out = tmp_path / "table.jsonl"
    job = _job(data, 7)
    table = _table(job, out)
    checkpoints = pt.checkpoints_of(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and table.poll() is None and not list(checkpoints.rglob("last.pt")):
        time.sleep(0.02)
    os.killpg(table.pid, signal.SIGKILL)  # the table and its worker, as when a session ends
    table.wait(timeout=30)
    (last,) = checkpoints.rglob("last.pt")
    killed_at = torch.load(last, weights_only=False)["epoch"]
    assert not pt.done_rows(out) and killed_at < TRAIN["max_epochs"]

    resumed = _table(job, out)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert f"at epoch {killed_at + 1}" in log  # trained on from the checkpoint, not from epoch 1
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # kept only while running

    unbroken = _table(job, tmp_path / "unbroken.jsonl")
    assert unbroken.wait(timeout=300) == 0
    (row,), (reference,) = pt.done_rows(out), pt.done_rows(tmp_path / "unbroken.jsonl")
    assert {k: row[k] for k in ("valid", "test", "best_epoch", "epochs_run")} == {
        k: reference[k] for k in ("valid", "test", "best_epoch", "epochs_run")}
