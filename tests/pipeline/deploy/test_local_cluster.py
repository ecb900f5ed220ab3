"""The local container cluster as `docker create` arguments: what runs where, what is published,
and that no secret travels where `docker inspect`, labels or a process list would show it.
(The cluster itself runs in test_cluster_faults.py, marker `cluster`.)"""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from pipeline.deploy import local_cluster as lc
from pipeline.deploy import parts


@pytest.fixture()
def keys(tmp_path):
    return lc.Secrets.load_or_create(tmp_path / "state")


@pytest.fixture()
def cluster(keys):
    return lc.containers(lc.ClusterSettings(workers=2), keys)


def by_name(cluster):
    return {c.name: c for c in cluster}


def test_secrets_are_generated_once_private_and_kept(tmp_path):
    first = lc.Secrets.load_or_create(tmp_path / "state")
    again = lc.Secrets.load_or_create(tmp_path / "state")
    assert first == again and len(set(first.values())) == 4
    assert oct(os.stat(tmp_path / "state" / "secrets.json").st_mode & 0o777) == "0o600"
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == "0o700"


def test_no_secret_is_in_any_create_argument(cluster, keys):
    # Environment, labels, command and entrypoint are all visible in `docker inspect`.
    for container in cluster:
        args = " ".join(container.create_args())
        for value in keys.values():
            assert value not in args, container.name


def test_secrets_reach_the_containers_as_private_files_of_their_user(cluster, keys):
    parts_by_name = by_name(cluster)
    head = parts_by_name[parts.RAY_HEAD_HOST]
    assert set(head.files) == {".aws/credentials", ".aws/config", ".pgpass", ".ray/auth_token"}
    worker = parts_by_name["clearrec-ray-worker-1"]
    assert ".pgpass" not in worker.files  # workers never talk to PostgreSQL
    tar = tarfile.open(fileobj=io.BytesIO(lc.secret_tar(head.files, 1000)))
    members = {m.name: m for m in tar.getmembers()}
    assert members[".pgpass"].mode == 0o600 and members[".pgpass"].uid == 1000
    assert members[".aws"].isdir() and members[".aws"].mode == 0o700
    assert tar.extractfile(".ray/auth_token").read().decode() == keys.ray_token
    assert keys.postgres_password in tar.extractfile(".pgpass").read().decode()
    postgres = parts_by_name[parts.POSTGRES_HOST]
    assert postgres.files == {"password": keys.postgres_password} and postgres.files_uid == lc.POSTGRES_UID


class FakeEngine:
    """`docker` as start() uses it: one existing container, its image and secrets label."""

    def __init__(self, *, state, image="sha256:new", digest=""):
        self.state, self.image, self.digest, self.calls = state, image, digest, []

    def docker(self, *args, stdin=None, check=True, timeout=120):
        self.calls.append(args[0])
        if args[:2] == ("image", "inspect"):
            return "sha256:new"
        if args[0] == "inspect":
            return f"{self.image}|{self.digest}".strip()  # as docker() returns it
        return ""


@pytest.mark.parametrize("case, recreated", [
    ("same image, same secrets", False),
    ("image rebuilt", True),
    ("created by a checkout with other secrets", True),
    ("created before containers carried the secrets label", True),
])
def test_a_container_is_created_again_only_when_its_image_or_secrets_changed(monkeypatch, cluster, case, recreated):
    """The CI failure of 2026-12-05: a fresh clone (new secrets) found the PostgreSQL container of
    an earlier checkout, restarted it with the old password and MLflow could not log in."""
    postgres = by_name(cluster)[parts.POSTGRES_HOST]
    engine = FakeEngine(state="exited", digest=postgres.secrets_digest)
    if case == "image rebuilt":
        engine.image = "sha256:old"
    elif case == "created by a checkout with other secrets":
        engine.digest = lc.Container(postgres.name, postgres.image, files={"password": "another"}).secrets_digest
    elif case == "created before containers carried the secrets label":
        engine.digest = ""  # what Go's template prints for a missing map key
    monkeypatch.setattr(lc, "docker", engine.docker)
    monkeypatch.setattr(lc, "container_state", lambda name: engine.state)
    assert lc.start(postgres) == ("started" if recreated else "restarted")
    assert ("rm" in engine.calls and "create" in engine.calls and "cp" in engine.calls) == recreated
    assert engine.calls[-1] == "start"


def test_the_secrets_label_tells_secrets_apart_without_holding_them(tmp_path, keys):
    other = lc.Secrets.load_or_create(tmp_path / "other")
    mine, theirs = (by_name(lc.containers(lc.ClusterSettings(workers=1), k)) for k in (keys, other))
    for name in mine:
        assert mine[name].secrets_digest == by_name(lc.containers(lc.ClusterSettings(workers=1), keys))[name].secrets_digest
        if mine[name].files:
            assert mine[name].secrets_digest != theirs[name].secrets_digest, name
        assert f"{lc.SECRETS_LABEL}={mine[name].secrets_digest}" in mine[name].create_args()


def test_ports_are_published_on_loopback_only(cluster):
    for container in cluster:
        args = container.create_args()
        published = [args[i + 1] for i, a in enumerate(args) if a in ("--publish", "-p", "--publish-all", "-P")]
        assert all(p.startswith("127.0.0.1:") for p in published), container.name
    assert not by_name(cluster)["clearrec-ray-worker-1"].ports
    assert by_name(cluster)[parts.MLFLOW_HOST].create_args().count("--publish") == 1


def test_only_postgres_has_a_volume_and_nothing_mounts_a_host_folder(cluster):
    for container in cluster:
        args = container.create_args()
        mounts = [args[i + 1] for i, a in enumerate(args) if a in ("--volume", "-v", "--mount")]
        if container.name == parts.POSTGRES_HOST:
            assert mounts == [f"{lc.VOLUME}:/var/lib/postgresql/data"]
        else:
            assert mounts == [], container.name


def test_trials_can_only_land_on_workers(cluster):
    nodes = by_name(cluster)
    assert "--num-cpus=0" in nodes[parts.RAY_HEAD_HOST].args
    workers = [c for c in cluster if c.name.startswith("clearrec-ray-worker-")]
    assert [w.name for w in workers] == ["clearrec-ray-worker-1", "clearrec-ray-worker-2"]
    for node in [nodes[parts.RAY_HEAD_HOST], *workers]:
        assert node.env["RAY_AUTH_MODE"] == "token"
        assert node.shm_size  # Docker's 64 MB /dev/shm is too small for the object store
        assert node.env["AWS_ENDPOINT_URL_S3"] == parts.s3_endpoint()


def test_the_job_entrypoint_names_the_study_without_its_password(keys):
    entry = lc.job_entrypoint(inputs="s3://clearrec/inputs/x", outputs="s3://clearrec/sweeps/n",
                              sweep_args=["--num-samples", "2"])
    assert "--study-storage postgresql+psycopg://clearrec@clearrec-postgres:5432/optuna" in entry
    assert "storage.path=s3://clearrec/sweeps/n/ray_results" in entry
    assert entry.endswith("--num-samples 2")
    assert not any(v in entry for v in keys.values())


def test_the_job_log_links_to_mlflow_as_this_machine_reaches_it():
    settings = lc.ClusterSettings(mlflow_port=15000)
    line = ("  http://clearrec-mlflow:5000/#/experiments/1/runs?viewStateShareKey=ab\n"
            "View run at: http://clearrec-mlflow:5000/#/experiments/1/runs/ab\n")
    assert lc.as_seen_from_this_machine(line, settings) == (
        "  http://127.0.0.1:15000/#/experiments/1/runs?viewStateShareKey=ab\n"
        "View run at: http://127.0.0.1:15000/#/experiments/1/runs/ab\n")


def test_status_lists_every_part_without_reading_secrets(monkeypatch):
    monkeypatch.setattr(lc, "container_state", lambda name: None)
    states = lc.status(lc.ClusterSettings(workers=1))
    assert list(states) == ["clearrec-postgres", "clearrec-s3", "clearrec-mlflow", "clearrec-ray-head",
                            "clearrec-ray-worker-1"]


def test_cluster_state_folder_is_git_ignored():
    from pathlib import Path

    ignore = (Path(__file__).resolve().parents[3] / ".gitignore").read_text().splitlines()
    assert "/.cluster/" in ignore
