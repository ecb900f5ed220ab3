"""Run the sweep as a KubeRay RayJob and wait for its verdict.

The RayJob comes from one template, ``k8s/base/rayjob-sweep.yaml`` (copied into the images at
``/app/k8s/rayjob-sweep.yaml``), filled in with the images, a name and the sweep config. The
config travels in a ConfigMap mounted on the Ray head, so a local file (``make sweep-k8s
CONFIG=...``) or a Kubeflow parameter reaches the cluster without rebuilding an image.

Success is read from the RayJob's ``status.jobStatus`` (``SUCCEEDED``), not from a submitter
pod's exit code, which can report success for a job that never ran. ``FAILED`` / ``STOPPED`` count
as final only once ``status.jobDeploymentStatus`` is final too: with ``backoffLimit`` KubeRay
retries a failed attempt on a fresh cluster (``Retrying``), and ``clearrec sweep`` resumes the
sweep from its S3 storage there.

Command line (the Kubeflow sweep step and ``make sweep-k8s``)::

    python -m pipeline.deploy.rayjob submit --cpu-image IMG --gpu-image IMG --config FILE \
        [--dataset-path DIR] [--results URI] [--run-id ID | --name N] [--namespace NS] [--timeout S]

The Kubernetes client (``kubernetes``, in the ``kfp`` extra) is imported only by ``submit``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clear_core.errors import ClearrecError, ConfigError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
TEMPLATE_ENV = "CLEARREC_RAYJOB_TEMPLATE"
# Where the config ConfigMap is mounted on the head (read-only root filesystem elsewhere).
CONFIG_MOUNT = "/etc/clearrec/sweep"
CONFIG_KEY = "sweep.yaml"
CONFIG_VOLUME = "sweep-config"  # the head's volume (k8s/base/rayjob-sweep.yaml) holding the config
# jobDeploymentStatus values after which KubeRay changes nothing more.
FINAL_DEPLOYMENT = ("Complete", "Failed")
FAILED_JOB = ("FAILED", "STOPPED")
NAME_MAX = 40  # KubeRay derives cluster and pod names from it; keep room for its suffixes


class RayJobFailed(ClearrecError):
    """The RayJob ended without ``jobStatus: SUCCEEDED`` (or did not end in time)."""


@dataclass(frozen=True)
class RayJobStatus:
    job_status: str
    deployment_status: str
    message: str

    @classmethod
    def of(cls, rayjob: dict[str, Any]) -> RayJobStatus:
        status = rayjob.get("status") or {}
        return cls(
            job_status=status.get("jobStatus") or "",
            deployment_status=status.get("jobDeploymentStatus") or "",
            message=status.get("message") or status.get("reason") or "",
        )

    @property
    def succeeded(self) -> bool:
        return self.job_status == "SUCCEEDED"

    @property
    def failed(self) -> bool:
        if self.deployment_status == "Failed":
            return True
        return self.job_status in FAILED_JOB and self.deployment_status in FINAL_DEPLOYMENT


def default_template_path() -> Path:
    """``$CLEARREC_RAYJOB_TEMPLATE``, else the image copy, else the repository's k8s/base file."""
    env = os.environ.get(TEMPLATE_ENV)
    if env:
        return Path(env)
    image_copy = Path("/app/k8s/rayjob-sweep.yaml")
    if image_copy.exists():
        return image_copy
    return Path(__file__).resolve().parents[2] / "k8s" / "base" / "rayjob-sweep.yaml"


def load_template(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path else default_template_path()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: RayJob template not found; set {TEMPLATE_ENV}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "RayJob":
        raise ConfigError(f"{path}: expected a RayJob manifest")
    return doc


def job_name(text: str, prefix: str = "clearrec-sweep") -> str:
    """A valid, short RayJob name from free text (a Kubeflow run id, a config name)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = f"{prefix}-{slug}" if slug else prefix
    return name[:NAME_MAX].rstrip("-")


def sweep_config_for_run(
    config: dict[str, Any], *, dataset_path: str | None = None, results_uri: str | None = None
) -> dict[str, Any]:
    """The sweep file to run on the cluster: ``config`` with the run's dataset and S3 results.

    ``dataset`` is replaced whole (the sweep-config rule for that key); ``storage.path`` is the
    results location a retried RayJob resumes from.
    """
    out = copy.deepcopy(config)
    if dataset_path:
        out["dataset"] = {"path": dataset_path}
    if results_uri:
        if not results_uri.startswith("s3://"):
            raise ConfigError(f"--results: expected s3://bucket/prefix, got {results_uri!r}")
        out.setdefault("storage", {})
        out["storage"] = {**(out["storage"] or {}), "path": results_uri}
    return out


def config_map(name: str, namespace: str | None, sweep_config: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "clearrec"}}
    if namespace:
        meta["namespace"] = namespace
    text = yaml.safe_dump(sweep_config, sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {CONFIG_KEY: text}}


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_template.setdefault("spec", {}).setdefault("containers", [])


def build_rayjob(
    template: dict[str, Any],
    *,
    name: str,
    namespace: str | None,
    cpu_image: str,
    gpu_image: str,
    config_map_name: str,
    backoff_limit: int | None = None,
    runs_dir: str | None = None,
) -> dict[str, Any]:
    """The template with name, images, and its ``sweep-config`` volume pointed at ``config_map_name``.

    The entrypoint runs on the head, so only the head mounts the config; workers receive the
    trials' parameters through Ray.
    """
    job = copy.deepcopy(template)
    job["metadata"]["name"] = name
    if namespace:
        job["metadata"]["namespace"] = namespace
    spec = job["spec"]
    config_path = f"{CONFIG_MOUNT}/{CONFIG_KEY}"
    spec["entrypoint"] = f"clearrec sweep --config {shlex.quote(config_path)}" + (
        f" --runs-dir {shlex.quote(runs_dir)}" if runs_dir else "")
    if backoff_limit is not None:
        spec["backoffLimit"] = backoff_limit
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]
    for container in _containers(head):
        container["image"] = cpu_image
    for container in _containers(spec.get("submitterPodTemplate", {})):
        container["image"] = cpu_image
    for group in cluster.get("workerGroupSpecs", []):
        for container in _containers(group["template"]):
            container["image"] = gpu_image
    volumes = [v for v in head["spec"].get("volumes", []) if v.get("name") == CONFIG_VOLUME]
    if len(volumes) != 1 or "configMap" not in volumes[0]:
        raise ConfigError(f"RayJob template: the head needs one configMap volume named {CONFIG_VOLUME!r}")
    volumes[0]["configMap"]["name"] = config_map_name
    return job


def current_namespace() -> str:
    """The pod's own namespace in a cluster, else the kubeconfig context's, else ``default``."""
    sa_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if sa_file.exists():
        return sa_file.read_text(encoding="utf-8").strip()
    try:
        from kubernetes import config as k8s_config

        _, context = k8s_config.list_kube_config_contexts(config_file=_kubeconfig_path())
        return (context or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig: the caller reports the missing cluster
        return "default"


def _kubeconfig_path() -> str | None:
    # Read now, not when the kubernetes package was imported (it caches $KUBECONFIG then).
    return os.environ.get("KUBECONFIG") or None


def load_kube_config() -> None:
    from kubernetes import config as k8s_config

    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config(config_file=_kubeconfig_path())
        except (k8s_config.ConfigException, FileNotFoundError, TypeError) as exc:
            raise ClearrecError(
                f"no Kubernetes cluster: not in a pod and no usable kubeconfig ({exc}); "
                "set KUBECONFIG or run inside the cluster"
            ) from None


class RayJobClient:
    """The few Kubernetes API calls the sweep step needs (custom objects + ConfigMaps)."""

    def __init__(self, api_client: Any = None):
        from kubernetes import client

        self._client = client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def _exists_error(self, exc: Exception) -> bool:
        return isinstance(exc, self._client.exceptions.ApiException) and exc.status == 409

    def apply_config_map(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            self.core.create_namespaced_config_map(meta["namespace"], body)
        except Exception as exc:
            if not self._exists_error(exc):
                raise
            self.core.replace_namespaced_config_map(meta["name"], meta["namespace"], body)

    def create_or_get(self, rayjob: dict[str, Any]) -> dict[str, Any]:
        """Create the RayJob; if one of that name exists (a retried pipeline step), follow it."""
        meta = rayjob["metadata"]
        try:
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, rayjob
            )
        except Exception as exc:
            if not self._exists_error(exc):
                raise
            log.info("RayJob %s/%s exists already: following it", meta["namespace"], meta["name"])
            return self.get(meta["name"], meta["namespace"])

    def own_config_map(self, config_map_name: str, rayjob: dict[str, Any]) -> None:
        """Make the RayJob own its ConfigMap, so deleting the job (or its TTL) removes both."""
        meta = rayjob["metadata"]
        owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RayJob", "name": meta["name"], "uid": meta["uid"]}
        self.core.patch_namespaced_config_map(
            config_map_name, meta["namespace"], {"metadata": {"ownerReferences": [owner]}}
        )

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def wait_for_rayjob(
    get: Callable[[], dict[str, Any]],
    *,
    timeout_s: float,
    poll_s: float = 10.0,
    on_change: Callable[[RayJobStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RayJobStatus:
    """Poll ``get()`` until ``status.jobStatus`` is final; raise :class:`RayJobFailed` unless it
    SUCCEEDED. A ``FAILED`` attempt that KubeRay is retrying is not final."""
    deadline = clock() + timeout_s
    last: RayJobStatus | None = None
    while True:
        status = RayJobStatus.of(get())
        if status != last and on_change:
            on_change(status)
        last = status
        if status.succeeded:
            return status
        if status.failed:
            raise RayJobFailed(
                f"RayJob failed: jobStatus={status.job_status or '-'} "
                f"jobDeploymentStatus={status.deployment_status or '-'} {status.message}".rstrip()
            )
        if clock() >= deadline:
            raise RayJobFailed(
                f"RayJob not finished after {timeout_s:.0f} s (jobStatus={status.job_status or '-'}, "
                f"jobDeploymentStatus={status.deployment_status or '-'})"
            )
        sleep(poll_s)


def mlflow_hint(namespace: str) -> str:
    return (
        f"MLflow UI: kubectl -n {namespace} port-forward svc/clearrec-mlflow 5000:5000, "
        "then open http://localhost:5000"
    )


def _read_config(path: str) -> dict[str, Any]:
    from clear_core.config import load_yaml

    return load_yaml(path)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sweep config file (YAML), local or in the image")
    parser.add_argument("--dataset-path", help="dataset folder as the Ray pods see it (e.g. on the /data volume)")
    parser.add_argument("--results", help="results storage s3://bucket/prefix (where a retried job resumes)")
    parser.add_argument("--runs-dir", help="the sweep's stage outputs (outcome.json, best checkpoint) as the head "
                        "sees it, e.g. on the /data volume, where a later step reads them (default: the image's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deploy.rayjob", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="create the sweep RayJob and wait on status.jobStatus")
    _add_config_args(submit)
    submit.add_argument("--cpu-image", required=True, help="image of the head and the submitter")
    submit.add_argument("--gpu-image", required=True, help="image of the GPU workers")
    submit.add_argument("--name", help="RayJob name (default: from --run-id, else the config file name)")
    submit.add_argument("--run-id", help="a Kubeflow run id: names the RayJob, so a retried step finds it")
    submit.add_argument("--namespace", help="default: the pod's or kubeconfig's namespace")
    submit.add_argument("--template", help=f"RayJob template (default: ${TEMPLATE_ENV} or the image copy)")
    submit.add_argument("--backoff-limit", type=int, help="RayJob retries (default: the template's)")
    submit.add_argument("--timeout", type=float, default=86400.0, help="seconds to wait (default 86400)")
    submit.add_argument("--poll", type=float, default=15.0, help="seconds between status reads")
    submit.add_argument("--no-wait", action="store_true", help="create the RayJob and return")
    return parser


def run_submit(args: argparse.Namespace) -> int:
    sweep_config = sweep_config_for_run(
        _read_config(args.config), dataset_path=args.dataset_path, results_uri=args.results
    )
    name = args.name or job_name(args.run_id or Path(args.config).stem)
    load_kube_config()
    namespace = args.namespace or current_namespace()
    api = RayJobClient()
    cm_name = f"{name}-config"
    api.apply_config_map(config_map(cm_name, namespace, sweep_config))
    rayjob = build_rayjob(
        load_template(args.template), name=name, namespace=namespace, cpu_image=args.cpu_image,
        gpu_image=args.gpu_image, config_map_name=cm_name, backoff_limit=args.backoff_limit,
        runs_dir=args.runs_dir,
    )
    created = api.create_or_get(rayjob)
    if created.get("metadata", {}).get("uid"):
        api.own_config_map(cm_name, created)
    log.info("RayJob %s/%s created; %s", namespace, name, mlflow_hint(namespace))
    if args.no_wait:
        return 0

    def report(status: RayJobStatus) -> None:
        log.info("RayJob %s: jobStatus=%s jobDeploymentStatus=%s %s", name,
                 status.job_status or "-", status.deployment_status or "-", status.message)

    wait_for_rayjob(lambda: api.get(name, namespace), timeout_s=args.timeout, poll_s=args.poll,
                    on_change=report)
    log.info("RayJob %s SUCCEEDED. %s", name, mlflow_hint(namespace))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_submit(args)
    except ClearrecError as exc:
        print(f"pipeline.deploy.rayjob {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
