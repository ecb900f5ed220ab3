"""The clearrec sweep as a Kubeflow Pipelines (v2) pipeline of container components.

    extract (GPU) -> prepare (filter and split) -> sweep (a RayJob on KubeRay) -> evaluate (GPU)

Each step runs the same ``clearrec`` CLI as a laptop does, in the project's images. Steps hand
data to each other through the ReadWriteMany volume ``clearrec-data`` mounted at ``/data`` (the
Ray pods mount it too): ``/data/runs/<pipeline job id>/{features,dataset}``. The sweep step does
not train: ``python -m pipeline.deploy.rayjob submit`` creates a RayJob through the Kubernetes API and
waits on its ``status.jobStatus``, so the step fails exactly when the Ray job fails. Its results
go to ``<results_uri>/<pipeline job id>`` on S3, where a retried RayJob resumes.

Caching is off for the sweep and evaluate steps: their real inputs (the RayJob's results, the
MLflow runs) are not KFP artifacts, so a cache hit would replay a stale answer.

Volumes, Secrets and tolerations are written as the Kubernetes platform config that
``kfp-kubernetes`` would produce (``task.platform_config``), because that package is not
installable next to ``kfp`` here; the format is the one KFP's backend reads.

``python -m pipeline.deploy.kubeflow [OUT]`` (``make pipeline``) compiles to ``k8s/kubeflow/pipeline.yaml``;
a test fails when the committed file differs from a fresh compile (in anything but the compiling
kfp's version, which a fresh machine may resolve to another patch release). Images and step
resources come from ``configs/kubeflow.yaml``.
"""

# No `from __future__ import annotations`: kfp reads the component signatures' real types.
import argparse
import copy
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from clear_core.config import config_dir, load_yaml, validate_fields

PIPELINE_NAME = "clearrec-sweep"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "k8s" / "kubeflow" / "pipeline.yaml"
SETTINGS_SCHEMA = {
    "images": dict,
    "accelerator": str,
    "data_volume": str,
    "data_mount": str,
    "settings_config_map": str,
    "s3_secret": str,
    "steps": dict,
}
STEP_SCHEMA = {"cpu": str, "memory": str, "gpu": int}
STEPS = ("extract", "prepare", "sweep", "evaluate")
IMAGES = ("cpu", "cuda", "launcher")
SETTINGS_KEYS = ("MLFLOW_TRACKING_URI", "CLEARREC_S3_BUCKET")
# Set only where S3 is not AWS (the dev overlay's MinIO), hence optional.
ENDPOINT_KEYS = ("AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL")
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def load_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """configs/kubeflow.yaml with ``overrides`` (``{"images": {"cpu": ...}}``) merged in, checked."""
    path = config_dir() / "kubeflow.yaml"
    settings = load_yaml(path)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    settings = validate_fields(settings, SETTINGS_SCHEMA, source=str(path))
    validate_fields(settings["images"], {k: str for k in IMAGES}, source=f"{path}: images")
    validate_fields(settings["steps"], {k: dict for k in STEPS}, source=f"{path}: steps")
    for step in STEPS:
        validate_fields(settings["steps"][step], STEP_SCHEMA, source=f"{path}: steps.{step}")
    return settings


def _constant(value: str) -> dict[str, Any]:
    return {"runtimeValue": {"constant": value}}


def platform_config(settings: dict[str, Any], *, gpu: bool, secrets: bool) -> dict[str, Any]:
    """The ``kubernetes`` platform config of one task (kfp-kubernetes' JSON form)."""
    config: dict[str, Any] = {
        "pvcMount": [{
            "constant": settings["data_volume"],
            "pvcNameParameter": _constant(settings["data_volume"]),
            "mountPath": settings["data_mount"],
        }],
    }
    if secrets:
        config["secretAsEnv"] = [{
            "secretName": settings["s3_secret"],
            "secretNameParameter": _constant(settings["s3_secret"]),
            "keyToEnv": [{"secretKey": k, "envVar": k} for k in S3_KEYS],
        }]
        config["configMapAsEnv"] = [
            {
                "configMapName": settings["settings_config_map"],
                "configMapNameParameter": _constant(settings["settings_config_map"]),
                "keyToEnv": [{"configMapKey": k, "envVar": k} for k in keys],
                **({"optional": True} if optional else {}),
            }
            for keys, optional in ((SETTINGS_KEYS, False), (ENDPOINT_KEYS, True))
        ]
    if gpu:
        config["tolerations"] = [{"key": settings["accelerator"], "operator": "Exists", "effect": "NoSchedule"}]
    return config


def build_pipeline(settings: dict[str, Any]):
    """The pipeline function for ``settings`` (images are compile-time constants in KFP v2)."""
    from kfp import dsl

    images = settings["images"]
    mount = settings["data_mount"]

    @dsl.container_component
    def extract(raw_dir: str, run_id: str):
        """Text and image features of the raw catalogue (MiniLM, EfficientNet-Lite0) on a GPU."""
        return dsl.ContainerSpec(
            image=images["cuda"],
            command=["clearrec"],
            args=["extract", f"{raw_dir}/meta.json.gz", "--images", f"{raw_dir}/images",
                  "--out", f"{mount}/runs/{run_id}/features"],
        )

    @dsl.container_component
    def prepare(raw_dir: str, run_id: str, k: int, split: str):
        """Filter and split: k-core on the reviews, features aligned to the new item ids."""
        return dsl.ContainerSpec(
            image=images["cpu"],
            command=["clearrec"],
            args=["data", "prepare", f"{raw_dir}/reviews.json.gz", f"{mount}/runs/{run_id}/dataset",
                  "--features", f"{mount}/runs/{run_id}/features", "--k", k, "--split", split],
        )

    @dsl.container_component
    def sweep(sweep_config: str, results_uri: str, run_id: str):
        """Create the sweep RayJob and wait until its status.jobStatus is SUCCEEDED or FAILED."""
        return dsl.ContainerSpec(
            image=images["launcher"],
            command=["python", "-m", "pipeline.deploy.rayjob", "submit"],
            args=["--cpu-image", images["cpu"], "--gpu-image", images["cuda"],
                  "--config", sweep_config, "--dataset-path", f"{mount}/runs/{run_id}/dataset",
                  "--results", f"{results_uri}/{run_id}", "--run-id", run_id,
                  "--runs-dir", f"{mount}/runs/{run_id}/sweep-runs"],
        )

    @dsl.container_component
    def evaluate(run_id: str):
        """Score the finished sweep's best checkpoint once more on a GPU (valid and test, full
        ranking), as an MLflow evaluate run: the sweep's outputs lie on the data volume."""
        return dsl.ContainerSpec(
            image=images["cuda"],
            command=["sh", "-c",
                     # The sweep stage's folder is named by a key of its inputs: take the one there.
                     'set -- "$0"/sweep/*/outcome.json; exec clearrec evaluate "${1%/outcome.json}"'],
            args=[f"{mount}/runs/{run_id}/sweep-runs"],
        )

    def resources(task, step: str):
        spec = settings["steps"][step]
        task.set_cpu_request(spec["cpu"]).set_cpu_limit(spec["cpu"])
        task.set_memory_request(spec["memory"]).set_memory_limit(spec["memory"])
        if spec["gpu"]:
            task.set_accelerator_type(settings["accelerator"]).set_accelerator_limit(spec["gpu"])
        task.set_display_name(step)
        task.platform_config["kubernetes"] = platform_config(
            settings, gpu=bool(spec["gpu"]), secrets=step == "evaluate"
        )
        return task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="clearrec: extract features -> filter and split -> Tune+Optuna sweep on KubeRay -> test evaluation",
    )
    def clearrec_sweep(
        raw_dir: str = f"{mount}/raw/synthetic",
        sweep_config: str = "/app/configs/sweeps/default.yaml",
        results_uri: str = "s3://clearrec/sweeps",
        k: int = 5,
        split: str = "random",
    ):
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        t_extract = resources(extract(raw_dir=raw_dir, run_id=run_id), "extract")
        t_prepare = resources(prepare(raw_dir=raw_dir, run_id=run_id, k=k, split=split), "prepare")
        t_prepare.after(t_extract)
        t_sweep = resources(sweep(sweep_config=sweep_config, results_uri=results_uri, run_id=run_id), "sweep")
        t_sweep.after(t_prepare).set_caching_options(False)
        t_eval = resources(evaluate(run_id=run_id), "evaluate")
        t_eval.after(t_sweep).set_caching_options(False)

    return clearrec_sweep


def compile_pipeline(out: str | Path = DEFAULT_OUTPUT, settings: dict[str, Any] | None = None) -> Path:
    """Compile to ``out`` atomically. The output depends only on the settings and kfp's version."""
    from kfp import compiler

    settings = copy.deepcopy(settings) if settings else load_settings()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".yaml")
    os.close(fd)
    try:
        compiler.Compiler().compile(build_pipeline(settings), package_path=tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


# The one line of a compiled pipeline that names the compiling SDK, not the pipeline.
_SDK_VERSION_LINE = re.compile(r"^sdkVersion: kfp-\S+$", re.MULTILINE)


def without_sdk_version(compiled_text: str) -> str:
    """A compiled pipeline's text with the kfp version that compiled it blanked out.

    pyproject.toml admits a range of kfp releases (constraints.txt pins one for the project's
    venv and images, but an install without it may resolve another patch release); the release
    changes ``sdkVersion`` and nothing the pipeline does. Every other byte still has to match,
    so a hand edit or a stale file is caught."""
    return _SDK_VERSION_LINE.sub("sdkVersion: kfp", compiled_text)


def is_fresh_compile(path: str | Path) -> bool:
    """Whether the compiled pipeline at ``path`` equals a fresh compile of this module."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = compile_pipeline(Path(tmp) / "pipeline.yaml")
        return without_sdk_version(fresh.read_text()) == without_sdk_version(Path(path).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deploy.kubeflow", description="compile the clearrec Kubeflow pipeline")
    parser.add_argument("out", nargs="?", default=str(DEFAULT_OUTPUT))
    for image in IMAGES:
        parser.add_argument(f"--{image}-image", help=f"override images.{image} of configs/kubeflow.yaml")
    args = parser.parse_args(argv)
    images = {i: getattr(args, f"{i}_image") for i in IMAGES if getattr(args, f"{i}_image")}
    path = compile_pipeline(args.out, load_settings({"images": images} if images else None))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
