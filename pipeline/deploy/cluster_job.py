"""The Ray job's entrypoint on a cluster without shared disk (``make sweep-cluster``).

The node that runs the driver has a filesystem of its own that outlives nothing, so everything
the sweep reads or writes travels through S3:

1. the staged inputs (``--inputs s3://.../``: the sweep file, a dataset folder) are downloaded into
   a work folder;
2. the stage outputs of earlier jobs of the same sweep (``--outputs s3://.../runs``) are
   downloaded, so finished stages are reused and a half-done one continues (stages.py's reuse);
3. ``clearrec sweep`` runs there, with the arguments after ``--``; its checkpoints and Tune state
   go to the S3 storage path it is given, its runs and metrics to the MLflow server;
4. the stage outputs are uploaded to ``--outputs`` (also when the sweep failed, so the next job
   resumes), and the sweep's exit status is returned.

S3 is reached as the AWS tools do: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` and the usual
credentials chain (``~/.aws/credentials`` on the cluster's nodes).

    python -m pipeline.deploy.cluster_job --inputs s3://B/inputs/X --outputs s3://B/sweeps/N \
        [--workdir DIR] -- --config sweep.yaml [clearrec sweep options]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.storage import resolve_storage

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = "~/clearrec-job"


def _s3(uri: str) -> tuple[pafs.FileSystem, str]:
    storage = resolve_storage(uri)
    if not storage.is_s3:
        raise SystemExit(f"cluster_job: expected an s3:// URI, got {uri!r}")
    return storage.filesystem, storage.path


def download(uri: str, dest: Path) -> bool:
    """Copy the folder at ``uri`` into ``dest``; False when there is nothing there."""
    fs, path = _s3(uri)
    if fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False)) == []:
        return False
    dest.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return True


def upload(source: Path, uri: str) -> None:
    if not source.is_dir():
        return
    fs, path = _s3(uri)
    pafs.copy_files(str(source), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def run(inputs: str, outputs: str, sweep_args: Sequence[str], workdir: Path) -> int:
    inputs_dir, runs_dir = workdir / "inputs", workdir / "runs"
    shutil.rmtree(inputs_dir, ignore_errors=True)  # an earlier job's inputs are not this one's
    if not download(inputs, inputs_dir):
        log.error("cluster_job: no inputs at %s", inputs)
        return 2
    reused = download(f"{outputs.rstrip('/')}/runs", runs_dir)
    log.info("cluster_job: inputs from %s%s", inputs, f"; stage outputs from {outputs}/runs" if reused else "")
    command = [sys.executable, "-m", "pipeline", "sweep", "--runs-dir", str(runs_dir), *sweep_args]
    # Ray Jobs gives the entrypoint the cluster's address; without it the sweep joins the cluster
    # this node belongs to, never a private local Ray.
    env = {**os.environ, "RAY_ADDRESS": os.environ.get("RAY_ADDRESS") or "auto"}
    try:
        # The sweep's own output (Tune's table, the closing summary) goes straight to the job log.
        return subprocess.run(command, cwd=inputs_dir, env=env, check=False).returncode
    finally:
        upload(runs_dir, f"{outputs.rstrip('/')}/runs")
        log.info("cluster_job: stage outputs saved to %s/runs", outputs.rstrip("/"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sweep_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, sweep_args = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="python -m pipeline.deploy.cluster_job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", required=True, help="s3:// folder with the staged inputs (sweep.yaml, dataset/)")
    parser.add_argument("--outputs", required=True, help="s3:// folder of this sweep (stage outputs under runs/)")
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="local work folder on the driver's node")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = Path(os.path.expanduser(args.workdir)).absolute()
    return run(args.inputs, args.outputs, sweep_args, workdir)


if __name__ == "__main__":
    sys.exit(main())
