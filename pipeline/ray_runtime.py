"""Start or join Ray, explicitly.

A bare ``ray.init()`` joins whatever cluster a stale ``ray_current_cluster`` file in Ray's
temporary folder points at (stack-notes.md), which on a laptop is usually a dead one. So:

* ``RAY_ADDRESS`` set (or ``address`` given): join that cluster;
* otherwise: start a private local instance with ``address="local"``;
* Ray already initialised in this process (tests, notebooks): use it as it is.

:func:`ray_session` shuts down only an instance it started itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

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
