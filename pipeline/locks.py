"""Locks that let several drivers share one store and one runs folder safely.

* :func:`file_lock`: an exclusive ``flock`` on a lock file. The kernel drops it when its holder
  exits, ``kill -9`` included, so it can never be left stuck. Used where everything involved is
  on one disk: creating a SQLite store (MLflow's schema creation and Optuna's are not safe to
  race: two creators fail with "table ... already exists") and a stage's work folder.

* :class:`SweepLock`: "this sweep is running", held by one driver at a time. It lives in the
  sweep's Optuna RDB storage, the one store that every driver of a sweep shares (SQLite beside
  the MLflow database, or PostgreSQL/MySQL next to a tracking server), as a row of the table
  ``clearrec_sweep_locks`` keyed by the sweep id; a primary key makes taking it atomic on every
  backend. A file lock would not do: drivers of one sweep may run on different machines
  (a laptop and a RayJob) with nothing on disk in common. The holder renews a heartbeat every
  ``HEARTBEAT_S`` seconds. A driver killed with ``kill -9`` leaves its row behind, but the row is
  taken over at once when its holder is on this host and its process is gone (pid and process
  start time checked, so a reused pid does not count as alive), and from another host when its
  heartbeat is older than ``STALE_S``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clear_core.errors import ClearrecError

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_S = 60.0
TABLE = "clearrec_sweep_locks"


class SweepRunningError(ClearrecError):
    """The same sweep is already running in another driver; the message names it."""


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) while the block runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (relative to the working directory), else None."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


@contextlib.contextmanager
def store_creation_lock(url: str) -> Iterator[None]:
    """Serialise the first opening of a SQLite store among drivers on this machine (a no-op for
    servers: their own process creates the schema, once)."""
    db = sqlite_file(url)
    if db is None:
        yield
        return
    with file_lock(db.absolute().parent / f".{db.name}.create.lock"):
        yield


def ensure_tracking_store(uri: str) -> None:
    """Create an MLflow SQLite store's schema now, one driver at a time, so that two drivers
    started together on a fresh database do not both run MLflow's schema creation."""
    if sqlite_file(uri) is None:
        return
    from mlflow.tracking import MlflowClient

    with store_creation_lock(uri):
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


# --- the running-sweep lock ------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/<pid>/stat), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent has not reaped it yet
        return None
    return fields[19]


def _alive(pid: int, started: str | None) -> bool:
    now = _process_start(pid)
    if now is None:
        if not Path("/proc").is_dir():  # no procfs (macOS): ask the kernel
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return False
    return started is None or now == started


def lock_table(meta: Any) -> Any:
    """The lock table (:data:`TABLE`) in SQLAlchemy metadata ``meta``."""
    import sqlalchemy as sa

    return sa.Table(
        TABLE, meta,
        sa.Column("sweep_id", sa.String(255), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),
    )


class SweepLock:
    """The lock row of one sweep in an RDB (SQLAlchemy URL); see the module doc.

    ``acquire`` raises :class:`SweepRunningError` naming the holder (host, pid, start, what it
    runs) while another live driver holds it; ``release`` deletes the row if it is still ours."""

    def __init__(self, url: str, sweep_id: str, *, describe: str = "") -> None:
        self.url = url
        self.sweep_id = sweep_id
        self.token = uuid.uuid4().hex
        self.owner = {
            "host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": describe,
        }
        self._engine = None
        self._table = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reentered = False

    # --- storage ------------------------------------------------------------------------
    def _setup(self) -> None:
        import sqlalchemy as sa

        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            # Wait for a concurrent writer instead of failing with "database is locked".
            kwargs["connect_args"] = {"timeout": 30}
        self._engine = sa.create_engine(self.url, **kwargs)
        self._table = lock_table(sa.MetaData())
        with store_creation_lock(self.url):
            try:
                self._table.create(self._engine, checkfirst=True)
            except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
                # Created meanwhile by a driver on another host: its CREATE was not yet committed
                # when ours checked. MySQL then says "table already exists"; PostgreSQL makes ours
                # wait for the other's commit and fails it on pg_type's unique index.
                self._table.create(self._engine, checkfirst=True)

    def _row(self, conn) -> Any:
        import sqlalchemy as sa

        t = self._table
        return conn.execute(sa.select(t).where(t.c.sweep_id == self.sweep_id)).first()

    # --- the protocol -------------------------------------------------------------------
    def acquire(self) -> SweepLock:
        import sqlalchemy as sa

        self._setup()
        t = self._table
        row_values = {"sweep_id": self.sweep_id, "token": self.token, "owner": json.dumps(self.owner),
                      "heartbeat": time.time()}
        for _ in range(3):
            try:
                with self._engine.begin() as conn:
                    conn.execute(t.insert().values(**row_values))
                break
            except sa.exc.IntegrityError:
                pass
            with self._engine.begin() as conn:
                row = self._row(conn)
                if row is None:
                    continue  # released meanwhile: try again
                holder = json.loads(row.owner)
                if (holder.get("host"), holder.get("pid"), holder.get("pid_start")) == (
                        self.owner["host"], self.owner["pid"], self.owner["pid_start"]):
                    # This process holds it already (run_pipeline around run_sweep).
                    self.reentered = True
                    return self
                stale = self._stale(holder, row.heartbeat)
                if stale is None:
                    raise SweepRunningError(self._running_message(holder, row.heartbeat))
                taken = conn.execute(
                    t.update().where((t.c.sweep_id == self.sweep_id) & (t.c.token == row.token)).values(**row_values)
                ).rowcount
                if taken == 1:
                    log.warning("sweep %s: taking over the lock of a driver that is gone (%s)", self.sweep_id, stale)
                    break
        else:
            raise SweepRunningError(f"sweep {self.sweep_id}: could not take its lock in {self.url}")
        self._thread = threading.Thread(target=self._beat, name=f"sweep-lock-{self.sweep_id}", daemon=True)
        self._thread.start()
        return self

    def _stale(self, holder: dict[str, Any], heartbeat: float) -> str | None:
        """Why the holder is gone (None: it may be alive)."""
        if holder.get("host") == self.owner["host"]:
            if not _alive(int(holder.get("pid", -1)), holder.get("pid_start")):
                return f"process {holder.get('pid')} on this host has exited"
            return None
        if time.time() - heartbeat > STALE_S:
            return f"no heartbeat from {holder.get('host')} for {time.time() - heartbeat:.0f} s"
        return None

    def _running_message(self, holder: dict[str, Any], heartbeat: float) -> str:
        return (
            f"sweep {self.sweep_id} is already running: {holder.get('what') or 'a driver'} started "
            f"{holder.get('started')} by pid {holder.get('pid')} on {holder.get('host')} (last heartbeat "
            f"{time.time() - heartbeat:.0f} s ago; lock in {self.url}). Wait for it to finish, or stop it; "
            f"a driver that died is noticed at once on its own host and after {STALE_S:.0f} s elsewhere"
        )

    def _beat(self) -> None:
        t = self._table
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self._engine.begin() as conn:
                    conn.execute(t.update().where((t.c.sweep_id == self.sweep_id) & (t.c.token == self.token))
                                 .values(heartbeat=time.time()))
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("sweep %s: could not renew its lock (%s)", self.sweep_id, exc)

    def release(self) -> None:
        if self._engine is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
        if not self.reentered:
            t = self._table
            try:
                with self._engine.begin() as conn:
                    conn.execute(t.delete().where((t.c.sweep_id == self.sweep_id) & (t.c.token == self.token)))
            except Exception as exc:  # noqa: BLE001 - a stale row is taken over by the next driver
                log.warning("sweep %s: could not release its lock (%s)", self.sweep_id, exc)
        self._engine.dispose()
        self._engine = None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
