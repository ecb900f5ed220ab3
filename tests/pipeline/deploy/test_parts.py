"""One description of the cluster's parts (pipeline/deploy/parts.py): the Kubernetes manifests in
k8s/ and the local container cluster agree on names, ports and the servers' commands."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.deploy import parts

K8S = Path(__file__).resolve().parents[3] / "k8s" / "base"


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def container(name: str, kind: str = "Deployment") -> dict:
    doc = next(d for d in documents(name) if d["kind"] == kind)
    return doc["spec"]["template"]["spec"]["containers"][0]


def test_the_mlflow_server_runs_the_same_command_in_both():
    k8s = container("mlflow.yaml")
    backend = "postgresql+psycopg://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@clearrec-postgres:5432/mlflow"
    assert k8s["command"] == ["mlflow"]
    assert k8s["args"] == parts.mlflow_server_args(backend, bucket="$(CLEARREC_S3_BUCKET)")
    assert [p["containerPort"] for p in k8s["ports"]] == [parts.MLFLOW_PORT]


def test_service_names_and_urls_are_the_kubernetes_ones():
    settings = next(d for d in documents("settings.yaml") if d["kind"] == "ConfigMap")["data"]
    assert settings["MLFLOW_TRACKING_URI"] == parts.tracking_uri()
    assert settings["CLEARREC_S3_BUCKET"] == parts.BUCKET
    services = {d["metadata"]["name"]: d for d in documents("mlflow.yaml") + documents("postgres.yaml")
                if d["kind"] == "Service"}
    assert {parts.MLFLOW_HOST, parts.POSTGRES_HOST} <= set(services)
    assert [p["port"] for p in services[parts.POSTGRES_HOST]["spec"]["ports"]] == [parts.POSTGRES_PORT]
    assert parts.postgres_url(parts.MLFLOW_DATABASE).endswith(f"@{parts.POSTGRES_HOST}:5432/mlflow")


def test_ray_ports_are_the_heads_in_both():
    cluster = next(d for d in documents("raycluster.yaml") if d["kind"] == "RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert ports["gcs"] == parts.RAY_GCS_PORT and ports["dashboard"] == parts.RAY_DASHBOARD_PORT
    assert f"--port={parts.RAY_GCS_PORT}" in parts.ray_head_args(num_cpus=0)
    assert f"--address={parts.RAY_HEAD_HOST}:{parts.RAY_GCS_PORT}" in parts.ray_worker_args(num_cpus=1)


def test_a_url_without_password_leaves_it_to_pgpass():
    assert parts.postgres_url("optuna") == "postgresql+psycopg://clearrec@clearrec-postgres:5432/optuna"
    assert ":pw@" in parts.postgres_url("optuna", password="pw")


def test_image_names_follow_make_images():
    assert parts.image("cpu") == "clearrec:0.1.0-cpu"
    assert parts.image("postgres", "r", "t") == "r:t-postgres"
