"""Start or join Ray, explicitly.

A bare ``ray.init()`` joins whatever cluster a stale ``ray_current_cluster`` file in Ray's
temporary folder points at, which on a laptop is usually a dead one. So:

* ``RAY_ADDRESS`` set (or ``address`` given): join that cluster;
* otherwise: start a private local instance with ``address="local"``;
* Ray already initialised in this process (tests, notebooks): use it as it is.

:func:`ray_session` shuts down only an instance it started itself. The rest is the plumbing the
pipeline's stages need: probing ``RAY_ADDRESS`` before joining, the driver node's CPUs, and running
a stage as a task pinned to the driver's node (:func:`run_as_task`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Initialise Ray as described above; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = {"include_dashboard": False, "log_to_driver": True, "logging_level": logging.WARNING}
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, **kwargs)
    else:
        log.info("starting a local Ray instance")
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    return True


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> Iterator[None]:
    import ray

    started = init_ray(address, num_cpus=num_cpus, num_gpus=num_gpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def cluster_gpus() -> float:
    """GPUs the connected cluster has in total (0 on a CPU-only cluster)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def ray_address() -> str:
    """The cluster this process joins: ``RAY_ADDRESS``, or ``local`` for a private instance."""
    return os.environ.get("RAY_ADDRESS") or "local"


def probe_ray_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds when ``RAY_ADDRESS`` names a host:port where nothing listens: ``ray.init``
    would otherwise retry for many minutes before giving up."""
    import socket
    from urllib.parse import urlparse

    from clear_core.errors import ConfigError

    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"RAY_ADDRESS={address}: cannot join the Ray cluster (nothing answers at "
            f"{parsed.hostname}:{parsed.port}: {exc.strerror or exc}); start it or unset RAY_ADDRESS "
            "for a local Ray"
        ) from None


def join_or_start_ray() -> bool:
    """:func:`init_ray` for the pipeline run, with a cluster that refuses this driver reported as
    a ConfigError naming its address; True when this call started Ray."""
    try:
        return init_ray()
    except (ConnectionError, RuntimeError) as exc:
        from clear_core.errors import ConfigError

        raise ConfigError(
            f"RAY_ADDRESS={ray_address()}: cannot join the Ray cluster ({str(exc).splitlines()[0]}); a cluster "
            "with token authentication also needs RAY_AUTH_MODE=token and its token "
            "(RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None


def node_cpus() -> float:
    """The CPUs Ray may use on the driver's node (0 when the node offers none)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    for entry in ray.nodes():
        if entry.get("NodeID") == node:
            return float(entry.get("Resources", {}).get("CPU", 0.0))
    return 0.0


def run_as_task(fn: Callable[..., Any], *args: Any, num_cpus: float = 1, num_gpus: float = 0,
                on_driver_node: bool = True, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` as a Ray task and wait for its result.

    ``on_driver_node`` pins the task to the driver's node: stage outputs are folders on a local
    (or mounted) disk, which a task on another node could not hand back. Ray must be initialised.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": 1}
    if on_driver_node and node_cpus() < num_cpus:
        # A head node started with num-cpus 0 accepts no task: pinned there, it would wait forever.
        log.warning("the driver's node offers fewer than %s CPUs to Ray; running %s in the driver",
                    num_cpus, getattr(fn, "__name__", fn))
        return fn(*args, **kwargs)
    if on_driver_node:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False
        )
    return ray.get(ray.remote(fn).options(**options).remote(*args, **kwargs))
