"""Results storage: local folders and S3 (a moto server on 127.0.0.1), with a fail-fast check that
names the address before any trial starts."""

from __future__ import annotations

import socket
import time

import pytest

from clear_core.errors import ConfigError
from pipeline.storage import check_reachable, resolve_storage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API (moto) on loopback, with one bucket ``results``."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="results")
    yield endpoint
    mp.undo()
    server.stop()


def test_relative_local_folder_becomes_absolute_and_is_created(tmp_path):
    storage = resolve_storage("runs/ray_results", base_dir=tmp_path)
    assert storage.path == str(tmp_path / "runs" / "ray_results")
    assert not storage.is_s3
    check_reachable(storage)
    assert (tmp_path / "runs" / "ray_results").is_dir()
    assert storage.join("sweep-1") == str(tmp_path / "runs" / "ray_results" / "sweep-1")


def test_unwritable_local_folder_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="storage.path: cannot create"):
        check_reachable(resolve_storage(str(blocker / "sub")))


@pytest.mark.parametrize("path", ["gs://bucket/x", "s3://", "http://host/x"])
def test_unsupported_locations_are_rejected(path):
    with pytest.raises(ConfigError, match="storage.path"):
        resolve_storage(path)


def test_endpoint_must_be_an_http_url():
    with pytest.raises(ConfigError, match="storage.endpoint_url: expected http"):
        resolve_storage("s3://bucket/prefix", "127.0.0.1:9000")


def test_unreachable_s3_endpoint_fails_fast_naming_the_address():
    port = free_port()  # nothing listens there
    storage = resolve_storage("s3://results/sweeps", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        check_reachable(storage)
    assert time.monotonic() - start < 15
    assert f"http://127.0.0.1:{port}" in str(info.value)
    assert "unreachable" in str(info.value)


def test_missing_bucket_is_named(s3_endpoint):
    with pytest.raises(ConfigError, match="bucket 'nope' does not exist at " + s3_endpoint):
        check_reachable(resolve_storage("s3://nope/sweeps", s3_endpoint))


def test_s3_location_round_trips_through_pyarrow(s3_endpoint):
    storage = resolve_storage("s3://results/sweeps/", s3_endpoint)
    check_reachable(storage)
    assert storage.is_s3 and storage.path == "results/sweeps" and storage.uri == "s3://results/sweeps"
    assert storage.join("sweep-1") == "s3://results/sweeps/sweep-1"
    fs, path = storage.filesystem_and_path("sweep-1", "marker.txt")
    with fs.open_output_stream(path) as out:
        out.write(b"x")
    assert storage.exists("sweep-1", "marker.txt")
    assert not storage.exists("sweep-2")


def test_endpoint_is_read_from_the_aws_variables_when_none_is_configured(s3_endpoint, monkeypatch):
    # The k8s dev overlay names MinIO only through AWS_ENDPOINT_URL_S3: the sweep must write
    # there, not to AWS.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    storage = resolve_storage("s3://results/from-env")
    assert storage.endpoint_url == s3_endpoint
    check_reachable(storage)
    fs, path = storage.filesystem_and_path("marker.txt")
    with fs.open_output_stream(path) as out:
        out.write(b"x")
    # The object is on the moto server named by the variable (read back with an explicit endpoint).
    assert resolve_storage("s3://results/from-env", s3_endpoint).exists("marker.txt")


def test_general_aws_endpoint_variable_is_the_fallback_and_s3_specific_one_wins(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1111")
    assert resolve_storage("s3://b/p").endpoint_url == "http://127.0.0.1:1111"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2222")
    assert resolve_storage("s3://b/p").endpoint_url == "http://127.0.0.1:2222"
    # A configured endpoint is what the sweep file says, whatever the environment.
    assert resolve_storage("s3://b/p", "http://127.0.0.1:3333").endpoint_url == "http://127.0.0.1:3333"


def test_without_any_endpoint_it_is_aws(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert resolve_storage("s3://b/p").endpoint_url is None
