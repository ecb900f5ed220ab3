"""The parts of a clearrec cluster, described once for the local container cluster
(:mod:`pipeline.deploy.local_cluster`) and checked against the Kubernetes manifests in k8s/ (a
test compares them), so that the two cannot drift apart: the same service names, ports, images
and server commands.

Names are the Kubernetes Service names (``clearrec-mlflow``, ``clearrec-postgres``), which are
also the container names on the local cluster's Docker network, so a URI such as
``http://clearrec-mlflow:5000`` means the same server in both places.
"""

from __future__ import annotations

PREFIX = "clearrec"

# Ports inside the cluster (container / pod ports).
MLFLOW_PORT = 5000
POSTGRES_PORT = 5432
S3_PORT = 9000
RAY_GCS_PORT = 6379
RAY_DASHBOARD_PORT = 8265

MLFLOW_HOST = f"{PREFIX}-mlflow"
POSTGRES_HOST = f"{PREFIX}-postgres"
S3_HOST = f"{PREFIX}-s3"
RAY_HEAD_HOST = f"{PREFIX}-ray-head"

BUCKET = PREFIX                      # MLflow artifacts under s3://clearrec/mlflow, sweeps beside them
MLFLOW_DATABASE = "mlflow"
OPTUNA_DATABASE = "optuna"
POSTGRES_USER = PREFIX

# Image kinds (docker/images.sh builds <repo>:<tag>-<kind>); k8s names the CPU image clearrec-cpu.
IMAGE_KINDS = ("cpu", "launcher", "postgres", "s3", "cuda")


def image(kind: str, repo: str = PREFIX, tag: str = "0.1.0") -> str:
    if kind not in IMAGE_KINDS:
        raise ValueError(f"image kind {kind!r}: expected one of {IMAGE_KINDS}")
    return f"{repo}:{tag}-{kind}"


def tracking_uri(host: str = MLFLOW_HOST) -> str:
    return f"http://{host}:{MLFLOW_PORT}"


def s3_endpoint(host: str = S3_HOST) -> str:
    return f"http://{host}:{S3_PORT}"


def postgres_url(database: str, *, user: str = POSTGRES_USER, password: str | None = None,
                 host: str = POSTGRES_HOST) -> str:
    """SQLAlchemy URL of a database on the cluster's PostgreSQL. Without ``password`` the URL
    carries none and libpq takes it from ``~/.pgpass``, so the URL can be logged and tagged."""
    auth = f"{user}:{password}" if password else user
    return f"postgresql+psycopg://{auth}@{host}:{POSTGRES_PORT}/{database}"


def mlflow_allowed_hosts(host: str = MLFLOW_HOST) -> str:
    """The Host headers the MLflow server accepts (DNS-rebinding protection): its in-cluster
    name and the loopback forms that a published port or ``kubectl port-forward`` gives."""
    return f"{host},{host}:*,{host}.*,localhost:*,127.0.0.1:*"


def mlflow_server_args(backend_store_uri: str, *, bucket: str = BUCKET, host: str = MLFLOW_HOST) -> list[str]:
    """``mlflow server`` arguments: runs in PostgreSQL, artifacts proxied to S3 (clients need no
    S3 credentials for artifacts)."""
    return [
        "server", "--host", "0.0.0.0", "--port", str(MLFLOW_PORT),
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", f"s3://{bucket}/mlflow",
        "--allowed-hosts", mlflow_allowed_hosts(host),
    ]


def ray_head_args(*, num_cpus: int, object_store_bytes: int | None = None) -> list[str]:
    """``ray start`` for the head. The local cluster gives it ``num_cpus=0`` so that every trial
    runs on a worker; the driver (the job's entrypoint) runs on the head."""
    args = ["start", "--head", f"--port={RAY_GCS_PORT}", "--dashboard-host=0.0.0.0",
            f"--dashboard-port={RAY_DASHBOARD_PORT}", f"--num-cpus={num_cpus}", "--disable-usage-stats", "--block"]
    if object_store_bytes:
        args.insert(-1, f"--object-store-memory={object_store_bytes}")
    return args


def ray_worker_args(*, num_cpus: int, object_store_bytes: int | None = None, head: str = RAY_HEAD_HOST) -> list[str]:
    args = ["start", f"--address={head}:{RAY_GCS_PORT}", f"--num-cpus={num_cpus}", "--disable-usage-stats", "--block"]
    if object_store_bytes:
        args.insert(-1, f"--object-store-memory={object_store_bytes}")
    return args


def ray_node_env() -> dict[str, str]:
    """Non-secret environment of the Ray nodes. Secrets never travel as environment variables
    (``docker inspect`` shows those): the local cluster copies them in as files."""
    return {
        "RAY_AUTH_MODE": "token",
        "MLFLOW_TRACKING_URI": tracking_uri(),
        # The AWS tools' own variable: boto3, pyarrow (pipeline.storage) and MLflow all read it.
        "AWS_ENDPOINT_URL_S3": s3_endpoint(),
        "AWS_DEFAULT_REGION": "us-east-1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def mlflow_env() -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_S3": s3_endpoint(),
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint(),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
