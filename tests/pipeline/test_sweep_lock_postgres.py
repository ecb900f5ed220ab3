"""The running-sweep lock on a server store (issue 22): on PostgreSQL, as next to a tracking
server, a second start of a running sweep is refused naming the running one, a driver killed with
``kill -9`` does not leave it stuck, and a holder on another host is taken over only once its
heartbeat is stale.

A throwaway PostgreSQL (Debian's ``postgresql`` package) is started on 127.0.0.1 for the module;
where its programs are missing the tests skip and say so.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.locks import STALE_S, SweepLock, SweepRunningError

REPO = Path(__file__).resolve().parents[2]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg", reason="the psycopg driver (dev extra) is not installed")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server here (apt-get install postgresql)")
    # Not under pytest's tmp folder: as root that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="clearrec-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    # PostgreSQL refuses to run as root: as root, its files and server belong to `postgres`.
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "clearrec"],
                   check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=90)
    try:
        yield f"postgresql+psycopg://clearrec@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


HOLDER = """
import sys, time
from pipeline.locks import SweepLock
lock = SweepLock(sys.argv[1], sys.argv[2], describe="clearrec sweep held-by-test").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _start_holder(url: str, sweep_id: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, sweep_id], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.timeout(300)
def test_a_running_sweep_is_refused_naming_it_and_a_killed_driver_leaves_no_stuck_lock(postgres_url):
    holder = _start_holder(postgres_url, "sweep-a")
    try:
        with pytest.raises(SweepRunningError) as refused:
            SweepLock(postgres_url, "sweep-a", describe="second start").acquire()
        message = str(refused.value)
        assert "sweep sweep-a is already running" in message
        assert f"pid {holder.pid}" in message and "held-by-test" in message
        # Another sweep on the same store is not held up.
        with SweepLock(postgres_url, "sweep-b"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # The killed driver's row is still there, but its process is gone: taken over at once.
    started = time.monotonic()
    with SweepLock(postgres_url, "sweep-a"):
        assert time.monotonic() - started < 10


def _plant_row(url: str, sweep_id: str, *, host: str, age_s: float) -> None:

    lock = SweepLock(url, "setup")
    lock._setup()  # the table
    owner = {"host": host, "pid": 1, "pid_start": "1", "started": "2026-12-05T00:00:00Z", "what": "remote sweep"}
    with lock._engine.begin() as conn:
        conn.execute(lock._table.delete().where(lock._table.c.sweep_id == sweep_id))
        conn.execute(lock._table.insert().values(sweep_id=sweep_id, token="remote", owner=json.dumps(owner),
                                                 heartbeat=time.time() - age_s))
    lock._engine.dispose()


def test_a_holder_on_another_host_is_taken_over_only_when_its_heartbeat_is_stale(postgres_url):
    _plant_row(postgres_url, "sweep-c", host="another-host", age_s=1)
    with pytest.raises(SweepRunningError, match="on another-host"):
        SweepLock(postgres_url, "sweep-c").acquire()
    _plant_row(postgres_url, "sweep-c", host="another-host", age_s=STALE_S + 5)
    with SweepLock(postgres_url, "sweep-c") as lock:
        assert not lock.reentered


def test_drivers_starting_together_on_a_fresh_database_get_exactly_one_lock(postgres_url):
    # Each process creates the lock table if it is missing and races for the row. They import
    # first and then start at one agreed moment, so that their "is the table there?" checks meet:
    # on PostgreSQL a plain check-then-create loses that race with a unique violation on pg_type.
    race = """
import sys
import time
import psycopg, sqlalchemy  # noqa: F401 - imported before the start, not during the race
from pipeline.locks import SweepLock, SweepRunningError
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    SweepLock(sys.argv[1], "sweep-d").acquire()
    print("won", flush=True)
except SweepRunningError:
    print("refused", flush=True)
time.sleep(5)
"""
    import sqlalchemy as sa

    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE fresh"))
    admin.dispose()
    fresh = postgres_url.rsplit("/", 1)[0] + "/fresh"
    drivers = 4
    go = time.time() + 8.0  # after every interpreter has imported sqlalchemy and the lock module
    procs = [subprocess.Popen([sys.executable, "-c", race, fresh, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
             for _ in range(drivers)]
    outcomes = sorted(p.stdout.readline().strip() for p in procs)
    errors = []
    for p in procs:
        p.wait(timeout=60)
        errors.append(p.stderr.read())
    assert outcomes == ["refused"] * (drivers - 1) + ["won"], "".join(errors)


def test_a_driver_that_finds_another_mid_way_through_creating_the_table_waits_and_takes_the_lock(postgres_url):
    # The race above, held open: one driver has created the lock table in a transaction it has not
    # committed yet. A second driver must wait for it rather than fail on PostgreSQL's catalogue.
    import threading

    import sqlalchemy as sa

    from pipeline.locks import lock_table

    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE midway"))
    admin.dispose()
    midway = postgres_url.rsplit("/", 1)[0] + "/midway"
    first = sa.create_engine(midway)
    outcome: dict[str, object] = {}

    def second_driver() -> None:
        try:
            with SweepLock(midway, "sweep-e") as lock:
                outcome["won"] = not lock.reentered
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            outcome["error"] = exc

    with first.connect() as conn:
        transaction = conn.begin()
        lock_table(sa.MetaData()).create(conn)
        racer = threading.Thread(target=second_driver, daemon=True)
        racer.start()
        time.sleep(2.0)  # the second driver is now waiting on the first one's creation
        assert racer.is_alive(), f"the second driver did not wait: {outcome}"
        transaction.commit()
    racer.join(timeout=30)
    first.dispose()
    assert outcome == {"won": True}
