"""Where Tune keeps experiment state, results and checkpoints: a local folder or S3.

``s3://bucket/prefix`` goes through :class:`pyarrow.fs.S3FileSystem` (``endpoint_url`` for
MinIO / moto / any S3-compatible server; credentials from the usual ``AWS_*`` variables). Without
a configured ``endpoint_url`` the endpoint is read as the AWS tools read it, from
``AWS_ENDPOINT_URL_S3`` then ``AWS_ENDPOINT_URL`` (pyarrow itself ignores both, and would send the
sweep to AWS); only when neither is set is it AWS S3.
:func:`check_reachable` is called before any trial starts, so an unreachable endpoint or a
missing bucket fails in seconds with the address instead of after the first checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from clear_core.errors import ConfigError

# Short timeouts for the reachability probe only; Tune's own uploads keep pyarrow's defaults.
PROBE_CONNECT_TIMEOUT_S = 3.0
PROBE_REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ResolvedStorage:
    """``path`` as Tune wants it (absolute folder, or ``bucket/prefix`` with ``filesystem``)."""

    uri: str
    path: str
    filesystem: pafs.FileSystem | None
    endpoint_url: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.filesystem is not None

    def join(self, *parts: str) -> str:
        """A child location, as a URI (``s3://...``) or an absolute local path."""
        base = self.uri.rstrip("/")
        return "/".join([base, *parts]) if self.is_s3 else str(Path(self.path, *parts))

    def exists(self, *parts: str) -> bool:
        fs, path = self.filesystem_and_path(*parts)
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def filesystem_and_path(self, *parts: str) -> tuple[pafs.FileSystem, str]:
        if self.is_s3:
            return self.filesystem, "/".join([self.path.rstrip("/"), *parts])
        return pafs.LocalFileSystem(), str(Path(self.path, *parts))


# The AWS tools' variables for a custom endpoint, service-specific first (AWS SDKs and CLI v2).
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def endpoint_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint the AWS tools would use here, or None for AWS itself."""
    environ = os.environ if environ is None else environ
    for name in ENDPOINT_ENV:
        if environ.get(name):
            return environ[name]
    return None


def s3_filesystem(endpoint_url: str | None, *, probe: bool = False) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem for ``endpoint_url``, or the endpoint from the environment."""
    endpoint_url = endpoint_url or endpoint_from_env()
    kwargs: dict = {}
    if endpoint_url:
        parsed = urlparse(endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"storage.endpoint_url: expected http(s)://host:port, got {endpoint_url!r}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        kwargs["region"] = region
    elif endpoint_url:
        # S3-compatible servers ignore the region, but pyarrow would otherwise ask AWS for it.
        kwargs["region"] = "us-east-1"
    if probe:
        kwargs.update(
            connect_timeout=PROBE_CONNECT_TIMEOUT_S,
            request_timeout=PROBE_REQUEST_TIMEOUT_S,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        )
    return pafs.S3FileSystem(**kwargs)


def resolve_storage(path: str, endpoint_url: str | None = None, *, base_dir: str | Path | None = None) -> ResolvedStorage:
    """Turn ``storage.path`` (+ ``endpoint_url``) into what Tune's RunConfig takes.

    A relative local path is taken relative to ``base_dir`` (default: the current folder),
    because Tune needs an absolute one.
    """
    if path.startswith("s3://"):
        bucket_prefix = path[len("s3://"):].strip("/")
        if not bucket_prefix:
            raise ConfigError(f"storage.path: expected s3://bucket/prefix, got {path!r}")
        endpoint_url = endpoint_url or endpoint_from_env()
        return ResolvedStorage(
            uri=f"s3://{bucket_prefix}", path=bucket_prefix,
            filesystem=s3_filesystem(endpoint_url), endpoint_url=endpoint_url,
        )
    if "://" in path:
        raise ConfigError(f"storage.path: expected a local folder or s3://bucket/prefix, got {path!r}")
    local = Path(path).expanduser()
    if not local.is_absolute():
        local = Path(base_dir or Path.cwd()) / local
    return ResolvedStorage(uri=str(local.resolve()), path=str(local.resolve()), filesystem=None)


def check_reachable(storage: ResolvedStorage) -> None:
    """Fail fast, naming the address, when results could not be written there."""
    if not storage.is_s3:
        local = Path(storage.path)
        try:
            local.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"storage.path: cannot create {local}: {exc.strerror or exc}") from None
        if not os.access(local, os.W_OK):
            raise ConfigError(f"storage.path: {local} is not writable")
        return
    bucket = storage.path.split("/", 1)[0]
    where = storage.endpoint_url or "AWS S3"
    probe = s3_filesystem(storage.endpoint_url, probe=True)
    try:
        info = probe.get_file_info(bucket)
    except OSError as exc:
        raise ConfigError(
            f"storage.path: S3 endpoint {where} is unreachable or refused access for bucket "
            f"{bucket!r} ({str(exc).splitlines()[0]})"
        ) from None
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"storage.path: bucket {bucket!r} does not exist at {where}")
