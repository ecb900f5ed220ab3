"""The Ray plumbing of the pipeline: a stage runs as a task pinned to the driver's node, in the
driver when that node offers no CPU; an address where nothing listens fails in seconds; a worker's
teardown prints no traceback."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from pipeline import ray_runtime, stages
from pipeline.ray_runtime import probe_ray_address, run_as_task

TINY = {"n_users": 120, "n_items": 90, "n_interactions": 1800}


def test_a_stage_runs_as_a_ray_task_on_the_driver_node(tmp_path):
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_as_task(stages.synthesize, tmp_path, overrides=TINY)
    finally:
        ray.shutdown()
    assert not remote["reused"]
    assert stages.synthesize(tmp_path, overrides=TINY)["reused"]


def test_a_driver_node_without_cpus_runs_the_stage_in_the_driver_instead_of_waiting(tmp_path):
    import ray

    ray.init(address="local", num_cpus=0, include_dashboard=False, log_to_driver=False)
    try:
        out = run_as_task(stages.synthesize, tmp_path, overrides=TINY)
    finally:
        ray.shutdown()
    assert not out["reused"] and (tmp_path / "synthesize" / out["key"] / "stage.json").exists()


def test_a_ray_address_where_nothing_listens_fails_in_seconds_naming_it():
    from clear_core.errors import ConfigError

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"RAY_ADDRESS=127.0.0.1:{port}"):
        probe_ray_address(f"127.0.0.1:{port}", timeout_s=2.0)
    assert time.monotonic() - start < 5


class _ExitsWhenCollected:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __del__(self) -> None:
        raise self.exc


def test_a_worker_stopped_mid_collection_prints_no_traceback_but_other_unraisables_still_show(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    ray_runtime.quiet_worker_teardown()
    ray_runtime.quiet_worker_teardown()  # once per worker, however many trials it runs

    _ExitsWhenCollected(SystemExit(1))  # what Ray's SIGTERM handler raises inside a callback
    _ExitsWhenCollected(ValueError("a real bug"))

    assert [type(u.exc_value) for u in seen] == [ValueError]
