"""A full disk during a sweep (issue 22): one message naming the place, exit 1, no run left
RUNNING, and the same command after space was freed resumes the sweep and completes it.

The end-to-end test runs a real sweep whose results storage is a small tmpfs, filled so that the
first checkpoints fit and later ones do not. It is mounted in a private user + mount namespace
(``unshare -rm``), so the test needs neither root nor a real disk to fill; where no tmpfs can be
mounted it skips and says so. The pieces (the restore of Tune's state cut short by a full disk,
the log filter) are also tested on their own below.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from clear_core.errors import DiskFullError
from pipeline import disk_full

REPO = Path(__file__).resolve().parents[2]

SWEEP = {
    "name": "clear-diskfull",
    "dataset": {"synthetic": True, "raw": False, "set": {"n_users": 100, "n_items": 80, "n_interactions": 1500}},
    "train": {"max_epochs": 8, "patience": 8, "batch_size": 512},
    "search": {"redundancy_rank": {"type": "choice", "values": [2, 4]},
               "projection_strength": {"type": "choice", "values": [0.5, 0.9]}},
    "num_samples": 3,
    "max_concurrent": 2,
    "scheduler": {"type": "none"},
}

# 8 MiB of tmpfs with 7 MB taken: the first few checkpoints (about 150 KB each) fit, then not.
SCRIPT = textwrap.dedent("""\
    set -u
    mount -t tmpfs -o size=8m tmpfs "$FULL" || exit 97
    head -c 7000000 /dev/zero > "$FULL/filler"
    "$CLEARREC" sweep --config sweep.yaml --no-progress --in-process > first.out 2> first.err
    echo $? > first.rc
    cp mlruns.db after-first.db
    rm "$FULL/filler"
    "$CLEARREC" sweep --config sweep.yaml --no-progress --in-process > second.out 2> second.err
    echo $? > second.rc
    """)


def _statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("select name, status from runs"))


def _study_states(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [state for (state,) in con.execute("select state from trials")]


@pytest.mark.timeout(600)
def test_a_sweep_that_fills_its_disk_stops_once_and_resumes_after_space_is_freed(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare here to mount a private tmpfs")
    full = tmp_path / "full"
    full.mkdir()
    probe = subprocess.run([unshare, "-rm", "sh", "-c", f'mount -t tmpfs -o size=64k tmpfs "{full}"'],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (unshare -rm): {probe.stderr.decode().strip()}")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({**SWEEP, "storage": {"path": str(full / "results")}}))
    env = {**os.environ, "FULL": str(full), "CLEARREC": str(Path(sys.executable).parent / "clearrec"),
           "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    run = subprocess.run([unshare, "-rm", "sh", "-c", SCRIPT], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=560)
    assert run.returncode == 0, run.stderr

    first_err = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", first_err
    # Said once, naming the full place; none of Ray's tracebacks or its words about a Ctrl-C.
    assert first_err.count("no space left on") == 1, first_err
    assert f"no space left on {full}/results/" in first_err
    assert "Traceback" not in first_err and "SIGINT" not in first_err
    after_first = _statuses(tmp_path / "after-first.db")
    assert "RUNNING" not in after_first.values(), after_first
    parent = [status for name, status in after_first.items() if "sweep" in name]
    assert parent == ["FAILED"]
    assert "FAILED" in [status for name, status in after_first.items() if "sweep" not in name]

    second_err = (tmp_path / "second.err").read_text()
    assert (tmp_path / "second.rc").read_text().strip() == "0", second_err
    assert "resuming sweep" in second_err
    out = (tmp_path / "second.out").read_text()
    assert "COMPLETE 3, PRUNED 0, FAIL 0" in out, out
    assert set(_statuses(tmp_path / "mlruns.db").values()) == {"FINISHED"}
    assert _study_states(tmp_path / "optuna.db") == ["COMPLETE"] * 3


def _state_files(folder: Path, stamp: str, experiment_state: str) -> None:
    (folder / f"experiment_state-{stamp}.json").write_text(experiment_state)
    (folder / f"search_gen_state-{stamp}.json").write_text("{}")
    (folder / f"searcher-state-{stamp}.pkl").write_bytes(b"pickle")


def test_a_state_cut_short_is_replaced_by_its_last_whole_copy(tmp_path):
    fs = pafs.LocalFileSystem()
    _state_files(tmp_path, "2026-12-05_08-00-00", json.dumps({"trial_data": [], "n": 1}))
    assert disk_full.back_up_state(fs, str(tmp_path))
    # The next snapshot is cut short by the full disk.
    (tmp_path / "experiment_state-2026-12-05_08-00-00.json").write_text('{"trial_data": [["{\\"trial_id')

    assert disk_full.restore_last_complete_state(fs, str(tmp_path))

    restored = json.loads((tmp_path / "experiment_state-2026-12-05_08-00-00.json").read_text())
    assert restored == {"trial_data": [], "n": 1}
    assert (tmp_path / "experiment_state-2026-12-05_08-00-00.json.incomplete").exists()


def test_a_whole_state_is_left_alone_and_a_cut_one_is_never_backed_up(tmp_path):
    fs = pafs.LocalFileSystem()
    _state_files(tmp_path, "2026-12-05_08-00-00", '{"trial_data": []}')
    assert not disk_full.restore_last_complete_state(fs, str(tmp_path))
    (tmp_path / "experiment_state-2026-12-05_08-00-00.json").write_text('{"cut')
    assert not disk_full.back_up_state(fs, str(tmp_path))
    assert not (tmp_path / disk_full.BACKUP_DIR).exists()


def test_the_full_path_is_found_behind_whatever_wrapped_the_os_error():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/results/x/checkpoint_000001")
        except OSError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc]") from inner
    except RuntimeError as wrapped:
        assert disk_full.full_path(wrapped, "/fallback") == "/results/x/checkpoint_000001"
    assert disk_full.full_path(OSError(errno.ENOSPC, "Error writing bytes"), "/results") == "/results"
    assert disk_full.full_path(DiskFullError("/a/b.pt"), "/x") == "/a/b.pt"
    assert disk_full.full_path(OSError(errno.EACCES, "denied"), "/x") is None


def test_rays_repeated_disk_full_records_are_dropped_and_others_kept(caplog):
    logger = logging.getLogger("ray.train._internal.syncer")
    with caplog.at_level(logging.WARNING, logger="ray.train._internal.syncer"), disk_full.quiet_ray_disk_full():
        logger.warning("Last sync command failed: [errno 28] No space left on device")
        logger.warning("Last sync command failed: connection reset")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Last sync command failed: connection reset"]
