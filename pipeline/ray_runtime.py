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
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from clear_core.errors import ClearrecError

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
        _watch_session()
    return True


# A driver killed with SIGKILL takes its private Ray down (Ray fate-shares the GCS and the raylet
# with it), except the raylet's two agents, which try to tell the dead GCS that the raylet died
# and wait 60 s for it, and any worker still starting up. This watchdog, a tiny process holding a
# pipe from the driver, ends every process of that Ray session (its session folder is in their
# command lines) as soon as the pipe closes because the driver is gone: they would serve nobody.
_WATCHDOG = """
import os, signal, sys
session, known = sys.argv[1], dict(item.split(":", 1) for item in sys.argv[2:])
if sys.stdin.read() == "":  # EOF without a word: the driver died
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                start = f.read().rsplit(")", 1)[1].split()[19]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, IndexError):
            continue
        # The agents, known by pid and start time (they rename themselves), and any process
        # whose command line names the session (a worker still starting up).
        if known.get(entry) == start or session.encode() in cmdline:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
"""


def _process_start(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def _watch_session() -> None:
    """Start the watchdog above for the local Ray just started (Linux only)."""
    import subprocess
    import sys

    try:
        import psutil
        import ray

        node = ray._private.worker._global_node
        session = node.get_session_dir_path()
        raylet = node.all_processes["raylet"][0].process.pid
        agents = [f"{child.pid}:{_process_start(child.pid)}" for child in psutil.Process(raylet).children()]
    except Exception as exc:  # noqa: BLE001 - no procfs, or Ray's internals moved: no watchdog
        log.debug("no Ray session watchdog (%s)", exc)
        return
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, session, *agents], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Never written to or closed here: only this process's death closes the pipe. After an
    # orderly ray.shutdown the watchdog finds nothing left when this process exits.
    _WATCHDOGS.append(watchdog)


_WATCHDOGS: list = []


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


# --- can the cluster ever run a trial? -------------------------------------------------------
#
# Ray keeps a trial whose demand no node can meet PENDING for ever, printing an autoscaler
# warning every minute. So before anything starts, the request is compared with what the cluster
# can ever offer: its nodes as they are, and, where an autoscaler has published its node types
# (KubeRay, the cluster launcher), the nodes it may still add.

RAY_NAMES = {"cpu": "CPU", "gpu": "GPU"}
POLL_S = 2.0


class ClusterResourcesError(ClearrecError):
    """No node of the cluster (present or addable) can ever run one trial."""


def ray_request(request: Mapping[str, float]) -> dict[str, float]:
    """Sweep-config names (``cpu``, ``gpu``, custom) -> Ray's (``CPU``, ``GPU``, custom); zero
    demands left out."""
    return {RAY_NAMES.get(k, k): float(v) for k, v in request.items() if float(v) > 0}


def _fits(offer: Mapping[str, float], request: Mapping[str, float]) -> bool:
    return all(float(offer.get(k, 0.0)) >= v for k, v in request.items())


def _describe(resources: Mapping[str, float], keys: list[str]) -> str:
    return ", ".join(f"{float(resources.get(k, 0.0)):g} {k}" for k in keys)


def _largest(offers: list[tuple[str, Mapping[str, float]]], request: Mapping[str, float]) -> tuple[str, Mapping[str, float]]:
    """The offer that comes closest: most requested resources met, then most of each."""
    return max(offers, key=lambda o: (sum(float(o[1].get(k, 0.0)) >= v for k, v in request.items()),
                                      tuple(float(o[1].get(k, 0.0)) for k in request)))


def placement_verdict(
    request: Mapping[str, float],
    nodes: list[tuple[str, Mapping[str, float]]],
    node_types: list[tuple[str, Mapping[str, float]]] | None,
) -> tuple[str, str]:
    """``("fits" | "wait" | "never", message)`` for one trial's Ray ``request``.

    ``nodes``: (name, total resources) of the live nodes; ``node_types``: (name, resources) of
    the node types an autoscaler may still start (``None``: a fixed cluster)."""
    keys = list(request)
    wanted = _describe(request, keys)
    if any(_fits(offer, request) for _, offer in nodes):
        return "fits", ""
    if node_types and any(_fits(offer, request) for _, offer in node_types):
        names = [name for name, offer in node_types if _fits(offer, request)]
        return "wait", (f"each trial asks for {wanted}; no node offers that yet, the autoscaler may add one "
                        f"of node type {', '.join(names)}")
    parts = [f"each trial asks for {wanted}"]
    if nodes:
        name, offer = _largest(nodes, request)
        parts.append(f"the largest node of the Ray cluster ({name}) offers {_describe(offer, keys)}")
    else:
        parts.append("the Ray cluster has no live node")
    if node_types:
        name, offer = _largest(node_types, request)
        parts.append(f"and the largest node type the autoscaler can add ({name}) offers {_describe(offer, keys)}")
    else:
        parts.append("and no autoscaler can add nodes")
    return "never", "; ".join(parts) + ": no trial could ever start. Lower `resources` in the sweep config " \
        "(e.g. --set resources.cpu=1) or add a node that offers it"


def local_offer() -> dict[str, float]:
    """What a local Ray started by :func:`init_ray` offers: Ray's own count of this machine's
    CPUs (cgroup limits included) and NVIDIA GPUs."""
    from ray._private.utils import get_num_cpus

    gpus = 0
    try:
        from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

        gpus = NvidiaGPUAcceleratorManager.get_current_node_num_accelerators()
    except Exception as exc:  # noqa: BLE001 - no driver library: no GPU
        log.debug("no GPU count (%s)", exc)
    return {"CPU": float(get_num_cpus()), "GPU": float(gpus)}


def live_nodes() -> list[tuple[str, dict[str, float]]]:
    import ray

    out = []
    for node in ray.nodes():
        if node.get("Alive"):
            resources = {k: float(v) for k, v in node.get("Resources", {}).items() if not k.startswith("node:")}
            out.append((f"{node.get('NodeManagerAddress', '?')} {node.get('NodeID', '')[:8]}", resources))
    return out


def autoscaler_node_types() -> list[tuple[str, dict[str, float]]] | None:
    """The node types an autoscaler has published for this cluster (None: none is configured).

    KubeRay's and the cluster launcher's autoscaler (v2) report their node groups to the GCS;
    a group whose ``max_count`` is 0 can never be started."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception as exc:  # noqa: BLE001 - an older GCS without the call: treat as fixed
        log.debug("no autoscaler configuration readable (%s)", exc)
        return None
    if config is None or not config.node_group_configs:
        return None
    return [(group.name or "?", {k: float(v) for k, v in group.resources.items()})
            for group in config.node_group_configs if group.max_count != 0]


def ensure_trial_resources(request: Mapping[str, float], *, wait_s: float) -> None:
    """Raise :class:`ClusterResourcesError` when no node, present or addable, can run a trial
    asking for ``request`` (sweep-config names); when only an autoscaler's node could, ask it
    for one and wait at most ``wait_s`` seconds, saying so. Before Ray is initialised, a local
    Ray is judged by this machine (and a cluster at ``RAY_ADDRESS`` is left for the call after
    joining it)."""
    import ray

    ray_req = ray_request(request)
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            return  # a cluster is only known once joined; checked again then
        # The private local Ray that init_ray would start has this machine's CPUs and GPUs:
        # a request beyond them is refused in a second, before Ray takes its time to start.
        verdict, message = placement_verdict(ray_req, [("this machine, for a local Ray", local_offer())], None)
    else:
        verdict, message = placement_verdict(ray_req, live_nodes(), autoscaler_node_types())
    if verdict == "fits":
        return
    if verdict == "never":
        raise ClusterResourcesError(message)
    from ray.autoscaler.sdk import request_resources

    log.warning("%s; waiting up to %.0f s for it (resources.scale_up_wait_s)", message, wait_s)
    request_resources(bundles=[ray_req])
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            if any(_fits(offer, ray_req) for _, offer in live_nodes()):
                log.info("a node that fits one trial has joined the cluster")
                return
    finally:
        # The trials now hold the node; a standing request would keep it after the sweep.
        request_resources(bundles=[])
    raise ClusterResourcesError(
        f"{message}, but none joined within {wait_s:.0f} s (resources.scale_up_wait_s); check the "
        "autoscaler's logs and quotas, or lower `resources`"
    )
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


def quiet_worker_teardown() -> None:
    """In a Ray worker: drop the "Exception ignored ... SystemExit: 1" traceback of its teardown.

    Ray's workers turn SIGTERM into ``SystemExit``. When the signal lands while the worker's main
    thread runs a garbage-collector or weakref callback (often, in a trial that is being stopped),
    Python cannot raise it there and prints it as an unraisable exception: a traceback on the
    driver's console that reads like a crash and is none. Other unraisable exceptions still go to
    the hook that was in place.
    """
    import sys

    previous = sys.unraisablehook
    if getattr(previous, "drops_teardown_exit", False):
        return

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, SystemExit):
            return
        previous(unraisable)

    hook.drops_teardown_exit = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


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
