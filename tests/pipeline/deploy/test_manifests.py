"""The manifests under k8s/ are valid, safe to run, and each validator rejects a misspelled field."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pins_support import constraint_pins

from clear_core.errors import ConfigError
from pipeline.deploy import manifests
from pipeline.deploy.manifests import (
    CrdSchemas,
    render_kustomization,
    strict_schema,
    validate_core,
    validate_pod_templates,
    validate_tree,
)

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
OVERLAYS = [K8S / "base", K8S / "overlays" / "dev", K8S / "overlays" / "prod"]


def schema_dir() -> Path:
    env = os.environ.get("CLEARREC_KUBERAY_SCHEMAS")
    if env:
        return Path(env)
    return Path(os.environ.get("CLEARREC_SHARED", REPO.parent / "shared")) / "schemas" / "kuberay"


needs_crds = pytest.mark.skipif(
    not CrdSchemas.available(schema_dir()),
    reason=f"KubeRay CRD schemas not found at {schema_dir()} (set CLEARREC_KUBERAY_SCHEMAS)",
)


@pytest.fixture(scope="module")
def crds() -> CrdSchemas:
    if not CrdSchemas.available(schema_dir()):
        pytest.skip(f"KubeRay CRD schemas not found at {schema_dir()}")
    return CrdSchemas(schema_dir())


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {d.relative_to(K8S).as_posix(): [o for _, o in render_kustomization(d)] for d in OVERLAYS}


def objects_of(rendered, kind):
    return [o for objs in rendered.values() for o in objs if o["kind"] == kind]


def containers_of(obj):
    """(pod spec, container) pairs of every pod the object creates."""
    specs = []
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        specs.append(obj["spec"]["template"]["spec"])
    specs += [t["spec"] for _, t in manifests.pod_templates(obj)]
    return [(s, c) for s in specs for c in s["containers"]]


# --------------------------------------------------------------------------- the real manifests


@needs_crds
def test_every_manifest_under_k8s_is_valid():
    report = validate_tree(K8S, schema_dir=schema_dir())
    assert report.problems == []
    # base + two overlays, each with the core objects, the RayCluster and the RayJob
    assert sum("RayJob/clearrec-sweep" in line for line in report.checked) == 3
    assert sum("RayCluster/clearrec-ray" in line for line in report.checked) == 3


def test_core_objects_pass_strict_validation_without_the_crds(rendered):
    for name, objects in rendered.items():
        for obj in objects:
            if obj["kind"] in manifests.CRD_FILES:
                assert validate_pod_templates(obj) == [], (name, obj["metadata"]["name"])
            else:
                assert validate_core(obj) == [], (name, obj["kind"], obj["metadata"]["name"])


def test_overlays_set_namespace_and_real_images(rendered):
    for overlay, namespace in (("overlays/dev", "clearrec-dev"), ("overlays/prod", "clearrec")):
        for obj in rendered[overlay]:
            assert obj["metadata"]["namespace"] == namespace
            for _, container in containers_of(obj):
                assert container["image"] not in ("clearrec-cpu", "clearrec-cuda")
                assert ":" in container["image"]


def test_every_container_has_requests_limits_and_a_locked_down_security_context(rendered):
    count = 0
    for objects in rendered.values():
        for obj in objects:
            for pod, container in containers_of(obj):
                count += 1
                where = (obj["kind"], obj["metadata"]["name"], container["name"])
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), where
                assert {"cpu", "memory"} <= set(resources["limits"]), where
                sc = container["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert pod["securityContext"]["runAsNonRoot"] is True, where
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts, where  # writable scratch on a read-only root
    assert count >= 3 * 8  # mlflow, postgres, seed job, head, worker (x2 with the RayJob), submitter


def test_ray_clusters_have_token_auth_and_gpu_workers_that_scale_to_zero(rendered):
    clusters = [o["spec"] for o in objects_of(rendered, "RayCluster")]
    clusters += [o["spec"]["rayClusterSpec"] for o in objects_of(rendered, "RayJob")]
    assert len(clusters) == 6
    for spec in clusters:
        assert spec["authOptions"]["mode"] == "token"
        assert spec["enableInTreeAutoscaling"] is True
        (gpu,) = spec["workerGroupSpecs"]
        assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0 and gpu["maxReplicas"] >= 1
        pod = gpu["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_rayjob_retries_the_sweep_with_s3_credentials_from_a_secret(rendered):
    for job in objects_of(rendered, "RayJob"):
        spec = job["spec"]
        assert spec["backoffLimit"] >= 1
        assert spec["entrypoint"].startswith("clearrec sweep --config ")
        for _, container in containers_of(job):
            if container["name"] == "ray-job-submitter":
                continue
            refs = [e.get("secretRef", {}).get("name") for e in container.get("envFrom", [])]
            assert "clearrec-s3" in refs


def test_mlflow_is_cluster_internal_on_postgres_with_s3_artifacts(rendered):
    for name, objects in rendered.items():
        by_key = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        service = by_key[("Service", "clearrec-mlflow")]
        assert service["spec"]["type"] == "ClusterIP", name
        args = by_key[("Deployment", "clearrec-mlflow")]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--host") + 1] == "0.0.0.0"
        assert args[args.index("--backend-store-uri") + 1].startswith("postgresql")
        assert args[args.index("--artifacts-destination") + 1].startswith("s3://")
        assert args[args.index("--allowed-hosts") + 1]
        postgres = by_key[("StatefulSet", "clearrec-postgres")]
        assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
        assert ("Service", "clearrec-postgres") in by_key


def test_no_secret_values_are_committed():
    for path in K8S.rglob("*.yaml"):
        for doc in manifests.load_documents(path):
            assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), path


def test_standing_raycluster_and_sweep_rayjob_describe_the_same_cluster():
    cluster = manifests.load_documents(K8S / "base" / "raycluster.yaml")[0]
    job = manifests.load_documents(K8S / "base" / "rayjob-sweep.yaml")[0]
    assert cluster["spec"] == job["spec"]["rayClusterSpec"]


def test_ray_version_matches_the_ray_pinned_in_the_images():
    pins = constraint_pins()
    cluster = manifests.load_documents(K8S / "base" / "raycluster.yaml")[0]
    assert cluster["spec"]["rayVersion"] == pins["ray"]


# --------------------------------------------------------------------------- each validator rejects a misspelling


def _deployment():
    return copy.deepcopy(next(o for _, o in render_kustomization(K8S / "base") if o["kind"] == "Deployment"))


def _rayjob():
    return copy.deepcopy(manifests.load_documents(K8S / "base" / "rayjob-sweep.yaml")[0])


def test_core_validator_rejects_a_misspelled_field():
    deployment = _deployment()
    assert validate_core(deployment) == []
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicyy"] = container.pop("imagePullPolicy", "IfNotPresent")
    errors = validate_core(deployment)
    assert len(errors) == 1 and "imagePullPolicyy" in errors[0]


def test_core_validator_fails_on_a_kind_it_has_no_schema_for():
    deployment = _deployment()
    deployment["kind"] = "Deploymnt"
    errors = validate_core(deployment)
    assert errors and "Couldn't find schema" in errors[0]


def test_crd_validator_rejects_a_misspelled_field(crds):
    job = _rayjob()
    assert crds.errors(job) == []
    job["spec"]["backofLimit"] = job["spec"].pop("backoffLimit")
    errors = crds.errors(job)
    assert any("backofLimit" in e for e in errors), errors


def test_crd_validator_rejects_a_misspelled_field_deep_in_a_worker_group(crds):
    job = _rayjob()
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["maxReplica"] = group.pop("maxReplicas")
    errors = crds.errors(job)
    assert any("workerGroupSpecs.0" in e and "maxReplica" in e for e in errors), errors


def test_crd_validator_keeps_open_maps_open(crds):
    job = _rayjob()
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["any-ray-flag"] = "1"
    assert crds.errors(job) == []


def test_pod_template_validator_rejects_a_misspelled_field():
    job = _rayjob()
    assert validate_pod_templates(job) == []
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["securityContext"]["runAsNonRot"] = True
    errors = validate_pod_templates(job)
    assert len(errors) == 1
    assert "headGroupSpec" in errors[0] and "runAsNonRot" in errors[0]


def test_pod_template_validator_checks_the_metadata_the_crd_leaves_open():
    job = _rayjob()
    job["metadata"]["labelz"] = {"a": "b"}
    errors = validate_pod_templates(job)
    assert len(errors) == 1 and "labelz" in errors[0]


def test_strict_schema_closes_objects_with_properties_only():
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"b": {}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    strict = strict_schema(schema)
    assert strict["additionalProperties"] is False
    assert strict["properties"]["spec"]["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["free"]
    assert strict["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema  # the input is not modified


# --------------------------------------------------------------------------- consistency rules (open maps)


@pytest.fixture
def base_objects():
    return [copy.deepcopy(o) for _, o in render_kustomization(K8S / "base")]


def _find(objects, kind, name=None):
    return next(o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def test_every_base_object_passes_the_consistency_rules(base_objects):
    for obj in base_objects:
        assert manifests.policy_errors(obj, base_objects) == [], (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda objs: _find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(
            {"cpux": _find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].pop("cpu")}),
         "cpux: unknown resource name"),
        (lambda objs: _find(objs, "RayJob")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"].update(
            {"nvidia.com/gpux": 1}), "nvidia.com/gpux: unknown resource name"),
        (lambda objs: _find(objs, "Deployment")["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/nam": "x"}),
         "not in spec.template.metadata.labels"),
        (lambda objs: _find(objs, "Service", "clearrec-mlflow")["spec"]["selector"].update({"app.kubernetes.io/name": "clearrec-mlflw"}),
         "matches no pod template"),
        (lambda objs: _find(objs, "RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"dashbord-host": "0.0.0.0"}),
         "dashbord-host: not a `ray start` option"),
        (lambda objs: _find(objs, "ConfigMap", "clearrec-sweep-config")["data"].update({"sweep.yaml": "num_sample: 3\n"}),
         "num_sample"),
        (lambda objs: _find(objs, "ConfigMap", "clearrec-sweep-config")["data"].update(
            {"swep.yaml": _find(objs, "ConfigMap", "clearrec-sweep-config")["data"].pop("sweep.yaml")}),
         "has no key 'sweep.yaml'"),
        (lambda objs: _find(objs, "ConfigMap", "clearrec-settings")["data"].update(
            {"MLFLOW_TRACKING_UR": _find(objs, "ConfigMap", "clearrec-settings")["data"].pop("MLFLOW_TRACKING_URI")}),
         "missing MLFLOW_TRACKING_URI"),
        (lambda objs: _find(objs, "ConfigMap", "clearrec-settings")["data"].update(
            {"CLEARREC_S3_BUCKE": _find(objs, "ConfigMap", "clearrec-settings")["data"].pop("CLEARREC_S3_BUCKET")}),
         "$(CLEARREC_S3_BUCKET) is not defined"),
        (lambda objs: _find(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"][2]["valueFrom"]["secretKeyRef"].update(
            {"key": "POSTGRES_USR"}), "no key 'POSTGRES_USR'"),
        (lambda objs: _find(objs, "PersistentVolumeClaim")["metadata"]["labels"].update(
            {"app.kubernetes.io/part-f": _find(objs, "PersistentVolumeClaim")["metadata"]["labels"].pop("app.kubernetes.io/part-of")}),
         "expected app.kubernetes.io/part-of"),
    ],
    ids=["resource-name", "gpu-name", "selector", "service-selector", "ray-start-param", "sweep-file",
         "entrypoint-config-key", "settings-key", "undefined-var", "secret-key", "part-of-label"],
)
def test_consistency_rules_catch_misspellings_in_open_maps(base_objects, mutate, expected):
    mutate(base_objects)
    errors = [e for obj in base_objects for e in manifests.policy_errors(obj, base_objects)]
    assert any(expected in e for e in errors), errors


# --------------------------------------------------------------------------- the kustomize subset


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: cannot compare with kubectl kustomize")
@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: p.name)
def test_python_rendering_equals_kubectl_kustomize(directory):
    out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = [d for d in yaml.safe_load_all(out.stdout) if d]

    def key(o):
        return (o["kind"], o["metadata"]["name"])

    ours = sorted((o for _, o in render_kustomization(directory)), key=key)
    assert ours == sorted(expected, key=key)


def _tree(tmp_path) -> Path:
    shutil.copytree(K8S, tmp_path / "k8s")
    return tmp_path / "k8s"


def test_renderer_refuses_kustomize_features_it_does_not_implement(tmp_path):
    k8s = _tree(tmp_path)
    kfile = k8s / "overlays" / "dev" / "kustomization.yaml"
    kfile.write_text(kfile.read_text() + "commonLabels:\n  team: recs\n")
    with pytest.raises(ConfigError, match="commonLabels"):
        render_kustomization(kfile.parent)


def test_renderer_rejects_a_misspelled_image_rule(tmp_path):
    k8s = _tree(tmp_path)
    kfile = k8s / "overlays" / "prod" / "kustomization.yaml"
    kfile.write_text(kfile.read_text().replace("newTag: 0.1.0-cuda", "newTg: 0.1.0-cuda"))
    with pytest.raises(ConfigError, match="newTg"):
        render_kustomization(kfile.parent)


def test_renderer_rejects_a_patch_whose_path_does_not_exist(tmp_path):
    k8s = _tree(tmp_path)
    patch = k8s / "overlays" / "dev" / "raycluster-patch.yaml"
    patch.write_text(patch.read_text().replace("maxReplicas", "maxReplica"))
    with pytest.raises(ConfigError, match="maxReplica"):
        render_kustomization(patch.parent)


@needs_crds
def test_cli_fails_after_one_field_is_misspelled_in_any_file(tmp_path, capsys):
    k8s = _tree(tmp_path)
    assert manifests.main([str(k8s), "--schemas", str(schema_dir()), "-q"]) == 0
    service = k8s / "base" / "postgres.yaml"
    service.write_text(service.read_text().replace("targetPort: postgres", "targetPrt: postgres"))
    capsys.readouterr()
    assert manifests.main([str(k8s), "--schemas", str(schema_dir()), "-q"]) == 1
    err = capsys.readouterr().err
    assert "targetPrt" in err and "overlays/prod" in err


@needs_crds
def test_cli_fails_when_the_compiled_pipeline_is_edited_by_hand(tmp_path, capsys):
    pytest.importorskip("kfp", reason="kfp is in the optional `kfp` extra")
    k8s = _tree(tmp_path)
    pipeline = k8s / "kubeflow" / "pipeline.yaml"
    pipeline.write_text(pipeline.read_text().replace("cachingOptions: {}", "cachingOption: {}", 1))
    assert manifests.main([str(k8s), "--schemas", str(schema_dir()), "-q"]) == 1
    assert "fresh compile" in capsys.readouterr().err


def test_cli_fails_when_the_crd_schemas_are_missing(tmp_path, capsys):
    assert manifests.main([str(K8S / "base"), "--schemas", str(tmp_path), "-q"]) == 1
    assert "schema files" in capsys.readouterr().err


@pytest.mark.slow
@needs_crds
def test_every_single_key_misspelling_under_k8s_fails_validation(tmp_path):
    """Exhaustive form of the check above: rename each mapping key of each manifest, one at a
    time, and expect the tree to fail (904 keys when written; about 5 minutes on 2 cores)."""
    import re

    k8s = _tree(tmp_path)
    key = re.compile(r"^(\s*(?:- )?)([A-Za-z][A-Za-z0-9_.\-/]*):(\s|$)")
    missed, tried = [], 0
    for path in sorted(p for p in k8s.rglob("*.yaml") if "kubeflow" not in p.parts):
        original = path.read_text()
        lines = original.splitlines(keepends=True)
        for i, line in enumerate(lines):
            m = key.match(line)
            if not m:
                continue
            tried += 1
            mutated = lines[:i] + [m.group(1) + m.group(2) + "x:" + line[m.end(2) + 1:]] + lines[i + 1:]
            path.write_text("".join(mutated))
            if validate_tree(k8s, schema_dir=schema_dir()).ok:
                missed.append(f"{path.relative_to(k8s)}:{i + 1}: {line.strip()}")
        path.write_text(original)
    assert tried > 500
    assert missed == []
