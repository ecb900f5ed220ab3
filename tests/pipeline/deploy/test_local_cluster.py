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


def test_status_lists_every_part_without_reading_secrets(monkeypatch):
    monkeypatch.setattr(lc, "container_state", lambda name: None)
    states = lc.status(lc.ClusterSettings(workers=1))
    assert list(states) == ["clearrec-postgres", "clearrec-s3", "clearrec-mlflow", "clearrec-ray-head",
                            "clearrec-ray-worker-1"]


def test_cluster_state_folder_is_git_ignored():
    from pathlib import Path

    ignore = (Path(__file__).resolve().parents[3] / ".gitignore").read_text().splitlines()
    assert "/.cluster/" in ignore
