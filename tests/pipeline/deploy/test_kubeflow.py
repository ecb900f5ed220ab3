"""The Kubeflow pipeline: committed YAML equals a fresh compile; steps, GPUs, caching, volumes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from clear_core.errors import ConfigError

pytest.importorskip("kfp", reason="kfp is in the optional `kfp` extra")

from pipeline.deploy import kubeflow  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "k8s" / "kubeflow" / "pipeline.yaml"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    return kubeflow.compile_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")


@pytest.fixture(scope="module")
def spec(compiled):
    pipeline, platform = yaml.safe_load_all(compiled.read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_committed_pipeline_equals_a_fresh_compile(compiled):
    assert kubeflow.without_sdk_version(COMMITTED.read_text()) == kubeflow.without_sdk_version(
        compiled.read_text()
    ), "k8s/kubeflow/pipeline.yaml is stale: run `make pipeline` and commit the result"


def test_another_kfp_patch_release_still_counts_as_fresh_but_a_hand_edit_does_not(compiled, tmp_path):
    text = compiled.read_text()
    assert text.count("sdkVersion: kfp-") == 1
    other_sdk = tmp_path / "other_sdk.yaml"
    other_sdk.write_text(re.sub(r"sdkVersion: kfp-\S+", "sdkVersion: kfp-9.99.1", text))
    assert other_sdk.read_text() != text
    assert kubeflow.is_fresh_compile(other_sdk)

    hand_edited = tmp_path / "hand_edited.yaml"
    hand_edited.write_text(text.replace("clearrec-data", "someone-elses-volume", 1))
    assert not kubeflow.is_fresh_compile(hand_edited)


def test_compiling_twice_gives_identical_bytes(compiled, tmp_path):
    again = kubeflow.compile_pipeline(tmp_path / "again.yaml")
    assert again.read_bytes() == compiled.read_bytes()


def test_steps_run_extract_prepare_sweep_evaluate_in_order(spec):
    pipeline, _ = spec
    tasks = pipeline["root"]["dag"]["tasks"]
    assert set(tasks) == {"extract", "prepare", "sweep", "evaluate"}
    assert "dependentTasks" not in tasks["extract"]
    assert tasks["prepare"]["dependentTasks"] == ["extract"]
    assert tasks["sweep"]["dependentTasks"] == ["prepare"]
    assert tasks["evaluate"]["dependentTasks"] == ["sweep"]


def test_gpu_steps_request_a_gpu_and_tolerate_the_gpu_taint(spec):
    pipeline, platform = spec
    executors = pipeline["deploymentSpec"]["executors"]
    for step in ("extract", "evaluate"):
        accelerator = executors[f"exec-{step}"]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in platform[f"exec-{step}"]["tolerations"]
    for step in ("prepare", "sweep"):
        assert "accelerator" not in executors[f"exec-{step}"]["container"]["resources"]
        assert "tolerations" not in platform[f"exec-{step}"]


def test_every_step_has_cpu_and_memory_requests_and_limits(spec):
    pipeline, _ = spec
    for name, executor in pipeline["deploymentSpec"]["executors"].items():
        resources = executor["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert resources.get(key), (name, key)


def test_sweep_is_never_cached_and_waits_on_the_rayjob_status(spec):
    pipeline, _ = spec
    tasks = pipeline["root"]["dag"]["tasks"]
    assert tasks["sweep"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["evaluate"]["cachingOptions"].get("enableCache", False) is False
    container = pipeline["deploymentSpec"]["executors"]["exec-sweep"]["container"]
    assert container["command"] == ["python", "-m", "pipeline.deploy.rayjob", "submit"]
    assert "--run-id" in container["args"] and "--dataset-path" in container["args"]


def test_steps_share_the_data_volume_and_evaluate_gets_s3_and_mlflow_settings(spec):
    _, platform = spec
    for name, config in platform.items():
        assert config["pvcMount"][0]["constant"] == "clearrec-data" and config["pvcMount"][0]["mountPath"] == "/data", name
    evaluate = platform["exec-evaluate"]
    assert evaluate["secretAsEnv"][0]["secretName"] == "clearrec-s3"
    keys = {k["envVar"] for c in evaluate["configMapAsEnv"] for k in c["keyToEnv"]}
    assert "MLFLOW_TRACKING_URI" in keys


def test_training_steps_use_the_training_images_and_only_the_sweep_uses_the_launcher(spec):
    pipeline, _ = spec
    images = {name: e["container"]["image"] for name, e in pipeline["deploymentSpec"]["executors"].items()}
    settings = kubeflow.load_settings()
    assert images == {
        "exec-extract": settings["images"]["cuda"],
        "exec-prepare": settings["images"]["cpu"],
        "exec-sweep": settings["images"]["launcher"],
        "exec-evaluate": settings["images"]["cuda"],
    }


def test_image_overrides_reach_the_compiled_pipeline(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert kubeflow.main([str(out), "--cuda-image", "registry.example/clearrec:cuda-test"]) == 0
    pipeline = next(yaml.safe_load_all(out.read_text()))
    assert pipeline["deploymentSpec"]["executors"]["exec-extract"]["container"]["image"] == "registry.example/clearrec:cuda-test"
    assert "--gpu-image" in (args := pipeline["deploymentSpec"]["executors"]["exec-sweep"]["container"]["args"])
    assert args[args.index("--gpu-image") + 1] == "registry.example/clearrec:cuda-test"


def test_bad_settings_are_reported_together():
    with pytest.raises(ConfigError) as info:
        kubeflow.load_settings({"accelerator": 1, "steps": {"sweep": {"cpu": "1", "memory": "1Gi", "gpu": "one"}}})
    text = str(info.value)
    assert "accelerator" in text
    with pytest.raises(ConfigError, match="gpu"):
        kubeflow.load_settings({"steps": {"sweep": {"cpu": "1", "memory": "1Gi", "gpu": "one"}}})


def test_every_step_runs_a_command_line_its_program_accepts(spec):
    """A step's arguments are parsed by the program they are for, as the container would: a
    typo or a removed option fails here, not in a cluster after the sweep."""
    import re
    import shlex

    from pipeline.cli import build_parser
    from pipeline.deploy import rayjob

    pipeline, _ = spec
    # KFP fills its placeholders at run time: give each a value of the parameter's kind.
    samples = {"k": "5", "split": "random"}

    def filled(arg) -> str:
        return re.sub(r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}",
                      lambda m: samples.get(m.group(1), f"/{m.group(1)}"), str(arg))

    seen = set()
    for name, executor in pipeline["deploymentSpec"]["executors"].items():
        container = executor["container"]
        command, args = container["command"], [filled(a) for a in container.get("args", [])]
        if command == ["clearrec"]:
            argv = args
        elif command[:3] == ["python", "-m", "pipeline.deploy.rayjob"]:
            rayjob.build_parser().parse_args(command[3:] + args)
            seen.add(name)
            continue
        else:
            assert command[:2] == ["sh", "-c"], name
            # The script's last command, with its positional parameters as sh would fill them.
            script = command[2].rsplit("exec ", 1)[1].replace('"${1%/outcome.json}"', "FOLDER")
            argv = shlex.split(script)[1:]
        parsed = build_parser().parse_args(argv)
        assert parsed.command in ("extract", "data", "evaluate"), name
        seen.add(name)
    assert seen == {"exec-extract", "exec-prepare", "exec-sweep", "exec-evaluate"}


def test_evaluate_reads_the_folder_the_sweep_step_writes(spec):
    pipeline, _ = spec
    executors = pipeline["deploymentSpec"]["executors"]
    sweep_args = executors["exec-sweep"]["container"]["args"]
    runs_dir = sweep_args[sweep_args.index("--runs-dir") + 1]
    assert executors["exec-evaluate"]["container"]["args"] == [runs_dir]
