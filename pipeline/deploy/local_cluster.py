"""The sweep on a cluster of containers on this machine: ``make cluster-up`` / ``make sweep-cluster`` /
``make cluster-down``.

Every part runs from the project's own images (``make images``) on a Docker network of its own:

* ``clearrec-postgres``: Debian's PostgreSQL; databases ``mlflow`` (MLflow's backend store) and
  ``optuna`` (the sweep's study), data in the named volume ``clearrec-pgdata``;
* ``clearrec-s3``: moto's S3 server, the stand-in for S3 / MinIO (in-memory: objects live as long
  as the container);
* ``clearrec-mlflow``: the MLflow tracking server on PostgreSQL, artifacts proxied to S3;
* ``clearrec-ray-head`` and ``clearrec-ray-worker-<n>``: Ray with token authentication. The head
  offers no CPU to Ray, so every trial runs on a worker; the sweep's driver (the Ray job's
  entrypoint) runs on the head.

No host folder and no volume is shared between Ray nodes or with the host: the sweep's inputs
travel to S3 first, stage outputs and checkpoints live on S3 (:mod:`pipeline.deploy.cluster_job`),
runs and metrics on the MLflow server. Ports are published on 127.0.0.1 only.

Secrets (the database password, S3 keys, the Ray token) are generated once into ``.cluster/``
(git-ignored, mode 0600) and copied into each container as files before it starts (``~/.pgpass``,
``~/.aws/credentials``, ``~/.ray/auth_token``): never as environment variables, labels or command
arguments, which ``docker inspect`` and the process list show.

Command line (what the Makefile targets call)::

    python -m pipeline.deploy.local_cluster up [--workers N]
    python -m pipeline.deploy.local_cluster sweep --config FILE [clearrec sweep options ...]
    python -m pipeline.deploy.local_cluster status
    python -m pipeline.deploy.local_cluster down [--purge]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_core.errors import ClearrecError, ConfigError
from pipeline.deploy import parts

log = logging.getLogger(__name__)

NETWORK = f"{parts.PREFIX}-cluster"
VOLUME = f"{parts.PREFIX}-pgdata"
LABEL = "clearrec.cluster"
# The digest of the secret files a container was created with: a container is created again when
# the checkout's secrets differ (another clone, a deleted .cluster/), never restarted with stale ones.
SECRETS_LABEL = "clearrec.secrets-digest"
APP_UID = 1000          # the clearrec user of the cpu and s3 images (docker/Dockerfile.cpu)
POSTGRES_UID = 999      # the postgres user of docker/Dockerfile.postgres
APP_HOME = "/home/clearrec"
POSTGRES_SECRET_DIR = "/var/lib/postgresql/secrets"
POSTGRES_BIN = "/usr/lib/postgresql/15/bin"


class ClusterError(ClearrecError):
    """The local cluster could not be started, reached or used."""


@dataclass(frozen=True)
class ClusterSettings:
    """Where the cluster's parts are published on this machine and how big it is."""

    image_repo: str = parts.PREFIX
    image_tag: str = "0.1.0"
    workers: int = 2
    worker_cpus: int = 1
    # Docker's default /dev/shm (64 MB) is too small for Ray's object store.
    shm_size: str = "512m"
    object_store_bytes: int = 200 * 1024 * 1024
    mlflow_port: int = 15000
    s3_port: int = 19000
    dashboard_port: int = 18265
    postgres_port: int = 15432
    state_dir: Path = Path(".cluster")
    ready_timeout_s: float = 900.0  # a loaded 2-core machine starts MLflow in minutes

    def image(self, kind: str) -> str:
        return parts.image(kind, self.image_repo, self.image_tag)

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def worker_names(self) -> list[str]:
        return [f"{parts.PREFIX}-ray-worker-{i}" for i in range(1, self.workers + 1)]


@dataclass(frozen=True)
class Secrets:
    postgres_password: str
    aws_access_key_id: str
    aws_secret_access_key: str
    ray_token: str

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Secrets:
        """The cluster's secrets, generated on first use and kept. The PostgreSQL volume may
        outlive them (another checkout, a deleted ``.cluster/``): its role takes the password
        of the container created on it (docker/postgres-entry.sh)."""
        path = state_dir / "secrets.json"
        if path.exists():
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
        made = cls(
            postgres_password=secrets.token_urlsafe(24),
            aws_access_key_id="AKIA" + secrets.token_hex(8).upper(),
            aws_secret_access_key=secrets.token_urlsafe(30),
            ray_token=secrets.token_hex(32),
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(made.__dict__, handle)
        os.replace(tmp, path)
        return made

    def values(self) -> list[str]:
        return [self.postgres_password, self.aws_access_key_id, self.aws_secret_access_key, self.ray_token]

    def aws_files(self) -> dict[str, str]:
        return {
            ".aws/credentials": "[default]\n"
                                f"aws_access_key_id = {self.aws_access_key_id}\n"
                                f"aws_secret_access_key = {self.aws_secret_access_key}\n",
            ".aws/config": "[default]\nregion = us-east-1\n",
        }

    def pgpass(self) -> dict[str, str]:
        return {".pgpass": f"{parts.POSTGRES_HOST}:{parts.POSTGRES_PORT}:*:{parts.POSTGRES_USER}:"
                           f"{self.postgres_password}\n"}

    def ray_files(self) -> dict[str, str]:
        return {".ray/auth_token": self.ray_token}


@dataclass(frozen=True)
class Container:
    """One part of the cluster as ``docker create`` arguments, plus the secret files copied in
    (``files``: paths relative to ``files_dir``, owned by ``files_uid``, mode 0600)."""

    name: str
    image: str
    args: tuple[str, ...] = ()
    entrypoint: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[tuple[int, int], ...] = ()   # (host port on 127.0.0.1, container port)
    volumes: tuple[tuple[str, str], ...] = ()  # (named volume, mount path): PostgreSQL's only
    shm_size: str | None = None
    # Docker restarts a crashed process, not one stopped or killed by hand (`docker stop/kill`).
    restart: str = "no"
    files: Mapping[str, str] = field(default_factory=dict)
    files_dir: str = APP_HOME
    files_uid: int = APP_UID

    @property
    def secrets_digest(self) -> str:
        """SHA-256 of ``files`` (names and contents): shows whether a container holds these
        secrets without showing them (every container's files hold a value of 192 random bits or
        more, so no guess reaches its hash)."""
        blob = json.dumps(sorted(self.files.items()), separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def create_args(self) -> list[str]:
        out = ["create", "--name", self.name, "--hostname", self.name, "--network", NETWORK,
               "--label", f"{LABEL}=local", "--label", f"{SECRETS_LABEL}={self.secrets_digest}",
               "--restart", self.restart]
        for key, value in sorted(self.env.items()):
            out += ["--env", f"{key}={value}"]
        for host, inner in self.ports:
            out += ["--publish", f"127.0.0.1:{host}:{inner}"]
        for volume, path in self.volumes:
            out += ["--volume", f"{volume}:{path}"]
        if self.shm_size:
            out += ["--shm-size", self.shm_size]
        if self.entrypoint:
            out += ["--entrypoint", self.entrypoint]
        return [*out, self.image, *self.args]


def containers(settings: ClusterSettings, keys: Secrets) -> list[Container]:
    """The cluster, in start order."""
    cpu = settings.image("cpu")
    ray_env = parts.ray_node_env()
    worker_files = {**keys.aws_files(), **keys.ray_files()}
    out = [
        Container(parts.POSTGRES_HOST, settings.image("postgres"),
                  env={"POSTGRES_USER": parts.POSTGRES_USER,
                       "POSTGRES_DATABASES": f"{parts.MLFLOW_DATABASE} {parts.OPTUNA_DATABASE}"},
                  ports=((settings.postgres_port, parts.POSTGRES_PORT),),
                  volumes=((VOLUME, "/var/lib/postgresql/data"),),
                  files={"password": keys.postgres_password},
                  files_dir=POSTGRES_SECRET_DIR, files_uid=POSTGRES_UID),
        Container(parts.S3_HOST, settings.image("s3"), args=("--host", "0.0.0.0", "--port", str(parts.S3_PORT)),
                  ports=((settings.s3_port, parts.S3_PORT),)),
        # One server process: uvicorn's supervisor of several kills children that answer its
        # pings late, which on a loaded machine is all of them.
        Container(parts.MLFLOW_HOST, cpu, entrypoint="mlflow",
                  args=(*parts.mlflow_server_args(parts.postgres_url(parts.MLFLOW_DATABASE)), "--workers", "1"),
                  env=parts.mlflow_env(), ports=((settings.mlflow_port, parts.MLFLOW_PORT),),
                  files={**keys.aws_files(), **keys.pgpass()}, restart="on-failure:5"),
        # Ray gives a starting node 30 s to register (not configurable); a loaded machine can take
        # longer, so a node that gives up is started again.
        Container(parts.RAY_HEAD_HOST, cpu, entrypoint="ray",
                  args=tuple(parts.ray_head_args(num_cpus=0, object_store_bytes=settings.object_store_bytes)),
                  env=ray_env, ports=((settings.dashboard_port, parts.RAY_DASHBOARD_PORT),),
                  shm_size=settings.shm_size, files={**worker_files, **keys.pgpass()}, restart="on-failure:10"),
    ]
    for name in settings.worker_names():
        out.append(Container(name, cpu, entrypoint="ray",
                             args=tuple(parts.ray_worker_args(num_cpus=settings.worker_cpus,
                                                              object_store_bytes=settings.object_store_bytes)),
                             env=ray_env, shm_size=settings.shm_size,
                             files=worker_files, restart="on-failure:10"))
    return out


# --- docker ---------------------------------------------------------------------------------


def docker(*args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 120) -> str:
    try:
        done = subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise ClusterError("docker: command not found (docker/engine.sh up installs and starts an engine)") from None
    if check and done.returncode != 0:
        raise ClusterError(f"docker {args[0]} {' '.join(args[1:3])}: "
                           f"{done.stderr.decode(errors='replace').strip() or done.returncode}")
    return done.stdout.decode(errors="replace").strip()


def exists(kind: str, name: str) -> bool:
    """Whether the network / volume / image ``name`` exists."""
    return subprocess.run(["docker", kind, "inspect", name], capture_output=True, timeout=60).returncode == 0


def container_state(name: str) -> str | None:
    """``running``, ``exited``, ... or None when there is no such container."""
    out = docker("inspect", "-f", "{{.State.Status}}", name, check=False)
    return out or None


def secret_tar(files: Mapping[str, str], uid: int) -> bytes:
    """A tar of ``files`` owned by ``uid`` (0600 files, 0700 folders) for ``docker cp -`` (which
    keeps a tar stream's owners; ``-a`` would resolve the numeric user in the container and fail)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = sorted({str(Path(p).parent) for p in files} - {"."})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, 0o700, uid, uid, time.time()
            tar.addfile(info)
        for path, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o600, uid, uid, time.time()
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def start(container: Container) -> str:
    """Create (with its secret files) and start ``container``; start it again if it exists, and
    create it anew if its image has been rebuilt or it holds other secrets than this checkout's."""
    state = container_state(container.name)
    if state is not None:
        # '|': docker() strips the output, and a container without the label prints nothing for it.
        image, digest = docker("inspect", "-f", f'{{{{.Image}}}}|{{{{index .Config.Labels "{SECRETS_LABEL}"}}}}',
                               container.name).split("|", 1)
        if image != docker("image", "inspect", "-f", "{{.Id}}", container.image) \
                or digest != container.secrets_digest:
            # Built again since (`make images`), or created by another checkout: the part runs
            # the new image with this checkout's secrets (PostgreSQL's role takes the new
            # password, docker/postgres-entry.sh); volumes stay.
            docker("rm", "-f", container.name, timeout=180)
            state = None
    if state == "running":
        return "running"
    if state is None:
        docker(*container.create_args())
        if container.files:
            docker("cp", "-", f"{container.name}:{container.files_dir}",
                   stdin=secret_tar(container.files, container.files_uid))
    docker("start", container.name)
    return "started" if state is None else "restarted"


# --- readiness ------------------------------------------------------------------------------


def http_ok(url: str, headers: Mapping[str, str] | None = None, timeout: float = 3.0) -> bytes | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers or {})), timeout=timeout) as r:
            return r.read() if r.status == 200 else None
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def wait_for(what: str, ready: Callable[[], bool], timeout_s: float, logs_of: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    problem = f"not ready after {timeout_s:.0f}s"
    while time.monotonic() < deadline:
        if ready():
            return
        state = container_state(logs_of) if logs_of else None
        if logs_of and state not in ("running", "created", "restarting"):
            problem = f"stopped (container {state or 'gone'})"
            break
        time.sleep(1.0)
    tail = ""
    if logs_of:
        done = subprocess.run(["docker", "logs", "--tail", "30", logs_of], capture_output=True, text=True, timeout=60)
        tail = (done.stdout + done.stderr).strip()
    raise ClusterError(f"{what} {problem}" + (f"; last log lines of {logs_of}:\n{tail}" if tail else ""))


def postgres_ready() -> bool:
    done = subprocess.run(["docker", "exec", parts.POSTGRES_HOST, f"{POSTGRES_BIN}/pg_isready", "-q", "-h", "127.0.0.1"],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def head_started() -> bool:
    """Whether ``ray start --head`` said it started, in this run of the container: its GCS can
    answer before `ray start` gives up (Ray allows a node 30 s to register) and is restarted."""
    since = docker("inspect", "-f", "{{.State.StartedAt}}", parts.RAY_HEAD_HOST, check=False)
    if not since:
        return False
    done = subprocess.run(["docker", "logs", "--since", since, parts.RAY_HEAD_HOST], capture_output=True,
                          text=True, timeout=60)
    return "Ray runtime started" in done.stdout + done.stderr


def ray_auth_headers(keys: Secrets) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.ray_token}"}


def alive_ray_nodes(settings: ClusterSettings, keys: Secrets) -> list[dict[str, Any]]:
    """The cluster's alive Ray nodes, from the head's state API (token-authenticated)."""
    body = http_ok(f"{settings.dashboard_url}/api/v0/nodes?limit=100&detail=true", ray_auth_headers(keys))
    if body is None:
        return []
    result = json.loads(body).get("data", {}).get("result", {}).get("result", [])
    return [n for n in result if n.get("state") == "ALIVE"]


def s3_client(settings: ClusterSettings, keys: Secrets):
    import boto3

    return boto3.client("s3", endpoint_url=settings.s3_url, region_name="us-east-1",
                        aws_access_key_id=keys.aws_access_key_id, aws_secret_access_key=keys.aws_secret_access_key)


def s3_filesystem(settings: ClusterSettings, keys: Secrets):
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{settings.s3_port}", scheme="http", region="us-east-1",
                             access_key=keys.aws_access_key_id, secret_key=keys.aws_secret_access_key)


def up(settings: ClusterSettings) -> Secrets:
    """Start whatever part of the cluster is not running, and wait until all of it answers."""
    keys = Secrets.load_or_create(settings.state_dir)
    missing = [settings.image(k) for k in ("cpu", "postgres", "s3") if not exists("image", settings.image(k))]
    if missing:
        raise ClusterError(f"images missing: {', '.join(missing)} (run `make images` first)")
    if not exists("network", NETWORK):
        docker("network", "create", "--driver", "bridge", "--label", f"{LABEL}=local", NETWORK)
    if not exists("volume", VOLUME):
        docker("volume", "create", "--label", f"{LABEL}=local", VOLUME)
    t0 = time.monotonic()
    parts_list = containers(settings, keys)
    by_name = {c.name: c for c in parts_list}

    def bring(name: str) -> None:
        log.info("%s: %s", name, start(by_name[name]))

    bring(parts.POSTGRES_HOST)
    bring(parts.S3_HOST)
    wait_for("PostgreSQL", postgres_ready, settings.ready_timeout_s, parts.POSTGRES_HOST)
    wait_for("S3 (moto)", lambda: http_ok(settings.s3_url) is not None, settings.ready_timeout_s, parts.S3_HOST)
    s3 = s3_client(settings, keys)
    if parts.BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=parts.BUCKET)
    bring(parts.MLFLOW_HOST)
    bring(parts.RAY_HEAD_HOST)
    # Workers only once the head answers: a worker that reached a head which then restarted
    # holds the old cluster id and never joins the new one.
    wait_for("Ray head",
             lambda: head_started() and any(n.get("is_head_node") for n in alive_ray_nodes(settings, keys)),
             settings.ready_timeout_s, parts.RAY_HEAD_HOST)
    for name in settings.worker_names():
        bring(name)
    wait_for("MLflow server", lambda: http_ok(f"{settings.mlflow_url}/health") is not None,
             settings.ready_timeout_s, parts.MLFLOW_HOST)
    wait_for(f"Ray head + {settings.workers} workers",
             lambda: len(alive_ray_nodes(settings, keys)) >= settings.workers + 1,
             settings.ready_timeout_s, parts.RAY_HEAD_HOST)
    log.info("cluster up in %.0fs", time.monotonic() - t0)
    return keys


def down(settings: ClusterSettings, *, purge: bool = False) -> list[str]:
    """Remove the cluster's containers and network. The PostgreSQL volume (MLflow runs, Optuna
    studies) and the secrets stay unless ``purge``."""
    names = docker("ps", "-a", "--filter", f"label={LABEL}=local", "--format", "{{.Names}}").split()
    if names:
        docker("rm", "-f", *names, timeout=180)
    if exists("network", NETWORK):
        docker("network", "rm", NETWORK)
    if purge:
        if exists("volume", VOLUME):
            docker("volume", "rm", VOLUME)
        secrets_file = settings.state_dir / "secrets.json"
        if secrets_file.exists():
            secrets_file.unlink()
    return names


def status(settings: ClusterSettings) -> dict[str, str | None]:
    keys = Secrets(postgres_password="", aws_access_key_id="", aws_secret_access_key="", ray_token="")
    return {c.name: container_state(c.name) for c in containers(settings, keys)}


# --- the sweep ------------------------------------------------------------------------------


def stage_inputs(settings: ClusterSettings, keys: Secrets, config_path: Path, dataset_dir: Path | None,
                 prefix: str) -> None:
    """Upload what the job needs to ``s3://<bucket>/<prefix>/``: the sweep file and, when the
    config names a local dataset folder, that folder (as ``dataset/``)."""
    import pyarrow.fs as pafs

    fs = s3_filesystem(settings, keys)
    base = f"{parts.BUCKET}/{prefix}"
    with fs.open_output_stream(f"{base}/sweep.yaml") as out:
        out.write(config_path.read_bytes())
    if dataset_dir is not None:
        pafs.copy_files(str(dataset_dir.absolute()), f"{base}/dataset", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)


def sweep_name(config_path: Path) -> str:
    from pipeline.sweep_config import load_sweep_config

    return load_sweep_config(str(config_path)).name


def job_entrypoint(*, inputs: str, outputs: str, sweep_args: Sequence[str]) -> str:
    import shlex

    study = parts.postgres_url(parts.OPTUNA_DATABASE)
    command = ["python", "-m", "pipeline.deploy.cluster_job", "--inputs", inputs, "--outputs", outputs, "--",
               "--config", "sweep.yaml", "--study-storage", study,
               "--set", f"storage.path={outputs}/ray_results", *sweep_args]
    return shlex.join(command)


def submit_sweep(settings: ClusterSettings, config_path: Path, sweep_args: Sequence[str], *,
                 dataset_dir: Path | None = None, poll_s: float = 2.0,
                 write: Callable[[str], Any] | None = None) -> str:
    """Stage the inputs to S3, submit ``clearrec sweep`` to the head's Ray Jobs API, stream its
    logs and return its final status (``SUCCEEDED``, ``FAILED``, ``STOPPED``)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    def echo(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    write = write or echo
    keys = Secrets.load_or_create(settings.state_dir)
    if not alive_ray_nodes(settings, keys):
        raise ClusterError(f"no Ray cluster answers at {settings.dashboard_url} (run `make cluster-up`)")
    name = sweep_name(config_path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    inputs = f"inputs/{name}-{stamp}"
    stage_inputs(settings, keys, config_path, dataset_dir, inputs)
    args = list(sweep_args)
    if dataset_dir is not None:
        args += ["--dataset", "dataset"]
    entrypoint = job_entrypoint(inputs=f"s3://{parts.BUCKET}/{inputs}",
                                outputs=f"s3://{parts.BUCKET}/sweeps/{name}", sweep_args=args)
    client = JobSubmissionClient(settings.dashboard_url, headers=ray_auth_headers(keys))
    job_id = client.submit_job(entrypoint=entrypoint, submission_id=f"clearrec-sweep-{name}-{stamp}")
    log.info("submitted Ray job %s: %s", job_id, entrypoint)
    shown = 0
    while True:
        state = client.get_job_status(job_id)
        text = client.get_job_logs(job_id)
        done = state in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
        # Whole lines only until the end, so that no URL is cut between two polls.
        upto = len(text) if done else text.rfind("\n", shown) + 1
        if upto > shown:
            write(as_seen_from_this_machine(text[shown:upto], settings))
            shown = upto
        if done:
            return str(state.value if hasattr(state, "value") else state)
        time.sleep(poll_s)


def as_seen_from_this_machine(text: str, settings: ClusterSettings) -> str:
    """The job's log with the MLflow server's in-cluster address (what the driver tracks to) put
    as this machine reaches it, so that the summary's links open in a browser here."""
    return text.replace(parts.tracking_uri(), settings.mlflow_url)


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deploy.local_cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=ClusterSettings.workers)
    parser.add_argument("--image-repo", default=ClusterSettings.image_repo)
    parser.add_argument("--image-tag", default=ClusterSettings.image_tag)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the cluster (idempotent) and wait until every part answers")
    down_parser = sub.add_parser("down", help="remove the containers and network; keep runs and secrets")
    down_parser.add_argument("--purge", action="store_true", help="also remove the PostgreSQL volume and secrets")
    sub.add_parser("status", help="state of each container")
    sweep = sub.add_parser("sweep", help="submit `clearrec sweep` to the cluster and wait for it")
    sweep.add_argument("--config", required=True, help="sweep file (merged over configs/sweeps/default.yaml)")
    sweep.add_argument("--dataset", help="local dataset folder, uploaded to S3 for the job")
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "sweep":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = ClusterSettings(workers=args.workers, image_repo=args.image_repo, image_tag=args.image_tag)
    try:
        if args.command == "up":
            up(settings)
            print(f"cluster up: MLflow {settings.mlflow_url}, Ray dashboard {settings.dashboard_url}, "
                  f"S3 {settings.s3_url}")
        elif args.command == "down":
            removed = down(settings, purge=args.purge)
            print(f"cluster down: removed {len(removed)} containers" + (" and the PostgreSQL volume" if args.purge else ""))
        elif args.command == "status":
            for name, state in status(settings).items():
                print(f"{name:28s} {state or 'absent'}")
        else:
            config = Path(args.config)
            if not config.is_file():
                raise ConfigError(f"--config: {config} is not a file")
            dataset = Path(args.dataset) if args.dataset else None
            if dataset is not None and not dataset.is_dir():
                raise ConfigError(f"--dataset: {dataset} is not a folder")
            final = submit_sweep(settings, config, rest, dataset_dir=dataset)
            print(f"\nRay job {final}; MLflow UI: {settings.mlflow_url}", file=sys.stderr)
            return 0 if final == "SUCCEEDED" else 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ClearrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
