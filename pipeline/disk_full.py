"""A full disk during a sweep: stop it the way Ctrl-C does, say so once, lose nothing.

Left to Ray, a full results disk makes every trial's checkpoint upload fail, each failure is
retried, Tune's syncer warns with a traceback every second, and the driver finally dies reading
an error file the full disk truncated: hundreds of lines, runs left RUNNING, and the failed
trials marked FAIL in Optuna, so that even a re-run after space was freed could not redo them.

Here a trial that runs out of space reports it (``DISK_FULL_KEY``, naming the path) and waits;
the driver-side :class:`DiskFullWatch` then interrupts Tune as Ctrl-C would. Every trial stays
unfinished in Tune's state and RUNNING in Optuna's, so the same command, once space is freed,
resumes the sweep from the last checkpoints that were written whole. The sweep ends with one
:class:`~clear_core.errors.DiskFullError` (exit 1); the trial that hit the full disk is FAILED in
MLflow, the parent run too, and the other trials KILLED (stopped, to be resumed).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

from clear_core.atomic_io import disk_full_cause
from clear_core.errors import DiskFullError

log = logging.getLogger(__name__)

DISK_FULL_KEY = "disk_full"

# How long a trial that reported a full disk waits to be stopped by the driver before it gives
# up and fails (the driver stops it within a second or two when the watch is installed).
STOP_WAIT_S = 120.0

# Loggers that repeat the same ENOSPC traceback once per sync or per trial.
_NOISY_LOGGERS = ("ray.tune.tune", "ray.train._internal.syncer", "ray.tune.execution.tune_controller",
                  "ray.tune.execution.experiment_state", "ray.train._internal.storage")


def full_path(exc: BaseException, fallback: str) -> str | None:
    """The path a full disk refused, if ``exc`` is (or was caused by) running out of space."""
    if isinstance(exc, DiskFullError):
        return exc.path
    cause = disk_full_cause(exc)
    if cause is None:
        return None
    return str(cause.filename) if getattr(cause, "filename", None) else fallback


def report_and_wait(path: str, last_epoch: int) -> None:
    """Trial side: tell the driver the disk is full, then wait to be stopped (not failed)."""
    from ray import tune

    tune.report({DISK_FULL_KEY: path, "epoch": last_epoch, "finished": False})
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
    raise DiskFullError(path)


def watch():
    """A driver-side Tune callback: on the first full-disk report, interrupt the sweep as Ctrl-C
    does (Tune saves what it can and leaves every trial resumable). ``.path`` names the disk."""
    from ray.tune import Callback

    class DiskFullWatch(Callback):
        path: str | None = None
        trial_id: str | None = None

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get(DISK_FULL_KEY) and self.path is None:
                self.path, self.trial_id = str(result[DISK_FULL_KEY]), trial.trial_id
                log.debug("trial %s: no space left on %s; stopping the sweep", trial.trial_id, self.path)
                # Tune's own SIGINT handler stops the run gracefully; a second SIGINT would
                # force it, so only one is ever sent.
                os.kill(os.getpid(), signal.SIGINT)

    return DiskFullWatch()


class _DropDiskFull(logging.Filter):
    """Drops Ray's records whose message or traceback is a full disk (said once, at the end),
    and, once the watch has stopped the sweep, Tune's words about a Ctrl-C nobody pressed."""

    def __init__(self, watcher: Any = None) -> None:
        super().__init__()
        self.watcher = watcher

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "ray.tune.tune" and getattr(self.watcher, "path", None):
            return False
        if record.exc_info and record.exc_info[1] is not None and full_path(record.exc_info[1], "") is not None:
            return False
        text = record.getMessage()
        return "No space left on device" not in text and "no space left on" not in text


@contextlib.contextmanager
def quiet_ray_disk_full(watcher: Any = None) -> Iterator[None]:
    """While the sweep runs, Ray's repeated ENOSPC warnings and tracebacks are not printed."""
    drop = _DropDiskFull(watcher)
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def sweep_error(watcher: Any, exc: BaseException | None, fallback: str) -> DiskFullError | None:
    """The one error a sweep ends with when its disk filled: from the watch, or from an
    exception Tune raised itself while writing its state."""
    if watcher is not None and watcher.path:
        return DiskFullError(watcher.path)
    if exc is not None:
        path = full_path(exc, fallback)
        if path is not None:
            return DiskFullError(path)
    return None


# --- Tune's own state, kept whole --------------------------------------------------------------
# Tune rewrites its experiment state in place on the storage, file by file: on a full disk or a
# driver killed mid-write the newest copy is cut short and a resume fails on it ("Unterminated
# string" in the JSON, "Ran out of input" in the searcher's pickle). So the last whole copy is
# kept beside it, written by rename (whole or not at all), and put back before a resume. Where
# the disk filled before any whole copy was seen (seconds into a sweep), the state is set aside
# and the sweep's Tune trials start afresh, taking over the trials Optuna holds as unfinished.
BACKUP_DIR = ".last-complete-state"
_STATE_PREFIXES = ("experiment_state-", "search_gen_state-", "searcher-state-")
# How often the driver looks for a new snapshot to keep (a directory listing; a copy only when
# the snapshot changed). Tune writes one about every second (sweep.SNAPSHOT_EVERY_S).
BACKUP_POLL_S = 0.25


class SavedState(enum.Enum):
    """What :func:`restore_last_complete_state` found and did."""

    WHOLE = "whole"  # each file of the newest state is whole, or there is none: resume from it
    RESTORED = "restored"  # it was cut short; its last whole copy was put back
    LOST = "lost"  # cut short with no whole copy: set aside, so Tune must start its trials afresh


def _newest_state_files(fs, folder: str) -> list[Any]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(_selector(folder))
    states = sorted(i.base_name for i in infos if i.base_name.startswith("experiment_state-")
                    and i.base_name.endswith(".json"))
    if not states:
        return []
    stamp = states[-1][len("experiment_state-"):-len(".json")]
    return [i for i in infos if i.type == pafs.FileType.File
            and any(i.base_name.startswith(p + stamp) for p in _STATE_PREFIXES)]


def _whole(name: str, data: bytes) -> bool:
    """Whether the state file ``name`` holding ``data`` was written to its end: the experiment
    state's JSON parses, or the searcher's pickle stream reaches its STOP opcode (``search_gen_
    state-*.json`` is a pickle too, whatever its name). The pickle is walked, not loaded: loading
    would rebuild the Optuna searcher, which opens the study's database and so fails for other
    reasons than a cut."""
    import io
    import json
    import pickletools

    try:
        if name.startswith("experiment_state-"):
            json.loads(data.decode("utf-8"))
        else:
            # genops stops after STOP and raises where the stream ends before it.
            for _ in pickletools.genops(io.BytesIO(data)):
                pass
        return True
    except ValueError:
        return False


def _whole_snapshot(fs, files: list[Any]) -> dict[str, bytes] | None:
    """The contents of each of ``files`` by name if every one is whole, else None. Every file
    counts: Tune uploads a snapshot file by file, so a kill can land between a whole experiment
    state and the searcher's pickle being written out."""
    if not any(i.base_name.startswith("experiment_state-") for i in files):
        return None
    contents = {}
    for info in files:
        try:
            with fs.open_input_stream(info.path) as stream:
                contents[info.base_name] = stream.read()
        except OSError:
            return None
        if not _whole(info.base_name, contents[info.base_name]):
            return None
    return contents


def back_up_state(fs, folder: str, files: list[Any] | None = None) -> bool:
    """Copy the newest experiment state into ``folder/BACKUP_DIR`` if it is whole (a local
    filesystem only: an object store writes an object whole or not at all). ``files``: the
    newest state's files when the caller has just listed them."""
    import posixpath

    files = _newest_state_files(fs, folder) if files is None else files
    # What is kept is the bytes just checked: Tune may be rewriting the files meanwhile.
    contents = _whole_snapshot(fs, files)
    if contents is None:
        return False
    backup = posixpath.join(folder, BACKUP_DIR)
    fs.create_dir(backup, recursive=True)
    for old in fs.get_file_info(_selector(backup)):
        if old.base_name not in contents and not old.base_name.startswith("."):
            fs.delete_file(old.path)
    for name, data in contents.items():
        tmp = posixpath.join(backup, f".{name}.tmp")
        with fs.open_output_stream(tmp) as dst:
            dst.write(data)
        fs.move(tmp, posixpath.join(backup, name))
    return True


def _selector(folder: str):
    import pyarrow.fs as pafs

    return pafs.FileSelector(folder, allow_not_found=True)


def _signature(files: list[Any]) -> tuple:
    return tuple(sorted((i.base_name, i.size, i.mtime_ns) for i in files))


def restore_last_complete_state(fs, folder: str) -> SavedState:
    """Before a resume: if any file of the newest experiment state is cut short (a full disk, a
    driver killed while writing it), set it aside and put back the last whole copy, or, where
    none was kept, leave it set aside (``SavedState.LOST``: the caller starts Tune afresh)."""
    import posixpath

    files = _newest_state_files(fs, folder)
    state = [i for i in files if i.base_name.startswith("experiment_state-")]
    if not state or _whole_snapshot(fs, files) is not None:
        return SavedState.WHOLE
    backup = posixpath.join(folder, BACKUP_DIR)
    saved = [i for i in fs.get_file_info(_selector(backup)) if not i.base_name.startswith(".")]
    # Set aside either way: Tune finds its state by the ".json" ending, and must not read this.
    for info in files:
        fs.move(info.path, info.path + ".incomplete")
    contents = _whole_snapshot(fs, saved)
    if contents is None:
        log.warning("the sweep's saved state %s was cut short (a full disk?) before any whole copy "
                    "was kept; its trials start afresh: those Optuna holds as unfinished are taken "
                    "over from their first epoch, finished ones stay in the study", state[0].path)
        return SavedState.LOST
    for name, data in contents.items():
        with fs.open_output_stream(posixpath.join(folder, name)) as dst:
            dst.write(data)
    log.warning("the sweep's saved state %s was cut short (a full disk?); resuming from its last "
                "whole copy, %s", state[0].path,
                next(name for name in contents if name.startswith("experiment_state-")))
    return SavedState.RESTORED


def state_backup(fs, folder: str):
    """A driver-side Tune callback that keeps the last whole experiment state (see above).

    It looks every ``BACKUP_POLL_S`` from the controller's loop rather than on trial results, so
    that a snapshot is kept within a fraction of a second of being written, before the first
    result if need be: a disk that fills in the first seconds of a sweep leaves a whole copy."""
    import pyarrow.fs as pafs
    from ray.tune import Callback

    local = isinstance(fs, pafs.LocalFileSystem) or fs is None
    fs = fs or pafs.LocalFileSystem()

    class StateBackup(Callback):
        checked = 0.0
        kept: tuple = ()

        def on_step_end(self, iteration, trials, **info):
            if not local or time.monotonic() - self.checked < BACKUP_POLL_S:
                return
            self.checked = time.monotonic()
            try:
                files = _newest_state_files(fs, folder)
                newest = _signature(files)
                if newest and newest != self.kept and back_up_state(fs, folder, files):
                    self.kept = newest
            except OSError as exc:  # a full disk: the previous whole copy stays
                log.debug("experiment state not backed up: %s", exc)

    return StateBackup()
