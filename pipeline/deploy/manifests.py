"""Offline validation of the Kubernetes manifests under ``k8s/``.

``python -m pipeline.deploy.manifests k8s/`` renders every kustomization (base and overlays) and checks
each resulting object, then checks every other manifest file on its own:

* core kinds (Deployment, Service, ...): ``kubernetes-validate`` in strict mode, so an unknown
  (misspelled) field is an error. A kind it has no schema for is an error too, never a warning;
* KubeRay ``RayJob`` / ``RayCluster``: the CRD's ``openAPIV3Schema`` from the KubeRay CRD files
  (``$CLEARREC_KUBERAY_SCHEMAS``, else ``$CLEARREC_SHARED/schemas/kuberay``, default
  ``<repo>/../shared/schemas/kuberay``), made strict by
  adding ``additionalProperties: false`` to every object schema that lists its properties and
  does not say ``x-kubernetes-preserve-unknown-fields: true``;
* inside those, every pod template (head, worker groups, RayJob submitter) as a core
  ``v1/PodTemplate`` and the object's own ``metadata`` as core ObjectMeta, both strict: the CRD
  leaves ``metadata`` open;
* a compiled Kubeflow pipeline (``k8s/kubeflow/pipeline.yaml``): equal to a fresh compile, but for
  the line naming the kfp version that compiled it.

Kustomize is rendered here, in Python, for the subset this repository uses (``resources``,
``namespace``, ``images``, ``patches`` holding JSON 6902 operations with a ``target``); any other
kustomization field is an error rather than a silently different rendering. A test compares the
result with ``kubectl kustomize`` where kubectl exists.

Beyond the schemas, consistency rules catch misspellings that schemas cannot see because they
hide in open maps:

* labels: every object has ``app.kubernetes.io/part-of: clearrec``; pod templates, what makes
  pods, and Services have ``app.kubernetes.io/name``;
* a workload's selector matches its pod labels; a Service's selector matches some pod template
  of the same rendering;
* every container requests and limits cpu and memory and names only known resource kinds;
* ConfigMap and Secret references resolve (Secrets against the keys the README asks for), and
  every ``$(VAR)`` in a command or its args is defined;
* ``rayStartParams`` keys are ``ray start`` options;
* a ConfigMap key ``sweep.yaml`` is a valid clearrec sweep file, and the RayJob's ``--config``
  file is a key of the ConfigMap mounted there.

Not checked: CEL rules (``x-kubernetes-validations``), Secrets' existence (they are created by
hand), and the admission policies of a real cluster.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clear_core.errors import ConfigError, DataError

# libyaml's loader when present: the KubeRay CRD files are 40k lines.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
KUBERNETES_VERSION = "1.34"
SCHEMAS_ENV = "CLEARREC_KUBERAY_SCHEMAS"
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
# Kinds without a namespace: the namespace transformer leaves them alone.
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass",
}


@dataclass
class Problem:
    source: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"ERROR {self.source}: {self.resource}: {self.message}"


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def default_schema_dir() -> Path:
    env = os.environ.get(SCHEMAS_ENV)
    if env:
        return Path(env)
    shared = os.environ.get("CLEARREC_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[3] / "shared"
    return base / "schemas" / "kuberay"


# --------------------------------------------------------------------------- YAML input


def load_documents(path: str | Path) -> list[Any]:
    """Every non-empty YAML document of a file; a syntax error is a DataError with its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        return [d for d in yaml.load_all(text, Loader=_SafeLoader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise DataError(str(path), f"not valid YAML: {exc.problem}", line=line) from None


def resource_name(obj: Any) -> str:
    if not isinstance(obj, dict):
        return "<not a mapping>"
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def is_kfp_pipeline_spec(doc: Any) -> bool:
    """A compiled Kubeflow pipeline (IR YAML) is not a Kubernetes object; tests/pipeline/deploy/test_kubeflow.py checks it."""
    return isinstance(doc, dict) and ("pipelineInfo" in doc or "platforms" in doc) and "kind" not in doc


# --------------------------------------------------------------------------- kustomize subset


def _json_pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ConfigError(f"patch path {path!r}: expected a JSON pointer starting with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _apply_op(doc: Any, op: dict[str, Any], where: str) -> None:
    if not isinstance(op, dict):
        raise ConfigError(f"{where}: expected an operation mapping, got {op!r}")
    kind = op.get("op")
    if kind not in ("add", "replace", "remove"):
        raise ConfigError(f"{where}: op {kind!r} not supported (add, replace, remove)")
    allowed = {"op", "path"} if kind == "remove" else {"op", "path", "value"}
    unknown = sorted(set(op) - allowed)
    missing = sorted(allowed - set(op))
    if unknown or missing:
        raise ConfigError(
            f"{where}: {kind} operation on {op.get('path')!r}: "
            + "; ".join([f"unknown field {u!r}" for u in unknown] + [f"missing {m!r}" for m in missing])
        )
    parts = _json_pointer(op.get("path", ""))
    parent = doc
    for i, part in enumerate(parts[:-1]):
        try:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ConfigError(f"{where}: path {op['path']!r} does not exist (at {'/'.join(parts[:i + 1])})") from None
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if (last == "-" and kind == "add") else int(last)
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif index >= len(parent):
            raise ConfigError(f"{where}: path {op['path']!r} does not exist")
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        else:
            del parent[index]
        return
    if not isinstance(parent, dict):
        raise ConfigError(f"{where}: path {op['path']!r} does not lead to an object")
    if kind in ("replace", "remove") and last not in parent:
        raise ConfigError(f"{where}: path {op['path']!r} does not exist")
    if kind == "remove":
        del parent[last]
    else:
        parent[last] = copy.deepcopy(op["value"])


def _image_name(image: str) -> str:
    base = image.split("@", 1)[0]
    if ":" in base.rsplit("/", 1)[-1]:
        base = base.rsplit(":", 1)[0]
    return base


def _set_images(node: Any, rules: list[dict[str, Any]]) -> None:
    if isinstance(node, list):
        for item in node:
            _set_images(item, rules)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for container in value:
                if isinstance(container, dict) and isinstance(container.get("image"), str):
                    container["image"] = _new_image(container["image"], rules)
        _set_images(value, rules)


def _new_image(image: str, rules: list[dict[str, Any]]) -> str:
    name = _image_name(image)
    for rule in rules:
        if rule.get("name") != name:
            continue
        new = rule.get("newName", name)
        if "digest" in rule:
            return f"{new}@{rule['digest']}"
        tag = rule.get("newTag")
        if tag is None:
            rest = image[len(name):]
            return new + rest
        return f"{new}:{tag}"
    return image


def _matches(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    checks = {"kind": obj.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace")}
    for key, want in target.items():
        if key == "version" or key == "group":
            api = obj.get("apiVersion", "")
            group, _, version = api.rpartition("/")
            if want != (group if key == "group" else version):
                return False
        elif key in checks:
            if checks[key] != want:
                return False
        else:
            raise ConfigError(f"patch target field {key!r} not supported (kind, name, namespace, group, version)")
    return True


def render_kustomization(directory: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """The objects ``kubectl kustomize DIR`` would produce (for the supported subset), each with
    the file it came from. Also returns nothing half-done: any unsupported field raises."""
    directory = Path(directory)
    kfile = next((directory / n for n in KUSTOMIZATION_NAMES if (directory / n).exists()), None)
    if kfile is None:
        raise ConfigError(f"{directory}: no kustomization.yaml")
    docs = load_documents(kfile)
    spec = docs[0] if docs else {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{kfile}: expected a mapping")
    unknown = sorted(set(spec) - KUSTOMIZE_FIELDS)
    if unknown:
        raise ConfigError(
            [f"{kfile}: field {u!r} is not supported by this renderer (supported: "
             f"{', '.join(sorted(KUSTOMIZE_FIELDS))}); validate with kubectl kustomize" for u in unknown]
        )
    objects: list[tuple[str, dict[str, Any]]] = []
    for entry in spec.get("resources") or []:
        path = directory / entry
        if path.is_dir():
            objects.extend(render_kustomization(path))
        elif path.is_file():
            for doc in load_documents(path):
                if not isinstance(doc, dict):
                    raise DataError(str(path), "expected a Kubernetes object (a mapping)")
                objects.append((str(path), doc))
        else:
            raise ConfigError(f"{kfile}: resource {entry!r} not found")
    for i, patch in enumerate(spec.get("patches") or []):
        where = f"{kfile}: patches[{i}]"
        if not isinstance(patch, dict) or "target" not in patch:
            raise ConfigError(f"{where}: expected a mapping with a target (JSON 6902 patch)")
        extra = sorted(set(patch) - {"path", "patch", "target"})
        if extra:
            raise ConfigError(f"{where}: unsupported field(s) {', '.join(extra)}")
        if "path" in patch:
            where = f"{directory / patch['path']}"
            ops = load_documents(directory / patch["path"])
            ops = ops[0] if ops else []
        else:
            ops = yaml.safe_load(patch.get("patch") or "[]")
        if not isinstance(ops, list):
            raise ConfigError(f"{where}: expected a list of JSON 6902 operations (strategic-merge patches are not supported here)")
        hits = [obj for _, obj in objects if _matches(obj, patch["target"])]
        if not hits:
            raise ConfigError(f"{where}: target {patch['target']} matches no resource")
        for obj in hits:
            for op in ops:
                _apply_op(obj, op, where)
    namespace = spec.get("namespace")
    if namespace:
        for _, obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    if spec.get("images"):
        for i, rule in enumerate(spec["images"]):
            bad = sorted(set(rule) - {"name", "newName", "newTag", "digest"}) if isinstance(rule, dict) else ["<not a mapping>"]
            if bad or "name" not in rule:
                raise ConfigError(f"{kfile}: images[{i}]: unknown field(s) {', '.join(bad) or '-'}; "
                                  "expected name with newName / newTag / digest")
        for _, obj in objects:
            _set_images(obj, spec["images"])
    return objects


# --------------------------------------------------------------------------- validators


@functools.lru_cache(maxsize=64)
def _core_validator(kind: str, api_version: str, version: str) -> Any:
    """kubernetes-validate's strict schema for a kind, built once (loading it is the slow part).

    Same lookup as ``kubernetes_validate.validate(..., strict=True)``; a kind without a schema
    raises its SchemaNotFoundError.
    """
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    schema_version = [v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(version)][-1]
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{schema_version}-local-strict"
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{api}.json", version)
    except FileNotFoundError:
        raise utils.SchemaNotFoundError(version=utils.major_minor(version), kind=kind, api_version=api_version) from None
    definitions = utils.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _kv_errors(obj: dict[str, Any], version: str) -> list[str]:
    from kubernetes_validate import utils

    try:
        validator = _core_validator(str(obj["kind"]), str(obj["apiVersion"]), version)
    except utils.SchemaNotFoundError as exc:
        return [exc.message + " (unknown kinds are failures, not warnings)"]
    except KeyError as exc:
        return [f"not a Kubernetes object: missing {exc}"]
    out = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in err.absolute_path) or "<root>"
        out.append(f"{path}: {err.message}")
    return out


def validate_core(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict schema check of a core kind; unknown fields and unknown kinds are errors."""
    if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
        return ["not a Kubernetes object: apiVersion and kind are required"]
    return _kv_errors(obj, version)


def strict_schema(schema: Any) -> Any:
    """A copy of a CRD schema where every object that lists its properties rejects others."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


class CrdSchemas:
    """Strict validators for RayJob / RayCluster from the KubeRay CRD files."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._validators = _crd_validators(str(self.directory.resolve()))

    @classmethod
    def available(cls, directory: str | Path) -> bool:
        return all((Path(directory) / f).is_file() for f in CRD_FILES.values())

    def handles(self, obj: dict[str, Any]) -> bool:
        return obj.get("kind") in CRD_FILES

    def errors(self, obj: dict[str, Any]) -> list[str]:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        validator = self._validators.get(key)
        if validator is None:
            known = ", ".join(sorted(f"{a} {k}" for a, k in self._validators))
            return [f"no CRD schema for {key[0]} {key[1]} (known: {known})"]
        out = []
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            path = ".".join(str(p) for p in err.absolute_path) or "<root>"
            out.append(f"{path}: {err.message}")
        return out


@functools.lru_cache(maxsize=4)
def _crd_validators(directory: str) -> dict[tuple[str, str], Any]:
    import jsonschema

    validators: dict[tuple[str, str], Any] = {}
    for kind, filename in CRD_FILES.items():
        crd = load_documents(Path(directory) / filename)[0]
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            schema = strict_schema(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, template) of every pod template inside a RayCluster or RayJob."""
    spec = obj.get("spec") or {}
    prefix = "spec"
    if obj.get("kind") == "RayJob":
        if isinstance(spec.get("submitterPodTemplate"), dict):
            yield "spec.submitterPodTemplate", spec["submitterPodTemplate"]
        spec = spec.get("rayClusterSpec") or {}
        prefix = "spec.rayClusterSpec"
    head = (spec.get("headGroupSpec") or {}).get("template")
    if isinstance(head, dict):
        yield f"{prefix}.headGroupSpec.template", head
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        if isinstance(group, dict) and isinstance(group.get("template"), dict):
            yield f"{prefix}.workerGroupSpecs.{i}.template", group["template"]


def validate_pod_templates(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """Each pod template as a strict core v1/PodTemplate, and the object's metadata as ObjectMeta."""
    out = []
    meta = obj.get("metadata")
    wrapped_meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    out += [f"metadata (as ObjectMeta): {e}" for e in _kv_errors(wrapped_meta, version)]
    for path, template in pod_templates(obj):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
        for err in _kv_errors(wrapped, version):
            err = err.removeprefix("template.").removeprefix("template")
            out.append(f"{path}.{err.lstrip('.')} (as v1/PodTemplate)")
    return out


# --------------------------------------------------------------------------- consistency rules

KNOWN_RESOURCES = {"cpu", "memory", "ephemeral-storage", "storage"}
SETTINGS_CONFIG_MAP = "clearrec-settings"


PART_OF = ("app.kubernetes.io/part-of", "clearrec")
NAME_LABEL = "app.kubernetes.io/name"


def _resource_name_ok(name: str) -> bool:
    # Extended resources are domain-prefixed (nvidia.com/gpu); the rest is a closed set. NVIDIA's
    # device plugin names are a closed set too (whole GPUs, MIG slices, shared GPUs).
    if name.startswith("nvidia.com/"):
        rest = name.split("/", 1)[1]
        return rest in ("gpu", "gpu.shared") or rest.startswith("mig-")
    return name in KNOWN_RESOURCES or name.startswith("hugepages-") or ("/" in name and "." in name.split("/")[0])


def _label_errors(obj: dict[str, Any]) -> list[str]:
    """Project labelling: every object says it is part of clearrec; every pod template, every
    object that makes pods and every Service names its app. Misspelled label keys show up here."""
    out = []
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(PART_OF[0]) != PART_OF[1]:
        out.append(f"metadata.labels: expected {PART_OF[0]}: {PART_OF[1]}")
    pods = _pod_specs(obj)
    if (pods or obj.get("kind") == "Service") and NAME_LABEL not in labels:
        out.append(f"metadata.labels: missing {NAME_LABEL}")
    for path, template in pods:
        pod_labels = (template.get("metadata") or {}).get("labels") or {}
        if pod_labels.get(PART_OF[0]) != PART_OF[1] or NAME_LABEL not in pod_labels:
            out.append(f"{path}.metadata.labels: expected {PART_OF[0]}: {PART_OF[1]} and {NAME_LABEL}")
    return out


def _pod_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, pod template) of every pod an object creates."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job") and isinstance(spec.get("template"), dict):
        return [("spec.template", spec["template"])]
    if kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        return [("spec.jobTemplate.spec.template", template)] if isinstance(template, dict) else []
    if kind in CRD_FILES:
        return list(pod_templates(obj))
    return []


@functools.lru_cache(maxsize=1)
def ray_start_options() -> frozenset[str] | None:
    """The long options of ``ray start`` (what KubeRay turns rayStartParams into), or None
    when Ray is not importable here."""
    try:
        from ray.scripts.scripts import start
    except Exception:  # Ray is a dependency; its absence only disables this one rule
        return None
    return frozenset(o[2:] for p in start.params for o in p.opts if o.startswith("--"))


def _ray_start_params(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    spec = obj.get("spec") or {}
    prefix = "spec"
    if obj.get("kind") == "RayJob":
        spec, prefix = spec.get("rayClusterSpec") or {}, "spec.rayClusterSpec"
    out = []
    head = spec.get("headGroupSpec") or {}
    if isinstance(head.get("rayStartParams"), dict):
        out.append((f"{prefix}.headGroupSpec.rayStartParams", head["rayStartParams"]))
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        if isinstance(group, dict) and isinstance(group.get("rayStartParams"), dict):
            out.append((f"{prefix}.workerGroupSpecs.{i}.rayStartParams", group["rayStartParams"]))
    return out


def _sweep_file_errors(text: str) -> list[str]:
    import tempfile

    from pipeline.sweep_config import load_sweep_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_sweep_config(path)
        except (ConfigError, DataError) as exc:
            return [str(exc)]
    return []


# The Secrets the manifests reference and the keys they must hold (README: created by hand,
# never committed). A reference to another key of these is a typo.
SECRET_KEYS = {
    "clearrec-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "clearrec-postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD"},
}
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _config_maps(others: list[dict[str, Any]]) -> dict[str, set[str]]:
    return {
        (o.get("metadata") or {}).get("name"): set(o.get("data") or {}) | set(o.get("binaryData") or {})
        for o in others if o.get("kind") == "ConfigMap"
    }


def _reference_errors(where: str, pod: dict[str, Any], container: dict[str, Any],
                      config_maps: dict[str, set[str]]) -> list[str]:
    """ConfigMap/Secret references resolve, and every $(VAR) in command/args is defined."""
    out = []
    defined = {e.get("name") for e in container.get("env") or []}
    for i, source in enumerate(container.get("envFrom") or []):
        for kind, table in (("configMapRef", config_maps), ("secretRef", SECRET_KEYS)):
            ref = source.get(kind)
            if not ref:
                continue
            keys = table.get(ref.get("name"))
            if keys is None and not ref.get("optional"):
                out.append(f"{where}.envFrom.{i}.{kind}: {ref.get('name')!r} is not defined here")
            defined |= {source.get("prefix", "") + k for k in keys or ()}
    for i, env in enumerate(container.get("env") or []):
        value_from = env.get("valueFrom") or {}
        for kind, table in (("configMapKeyRef", config_maps), ("secretKeyRef", SECRET_KEYS)):
            ref = value_from.get(kind)
            if not ref or ref.get("optional"):
                continue
            keys = table.get(ref.get("name"))
            if keys is None:
                out.append(f"{where}.env.{i}.valueFrom.{kind}: {ref.get('name')!r} is not defined here")
            elif ref.get("key") not in keys:
                out.append(f"{where}.env.{i}.valueFrom.{kind}: no key {ref.get('key')!r} in {ref.get('name')!r}")
    for part in ("command", "args"):
        for text in container.get(part) or []:
            for var in _VAR_REF.findall(str(text)):
                if var not in defined:
                    out.append(f"{where}.{part}: $({var}) is not defined by env or envFrom")
    return out


def _volume_errors(path: str, pod: dict[str, Any], config_maps: dict[str, set[str]]) -> list[str]:
    out = []
    for i, volume in enumerate(pod.get("volumes") or []):
        ref = volume.get("configMap")
        if ref and not ref.get("optional") and ref.get("name") not in config_maps:
            out.append(f"{path}.spec.volumes.{i}.configMap: {ref.get('name')!r} is not defined here")
    return out


def _entrypoint_config_errors(obj: dict[str, Any], config_maps: dict[str, set[str]]) -> list[str]:
    """A RayJob's ``--config FILE`` on a ConfigMap volume of the head must be a key of that ConfigMap."""
    spec = obj.get("spec") or {}
    words = str(spec.get("entrypoint") or "").split()
    if "--config" not in words[:-1]:
        return []
    config = words[words.index("--config") + 1]
    head = ((spec.get("rayClusterSpec") or {}).get("headGroupSpec") or {}).get("template") or {}
    pod = head.get("spec") or {}
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    for container in pod.get("containers", [])[:1]:
        for mount in container.get("volumeMounts") or []:
            folder = mount.get("mountPath", "").rstrip("/")
            volume = volumes.get(mount.get("name")) or {}
            if config.startswith(folder + "/") and "configMap" in volume:
                name = volume["configMap"].get("name")
                key = config[len(folder) + 1:]
                if name in config_maps and key not in config_maps[name]:
                    return [f"spec.entrypoint: --config {config}: ConfigMap {name!r} has no key {key!r}"]
    return []


def policy_errors(obj: dict[str, Any], others: list[dict[str, Any]] | None = None) -> list[str]:
    """Misspellings that hide in open maps (see the module docstring)."""
    out: list[str] = _label_errors(obj)
    config_maps = _config_maps(others) if others is not None else None
    autoscaler = ((obj.get("spec") or {}).get("rayClusterSpec") or obj.get("spec") or {}).get("autoscalerOptions")
    if obj.get("kind") in CRD_FILES and isinstance(autoscaler, dict):
        for part in ("requests", "limits"):
            values = (autoscaler.get("resources") or {}).get(part) or {}
            missing = sorted({"cpu", "memory"} - set(values))
            if missing:
                out.append(f"autoscalerOptions.resources.{part}: missing {', '.join(missing)}")
    for path, template in _pod_specs(obj):
        pod = template.get("spec") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        for group in ("containers", "initContainers"):
            for i, container in enumerate(pod.get(group) or []):
                where = f"{path}.spec.{group}.{i}.resources"
                resources = container.get("resources") or {}
                for part in ("requests", "limits"):
                    values = resources.get(part) or {}
                    missing = sorted({"cpu", "memory"} - set(values))
                    if missing:
                        out.append(f"{where}.{part}: missing {', '.join(missing)} (every container sets both)")
                    out += [f"{where}.{part}.{name}: unknown resource name" for name in values if not _resource_name_ok(name)]
                if config_maps is not None:
                    out += _reference_errors(f"{path}.spec.{group}.{i}", pod, container, config_maps)
        if config_maps is not None:
            out += _volume_errors(path, pod, config_maps)
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")
        if path == "spec.template" and isinstance(selector, dict):
            unmatched = {k: v for k, v in selector.items() if labels.get(k) != v}
            if unmatched:
                out.append(f"spec.selector.matchLabels {unmatched} not in {path}.metadata.labels")
    if obj.get("kind") == "PersistentVolumeClaim":
        requests = ((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}
        if "storage" not in requests:
            out.append("spec.resources.requests: missing storage")
    if obj.get("kind") == "Service" and others is not None:
        selector = (obj.get("spec") or {}).get("selector")
        if selector:
            pods = [(t.get("metadata") or {}).get("labels") or {} for o in others for _, t in _pod_specs(o)]
            if not any(all(p.get(k) == v for k, v in selector.items()) for p in pods):
                out.append(f"spec.selector {selector} matches no pod template in this rendering")
    options = ray_start_options()
    if options is not None:
        for where, params in _ray_start_params(obj):
            out += [f"{where}.{key}: not a `ray start` option" for key in params if key not in options]
    if obj.get("kind") == "RayJob" and config_maps is not None:
        out += _entrypoint_config_errors(obj, config_maps)
    if obj.get("kind") == "ConfigMap" and (obj.get("metadata") or {}).get("name") == SETTINGS_CONFIG_MAP:
        from pipeline.deploy.kubeflow import SETTINGS_KEYS  # the keys the Kubeflow steps require

        missing = sorted(set(SETTINGS_KEYS) - set(obj.get("data") or {}))
        if missing:
            out.append(f"data: missing {', '.join(missing)} (required by the Kubeflow steps and the Ray pods)")
    if obj.get("kind") == "ConfigMap":
        for key, text in ((obj.get("data") or {}).items()):
            if key == "sweep.yaml":
                out += [f"data.{key}: {e}" for e in _sweep_file_errors(text)]
    return out


# --------------------------------------------------------------------------- whole tree


def validate_object(
    obj: Any, source: str, crds: CrdSchemas | None, version: str = KUBERNETES_VERSION,
    others: list[dict[str, Any]] | None = None,
) -> tuple[list[Problem], str]:
    """Problems of one object and a note saying which checks ran."""
    name = resource_name(obj)
    if not isinstance(obj, dict):
        return [Problem(source, name, "expected a mapping")], ""
    if obj.get("kind") in CRD_FILES:
        if crds is None:
            return [Problem(source, name, "KubeRay CRD schemas not available; cannot validate")], ""
        errors = crds.errors(obj) + validate_pod_templates(obj, version)
        note = f"CRD schema (strict) + {sum(1 for _ in pod_templates(obj))} pod templates as v1/PodTemplate"
    else:
        errors = validate_core(obj, version)
        note = f"kubernetes-validate --strict ({version})"
    if not errors:
        errors = policy_errors(obj, others)
        note += " + consistency rules"
    return [Problem(source, name, e) for e in errors], note


def _yaml_files(root: Path) -> Iterable[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _referenced_files(kdir: Path) -> set[Path]:
    """Files a kustomization reads (its own file, resources, patch files), recursively."""
    kfile = next(kdir / n for n in KUSTOMIZATION_NAMES if (kdir / n).exists())
    spec = (load_documents(kfile) or [{}])[0] or {}
    out = {kfile.resolve()}
    for entry in spec.get("resources") or []:
        path = (kdir / entry)
        if path.is_dir() and any((path / n).exists() for n in KUSTOMIZATION_NAMES):
            out |= _referenced_files(path)
        else:
            out.add(path.resolve())
    for patch in spec.get("patches") or []:
        if isinstance(patch, dict) and "path" in patch:
            out.add((kdir / patch["path"]).resolve())
    return out


def check_pipeline_is_fresh(path: Path) -> str | None:
    """A compiled Kubeflow pipeline is not a Kubernetes object: it is checked by compiling
    pipeline/deploy/kubeflow.py afresh and comparing the text (all but the kfp version line), so a
    hand edit (or a stale file) fails."""
    try:
        from pipeline.deploy import kubeflow
    except ImportError as exc:  # kfp is an optional extra
        return f"cannot check: kfp not installed ({exc}); install the kfp extra"
    if not kubeflow.is_fresh_compile(path):
        return "differs from a fresh compile of pipeline/deploy/kubeflow.py; run `make pipeline`"
    return None


def validate_tree(
    root: str | Path, *, schema_dir: str | Path | None = None, version: str = KUBERNETES_VERSION
) -> Report:
    """Render every kustomization under ``root`` and validate the result; validate every other
    manifest file on its own."""
    root = Path(root)
    report = Report()
    schema_dir = Path(schema_dir) if schema_dir else default_schema_dir()
    crds = CrdSchemas(schema_dir) if CrdSchemas.available(schema_dir) else None
    if crds is None:
        report.problems.append(Problem(
            str(schema_dir), "KubeRay CRDs",
            f"schema files {', '.join(CRD_FILES.values())} not found; set {SCHEMAS_ENV}",
        ))
    files = list(_yaml_files(root))
    kdirs = sorted({p.parent for p in files if p.name in KUSTOMIZATION_NAMES})
    covered: set[Path] = set()
    for kdir in kdirs:
        try:
            covered |= _referenced_files(kdir)
            rendered = render_kustomization(kdir)
        except (ConfigError, DataError) as exc:
            report.problems.append(Problem(str(kdir), "kustomization", str(exc)))
            continue
        everything = [o for _, o in rendered]
        for source, obj in rendered:
            problems, note = validate_object(obj, f"{kdir} (from {source})", crds, version, everything)
            report.problems += problems
            if not problems:
                report.checked.append(f"{kdir}: {resource_name(obj)}: {note}")
    for path in files:
        if path.resolve() in covered:
            continue
        try:
            docs = load_documents(path)
        except DataError as exc:
            report.problems.append(Problem(str(path), "file", str(exc)))
            continue
        if docs and all(is_kfp_pipeline_spec(d) for d in docs):
            problem = check_pipeline_is_fresh(path)
            if problem:
                report.problems.append(Problem(str(path), "Kubeflow pipeline", problem))
            else:
                report.checked.append(f"{path}: Kubeflow pipeline: equals a fresh compile of pipeline/deploy/kubeflow.py")
            continue
        for doc in docs:
            problems, note = validate_object(doc, str(path), crds, version)
            report.problems += problems
            if not problems:
                report.checked.append(f"{path}: {resource_name(doc)}: {note}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deploy.manifests", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["k8s"], help="folders or files (default k8s/)")
    parser.add_argument("--schemas", help=f"KubeRay CRD folder (default ${SCHEMAS_ENV} or ../shared/schemas/kuberay)")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    args = parser.parse_args(argv)
    failed = False
    for path in args.paths:
        report = validate_tree(path, schema_dir=args.schemas, version=args.kubernetes_version)
        if not args.quiet:
            for line in report.checked:
                print(f"ok   {line}")
            for line in report.skipped:
                print(f"skip {line}")
        for problem in report.problems:
            print(problem, file=sys.stderr)
        failed |= not report.ok
        print(f"{path}: {len(report.checked)} objects valid, {len(report.skipped)} skipped, "
              f"{len(report.problems)} problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
