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
import pickle
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
# LOSE_STATE: what a disk that filled before Tune's first whole snapshot leaves (its only state
# cut short, no whole copy kept), made certain rather than left to timing.
SCRIPT = textwrap.dedent("""\
    set -u
    mount -t tmpfs -o size=8m tmpfs "$FULL" || exit 97
    head -c 7000000 /dev/zero > "$FULL/filler"
    "$CLEARREC" sweep --config sweep.yaml --no-progress --in-process > first.out 2> first.err
    echo $? > first.rc
    cp mlruns.db after-first.db
    rm "$FULL/filler"
    if [ -n "${LOSE_STATE:-}" ]; then
        state=$(ls "$FULL"/results/*/experiment_state-*.json | tail -n 1)
        head -c 100 "$state" > "$state.cut" && mv "$state.cut" "$state"
        rm -rf "$FULL"/results/*/.last-complete-state
    fi
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
@pytest.mark.parametrize("state", ["as_left", "lost"])
def test_a_sweep_that_fills_its_disk_stops_once_and_resumes_after_space_is_freed(tmp_path, state):
    """``as_left``: the resume finds what the full disk left (a whole state, or one cut short with
    its last whole copy kept); ``lost``: the state is cut short and no copy was kept, so the
    trials start afresh, Optuna's unfinished ones taken over. Either way the sweep completes."""
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
    if state == "lost":
        env["LOSE_STATE"] = "1"
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
    # None left RUNNING or failed; a point proposed again is closed with its twin's result, so
    # a study may hold more trials than ran.
    states = _study_states(tmp_path / "optuna.db")
    assert set(states) <= {"COMPLETE", "PRUNED"} and states.count("COMPLETE") >= 3, states
    after = _statuses(tmp_path / "mlruns.db")
    assert [status for name, status in after.items() if "sweep" in name] == ["FINISHED"]
    children = {name: status for name, status in after.items() if "sweep" not in name}
    assert list(children.values()).count("FINISHED") == 3, children
    if state == "lost":
        assert "start afresh" in second_err
        # The first run's trials, started over under new Tune trials, keep how they ended.
        assert {s for name, s in children.items() if s != "FINISHED"} <= {"FAILED", "KILLED"}
        assert all(after_first[name] == s for name, s in children.items() if s != "FINISHED")
    elif "start afresh" not in second_err:
        # Resumed from Tune's state: the same trials carried on, each its one child run.
        assert set(children.values()) == {"FINISHED"}, children


def _state_files(folder: Path, stamp: str, experiment_state: str) -> None:
    (folder / f"experiment_state-{stamp}.json").write_text(experiment_state)
    # Tune names the search generator's state .json and writes a pickle there.
    (folder / f"search_gen_state-{stamp}.json").write_bytes(pickle.dumps({"counter": 1}))
    (folder / f"searcher-state-{stamp}.pkl").write_bytes(pickle.dumps({"_ot_trials": {}, "n": 1}))


def test_a_searcher_pickle_cut_short_beside_a_whole_state_is_replaced_too(tmp_path):
    # A driver killed while Tune uploaded its snapshot: the JSON made it, the pickle did not,
    # and Tune's restore would die on it ("Ran out of input").
    fs = pafs.LocalFileSystem()
    _state_files(tmp_path, "2026-12-05_08-00-00", '{"trial_data": []}')
    assert disk_full.back_up_state(fs, str(tmp_path))
    searcher = tmp_path / "searcher-state-2026-12-05_08-00-00.pkl"
    whole = searcher.read_bytes()
    searcher.write_bytes(pickle.dumps({"_ot_trials": {"t": 1}, "n": 2})[:-1])
    assert not disk_full.back_up_state(fs, str(tmp_path))  # the whole copy is kept, not this

    assert disk_full.restore_last_complete_state(fs, str(tmp_path)) is disk_full.SavedState.RESTORED
    assert pickle.loads(searcher.read_bytes()) == pickle.loads(whole)


def test_a_searcher_pickle_is_checked_without_being_loaded(tmp_path):
    # Loading Tune's real searcher pickle rebuilds the Optuna study and opens its database, which
    # fails outside the sweep; a whole pickle of an object whose class is gone must still pass.
    fs = pafs.LocalFileSystem()
    _state_files(tmp_path, "2026-12-05_08-00-00", '{"trial_data": []}')
    data = pickle.dumps(_Unloadable())
    (tmp_path / "searcher-state-2026-12-05_08-00-00.pkl").write_bytes(
        data.replace(b"_Unloadable", b"_NoSuchCls_"))
    assert disk_full.restore_last_complete_state(fs, str(tmp_path)) is disk_full.SavedState.WHOLE


class _Unloadable:
    pass


def test_a_state_cut_short_is_replaced_by_its_last_whole_copy(tmp_path):
    fs = pafs.LocalFileSystem()
    _state_files(tmp_path, "2026-12-05_08-00-00", json.dumps({"trial_data": [], "n": 1}))
    assert disk_full.back_up_state(fs, str(tmp_path))
    # The next snapshot is cut short by the full disk.
    (tmp_path / "experiment_state-2026-12-05_08-00-00.json").write_text('{"trial_data": [["{\\"trial_id')

    assert disk_full.restore_last_complete_state(fs, str(tmp_path)) is disk_full.SavedState.RESTORED

    restored = json.loads((tmp_path / "experiment_state-2026-12-05_08-00-00.json").read_text())
    assert restored == {"trial_data": [], "n": 1}
    assert (tmp_path / "experiment_state-2026-12-05_08-00-00.json.incomplete").exists()


def test_a_whole_state_is_left_alone_and_a_cut_one_is_never_backed_up(tmp_path):
    fs = pafs.LocalFileSystem()
    _state_files(tmp_path, "2026-12-05_08-00-00", '{"trial_data": []}')
    assert disk_full.restore_last_complete_state(fs, str(tmp_path)) is disk_full.SavedState.WHOLE
    (tmp_path / "experiment_state-2026-12-05_08-00-00.json").write_text('{"cut')
    assert not disk_full.back_up_state(fs, str(tmp_path))
    assert not (tmp_path / disk_full.BACKUP_DIR).exists()


def test_a_state_cut_short_with_no_whole_copy_is_set_aside_so_tune_starts_afresh(tmp_path):
    fs = pafs.LocalFileSystem()
    _state_files(tmp_path, "2026-12-05_08-00-00", '{"trial_data": [["{\\"trial_id')

    assert disk_full.restore_last_complete_state(fs, str(tmp_path)) is disk_full.SavedState.LOST

    # Nothing Tune would take for its state is left (it looks for "experiment_state-*.json").
    assert not list(tmp_path.glob("experiment_state-*.json"))
    assert sorted(p.name for p in tmp_path.glob("*.incomplete")) == [
        "experiment_state-2026-12-05_08-00-00.json.incomplete",
        "search_gen_state-2026-12-05_08-00-00.json.incomplete",
        "searcher-state-2026-12-05_08-00-00.pkl.incomplete",
    ]


def test_the_driver_keeps_each_new_whole_snapshot_before_any_trial_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_full, "BACKUP_POLL_S", 0.0)
    fs = pafs.LocalFileSystem()
    backup = disk_full.state_backup(fs, str(tmp_path))
    kept = tmp_path / disk_full.BACKUP_DIR / "experiment_state-2026-12-05_08-00-00.json"

    backup.on_step_end(iteration=0, trials=[])  # no snapshot yet: nothing to keep
    assert not kept.exists()
    _state_files(tmp_path, "2026-12-05_08-00-00", '{"n": 1}')
    backup.on_step_end(iteration=1, trials=[])
    assert json.loads(kept.read_text()) == {"n": 1}
    (tmp_path / "experiment_state-2026-12-05_08-00-00.json").write_text('{"n": 22}')
    backup.on_step_end(iteration=2, trials=[])
    assert json.loads(kept.read_text()) == {"n": 22}
    (tmp_path / "experiment_state-2026-12-05_08-00-00.json").write_text('{"n": 3')  # cut short
    backup.on_step_end(iteration=3, trials=[])
    assert json.loads(kept.read_text()) == {"n": 22}


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
