"""The typed sweep configuration: what to search, how to schedule trials, where results go.

A sweep file (``configs/sweeps/*.yaml``) is merged over ``configs/sweeps/default.yaml`` (the one
home of the defaults), then ``overrides`` are applied, then every field is checked and all
problems are raised together in one :class:`~clear_core.errors.ConfigError`.

Merge rules. Nested mappings (``scheduler``, ``resources``, ``storage``, ``train`` ...) merge key
by key. ``dataset``, ``model_params``, ``search``, ``fault_injection`` and ``per_model`` are replaced
whole: a file that says ``search:`` means exactly that search. Override keys may be nested
mappings (merged by the same rules) or dotted (``{"scheduler.max_t": 4, "train.max_epochs": 3}``):
a dotted key sets exactly the value at its path and leaves every other key along that path as it
was, so ``per_model.lattice.search.learning_rate`` changes LATTICE's learning-rate axis and keeps
its other axes, the other models' entries and LATTICE's ``sampler``. ``dataset``'s two forms
(``path``; ``synthetic``, ``raw``, ``set``) exclude each other: ``dataset.path`` replaces the
generator, ``dataset.synthetic`` a folder.

Baselines. ``per_model: {lightgcn: {model_params: {...}, search: {...}}}`` gives the model
parameters and search used when ``model`` is that name (e.g. ``clearrec sweep --model lightgcn``),
so that one sweep file serves CLEAR and its baselines. ``model_params`` or ``search`` given in
``overrides`` win over ``per_model``. An entry may also give its model's ``sampler`` and
``num_samples`` (a baseline searched over its own paper's grid beside CLEAR's TPE search); the
file's ``num_samples`` then does not cap that grid.

``sampler``: ``tpe`` (Optuna's TPE, seeded) or ``grid`` (every combination of the choice
values exactly once, in a seeded order). A grid runs all its points: the ``num_samples`` of
``default.yaml`` (a TPE budget) does not apply to it. A ``num_samples`` written in the sweep file or
given on the command line caps the grid; the sweep then says, at its start and in its summary and
parent run, how many points and which ones it skipped (:meth:`SweepConfig.grid_points`).

Search specs (the parameter may be a model parameter or a train-config field; prefix it with
``model.`` or ``train.`` only when the name is both):

* ``{type: choice, values: [...]}``
* ``{type: uniform, low, high}`` / ``{type: loguniform, low, high}`` (floats, ``low < high``)
* ``{type: int, low, high}`` (inclusive, ``low <= high``; optional ``log: true``)

Test-only fault injection: ``fault_injection: {crash_once_at_epoch: N}`` makes every trial raise
once, at epoch ``N`` before reporting it, so tests can check that ``max_failures`` retries resume
from the trial's checkpoint. Never set it in a real sweep.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clear_core.config import load_defaults, load_yaml, validate_fields
from clear_core.data.dataset import Dataset
from clear_core.errors import ConfigError
from clear_core.trainer import TRAIN_SCHEMA

REPLACED_WHOLE = ("dataset", "model_params", "search", "fault_injection", "per_model")
#: The two forms of ``dataset``: a prepared folder, or the embedded generator.
FOLDER_FIELDS = frozenset({"path"})
GENERATOR_FIELDS = frozenset({"synthetic", "raw", "set"})

SWEEP_SCHEMA: dict[str, Any] = {
    "name": str,
    "dataset": dict,
    "model": str,
    "model_params": dict,
    "train": dict,
    "search": dict,
    "sampler": str,
    "num_samples": int,
    "max_concurrent": int,
    "seed": int,
    "metric": str,
    "mode": str,
    "scheduler": dict,
    "resources": dict,
    "max_failures": int,
    "storage": dict,
    "study": dict,
    "tracking": dict,
    "fault_injection": (dict, type(None)),
    "per_model": (dict, type(None)),
    "final_seeds": list,
}
SCHEDULER_SCHEMA = {
    "type": str,
    "grace_period": int,
    "reduction_factor": int,
    "max_t": (int, type(None)),
}
RESOURCES_SCHEMA = {"cpu": float, "gpu": float, "custom": (dict, type(None)), "scale_up_wait_s": float}
STORAGE_SCHEMA = {"path": str, "endpoint_url": (str, type(None)), "keep_checkpoints": int, "keep_after_sweep": str}
KEEP_AFTER_SWEEP = ("best", "all")
STUDY_SCHEMA = {"storage": (str, type(None)), "name": (str, type(None))}
TRACKING_SCHEMA = {"experiment": (str, type(None))}
FAULT_SCHEMA = {"crash_once_at_epoch": int}
PER_MODEL_SCHEMA = {"model_params": dict, "search": dict, "sampler": str, "num_samples": int}

SPEC_TYPES = ("choice", "uniform", "loguniform", "int")
SAMPLERS = ("tpe", "grid")
SCHEDULER_TYPES = ("asha", "none")
MODES = ("max", "min")
METRIC_RE = re.compile(r"^(valid)/(recall|ndcg|precision|map)@(\d+)$")
# Model parameters whose value must not exceed the dimension a projection works in.
RANK_PARAMS = ("redundancy_rank",)


@dataclass(frozen=True)
class SearchSpec:
    """One searched parameter. ``target`` is ``"model"`` or ``"train"``; ``param`` its field."""

    name: str
    target: str
    param: str
    type: str
    values: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False

    def largest(self) -> Any:
        """The largest value this spec can produce (for checks such as k <= feature dim)."""
        if self.type == "choice":
            numeric = [v for v in self.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            return max(numeric) if numeric else None
        return self.high

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "choice":
            out["values"] = list(self.values)
        else:
            out.update(low=self.low, high=self.high)
            if self.log and self.type == "int":
                out["log"] = True
        return out


@dataclass(frozen=True)
class SchedulerConfig:
    type: str
    grace_period: int
    reduction_factor: int
    max_t: int | None


@dataclass(frozen=True)
class ResourcesConfig:
    cpu: float
    gpu: float
    custom: dict[str, float] = field(default_factory=dict)
    # How long to wait for an autoscaler to add a node that can run a trial.
    scale_up_wait_s: float = 600.0


@dataclass(frozen=True)
class StorageConfig:
    path: str
    endpoint_url: str | None = None
    #: Checkpoints each trial keeps while the sweep runs (Tune's num_to_keep).
    keep_checkpoints: int = 2
    #: After the sweep: ``best`` keeps only the best trial's checkpoints, ``all`` keeps every trial's.
    keep_after_sweep: str = "best"


@dataclass(frozen=True)
class StudyConfig:
    storage: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str | None = None


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep. ``search`` maps the searched name to its :class:`SearchSpec`."""

    name: str
    dataset: dict[str, Any]
    model: str
    model_params: dict[str, Any]
    train: dict[str, Any]
    search: dict[str, SearchSpec]
    sampler: str
    num_samples: int
    max_concurrent: int
    seed: int
    metric: str
    mode: str
    scheduler: SchedulerConfig
    resources: ResourcesConfig
    max_failures: int
    storage: StorageConfig
    study: StudyConfig
    tracking: TrackingConfig
    fault_injection: dict[str, Any] | None = None
    final_seeds: tuple[int, ...] = ()
    source: str = ""

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of a ``grid`` sweep, in the order of the search's values (``[]`` for TPE)."""
        if self.sampler != "grid":
            return []
        import itertools

        names = list(self.search)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*(self.search[n].values for n in names))]

    @property
    def grid_size(self) -> int:
        return math.prod(len(spec.values) for spec in self.search.values()) if self.sampler == "grid" else 0

    @property
    def max_epochs(self) -> int:
        from clear_core.trainer import TrainConfig

        return TrainConfig.resolve(self.train).max_epochs

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain YAML-able data (logged with every sweep)."""
        out = {
            "name": self.name,
            "dataset": copy.deepcopy(self.dataset),
            "model": self.model,
            "model_params": copy.deepcopy(self.model_params),
            "train": copy.deepcopy(self.train),
            "search": {name: spec.to_dict() for name, spec in self.search.items()},
            "sampler": self.sampler,
            "num_samples": self.num_samples,
            "max_concurrent": self.max_concurrent,
            "seed": self.seed,
            "metric": self.metric,
            "mode": self.mode,
            "scheduler": asdict(self.scheduler),
            "resources": asdict(self.resources),
            "max_failures": self.max_failures,
            "storage": asdict(self.storage),
            "study": asdict(self.study),
            "tracking": asdict(self.tracking),
            "fault_injection": copy.deepcopy(self.fault_injection),
            "final_seeds": list(self.final_seeds),
        }
        return out

    def fingerprint(self) -> str:
        """A hash of everything that changes what the trials compute or how they are chosen.

        Where results go (storage, study storage, tracking) is left out, so moving the output
        folder does not make a different sweep.
        """
        from clear_core.models import resolve_params
        from clear_core.trainer import TrainConfig

        payload = self.to_dict()
        for key in ("storage", "study", "tracking"):
            payload.pop(key)
        # How long to wait for a node changes nothing the trials compute.
        payload["resources"].pop("scale_up_wait_s", None)
        # The defaults in configs/models/*.yaml and train.yaml shape the trials as much as the
        # sweep file does: after a default changes, the same command must start a new sweep,
        # not resume (and report) the one computed with the old default.
        payload["resolved_defaults"] = {
            "model_params": resolve_params(self.model, self.model_params),
            "train": asdict(TrainConfig.resolve(self.train)),
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def split_params(self, trial_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Model parameters and train-config overrides of one trial (fixed values + searched)."""
        model_params = dict(self.model_params)
        train = dict(self.train)
        for name, value in trial_config.items():
            spec = self.search.get(name)
            if spec is None:
                continue
            (model_params if spec.target == "model" else train)[spec.param] = value
        return model_params, train


# --- loading ----------------------------------------------------------------------------------


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if key in REPLACED_WHOLE or not isinstance(value, Mapping) or not isinstance(out.get(key), Mapping):
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _merge(dict(out[key]), value)
    return out


def _set_path(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with the dotted ``key`` set to ``value``; siblings along the path stay.

    Without this a dotted override into a replaced-whole field (``per_model.lattice.search.x``)
    went through :func:`_merge` as ``{"per_model": {...}}`` and silently dropped every other model,
    every other search axis and the entry's sampler.
    """
    parts = str(key).split(".")
    if len(parts) == 1:
        return _merge(base, {key: value})
    out = dict(base)
    node = out
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:depth + 1])} is not a mapping")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)
    return out


def _keep_dataset_form(merged: dict[str, Any], key: str) -> dict[str, Any]:
    """Before ``dataset.<field>`` is set, drop the fields of the other form (folder or generator)."""
    parts = str(key).split(".")
    dataset = merged.get("dataset")
    if parts[0] != "dataset" or len(parts) < 2 or not isinstance(dataset, Mapping):
        return merged
    form = next((f for f in (FOLDER_FIELDS, GENERATOR_FIELDS) if parts[1] in f), None)
    if form is None or not set(dataset) - form:
        return merged
    return {**merged, "dataset": {k: v for k, v in dataset.items() if k in form}}


def _start_from_own_entry(merged: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Put the model's ``per_model`` search and parameters in place before dotted overrides of them.

    ``--model lightgcn --set search.reg_weight=...`` narrows LightGCN's own search; without this
    it would edit CLEAR's top-level search, which then replaces LightGCN's.
    """
    model = overrides.get("model", merged.get("model"))
    per_model = merged.get("per_model")
    entry = per_model.get(model) if isinstance(per_model, Mapping) else None
    if not isinstance(entry, Mapping):
        return merged
    out = dict(merged)
    for field_name in (k for k, kind in PER_MODEL_SCHEMA.items() if kind is dict):
        dotted = any(str(key).startswith(field_name + ".") for key in overrides)
        if dotted and field_name not in overrides and isinstance(entry.get(field_name), Mapping):
            out[field_name] = copy.deepcopy(dict(entry[field_name]))
    return out


def load_sweep_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> SweepConfig:
    """Read a sweep file (``None``: the defaults alone), apply ``overrides``, validate."""
    merged = load_defaults("sweeps", "default")
    source = "configs/sweeps/default.yaml"
    written: set[str] = set()
    if path is not None:
        own = load_yaml(path)
        written = set(own) if isinstance(own, Mapping) else set()
        merged = _merge(merged, own)
        source = str(path)
    # A model override must not inherit the previous model's parameters and search through
    # the merge; per_model (or the overrides themselves) then says what they are.
    overrides = dict(overrides or {})
    explicit = {str(key).split(".")[0] for key in overrides}
    merged = _start_from_own_entry(merged, overrides)
    for key, value in overrides.items():
        merged = _set_path(_keep_dataset_form(merged, key), key, value)
    # A grid's size, not the TPE budget of default.yaml, is how many trials it runs; only a
    # num_samples the user wrote (sweep file or command line) caps it.
    grid_cap_given = "num_samples" in written or "num_samples" in explicit
    return _build(merged, source=source, explicit=explicit, grid_cap_given=grid_cap_given)


def _build(raw: dict[str, Any], *, source: str, explicit: set[str], grid_cap_given: bool = True) -> SweepConfig:
    raw = dict(raw)
    problems: list[str] = []
    for key in raw:
        if key not in SWEEP_SCHEMA:
            problems.append(f"{key}: unknown field; known fields: {', '.join(sorted(SWEEP_SCHEMA))}")
    try:
        top = validate_fields({k: v for k, v in raw.items() if k in SWEEP_SCHEMA}, SWEEP_SCHEMA, source=source)
    except ConfigError as exc:
        # Wrong types at the top level: the deeper checks would only repeat them.
        raise ConfigError(problems + exc.problems, source=source) from None

    per_model = top.get("per_model") or {}
    model = top["model"]
    if model in per_model:
        entry = per_model[model]
        if not isinstance(entry, Mapping):
            problems.append(f"per_model.{model}: expected a mapping, got {type(entry).__name__}")
        else:
            entry_problems = _sub_problems(entry, PER_MODEL_SCHEMA, f"per_model.{model}", required=False)
            problems += entry_problems
            for key in PER_MODEL_SCHEMA:
                if key in entry and key not in explicit and not entry_problems:
                    top[key] = copy.deepcopy(entry[key])
            if "sampler" in entry and not {"sampler", "num_samples"} & explicit:
                # The file's num_samples is the budget of the file's own model: a baseline's grid
                # is capped only by a num_samples written for it (or on the command line).
                grid_cap_given = "num_samples" in entry

    scheduler = _sub(top["scheduler"], SCHEDULER_SCHEMA, "scheduler", problems)
    resources = _sub(top["resources"], RESOURCES_SCHEMA, "resources", problems)
    storage = _sub(top["storage"], STORAGE_SCHEMA, "storage", problems)
    study = _sub(top["study"], STUDY_SCHEMA, "study", problems, required=False)
    tracking = _sub(top["tracking"], TRACKING_SCHEMA, "tracking", problems, required=False)
    fault = top.get("fault_injection")
    if fault is not None:
        fault = _sub(fault, FAULT_SCHEMA, "fault_injection", problems)

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", top["name"]):
        problems.append(f"name: expected letters, digits, '_', '-', '.', got {top['name']!r}")
    for key in ("num_samples", "max_concurrent"):
        if top[key] < 1:
            problems.append(f"{key}: expected >= 1, got {top[key]}")
    if top["max_failures"] < 0:
        problems.append(f"max_failures: expected >= 0, got {top['max_failures']}")
    if top["mode"] not in MODES:
        problems.append(f"mode: expected one of {list(MODES)}, got {top['mode']!r}")
    problems += _dataset_problems(top["dataset"])
    problems += final_seeds_problems(top["final_seeds"])

    train_cfg = None
    try:
        from clear_core.trainer import TrainConfig

        train_cfg = TrainConfig.resolve(top["train"])
    except ConfigError as exc:
        problems += [f"train.{p}" for p in exc.problems]

    match = METRIC_RE.match(top["metric"])
    if not match:
        problems.append(
            f"metric: expected 'valid/<recall|ndcg|precision|map>@K' (selection is on validation), "
            f"got {top['metric']!r}"
        )
    elif train_cfg is not None and int(match.group(3)) not in train_cfg.topk:
        problems.append(f"metric: K={match.group(3)} is not in train.topk {train_cfg.topk}")

    if scheduler:
        if scheduler.get("type") not in SCHEDULER_TYPES:
            problems.append(f"scheduler.type: expected one of {list(SCHEDULER_TYPES)}, got {scheduler.get('type')!r}")
        if scheduler.get("grace_period", 1) < 1:
            problems.append(f"scheduler.grace_period: expected >= 1, got {scheduler['grace_period']}")
        if scheduler.get("reduction_factor", 2) < 2:
            problems.append(f"scheduler.reduction_factor: expected >= 2, got {scheduler['reduction_factor']}")
        max_t = scheduler.get("max_t")
        if max_t is not None and max_t < 1:
            problems.append(f"scheduler.max_t: expected >= 1 or null (= train max_epochs), got {max_t}")
        # ASHA asserts grace_period <= max_t only once Ray runs it, after the stages, the study
        # and the MLflow parent exist; both numbers are known now.
        horizon = max_t if max_t is not None else (train_cfg.max_epochs if train_cfg is not None else None)
        grace = scheduler.get("grace_period")
        if (scheduler.get("type") == "asha" and isinstance(horizon, int) and horizon >= 1
                and isinstance(grace, int) and grace > horizon):
            where = "scheduler.max_t" if max_t is not None else "train.max_epochs"
            problems.append(
                f"scheduler.grace_period: {grace} epochs before ASHA may stop a trial, but trials run at "
                f"most {horizon} ({where}); lower scheduler.grace_period to <= {horizon} "
                "(--set scheduler.grace_period=N) or set scheduler.type: none"
            )
    if resources:
        if resources.get("cpu", 1) <= 0:
            problems.append(f"resources.cpu: expected > 0, got {resources['cpu']}")
        if resources.get("scale_up_wait_s", 0) < 0:
            problems.append(f"resources.scale_up_wait_s: expected >= 0, got {resources['scale_up_wait_s']}")
        if resources.get("gpu", 0) < 0:
            problems.append(f"resources.gpu: expected >= 0 (a fraction such as 0.25 shares a GPU), got {resources['gpu']}")
        for key, amount in (resources.get("custom") or {}).items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
                problems.append(f"resources.custom.{key}: expected a number >= 0, got {amount!r}")
    if storage and not storage.get("path"):
        problems.append("storage.path: expected a local folder or s3://bucket/prefix")
    if storage and isinstance(storage.get("keep_checkpoints"), int) and storage["keep_checkpoints"] < 1:
        problems.append(f"storage.keep_checkpoints: expected >= 1, got {storage['keep_checkpoints']}")
    if storage and storage.get("keep_after_sweep", "best") not in KEEP_AFTER_SWEEP:
        problems.append(f"storage.keep_after_sweep: expected one of {', '.join(KEEP_AFTER_SWEEP)}, "
                        f"got {storage['keep_after_sweep']!r}")
    if fault and fault.get("crash_once_at_epoch", 1) < 1:
        problems.append(f"fault_injection.crash_once_at_epoch: expected >= 1, got {fault['crash_once_at_epoch']}")

    model_schema = _model_schema(model, problems)
    if model_schema is not None:
        for key, value in top["model_params"].items():
            if key not in model_schema:
                problems.append(f"model_params.{key}: not a parameter of model {model!r}; known: {', '.join(sorted(model_schema))}")
            else:
                problems += _value_problems(f"model_params.{key}", value, model_schema[key])
    search = _search_specs(top["search"], model, model_schema, problems)
    if model_schema is not None and not any(p.startswith(("model_params", "search", "train")) for p in problems):
        problems += search_value_problems(model, top["model_params"], top["train"], search)
    if not top["search"]:
        problems.append(
            f"search: nothing to search for model {model!r}; name at least one parameter "
            "(a choice with one value runs a fixed configuration)"
        )

    if top["sampler"] not in SAMPLERS:
        problems.append(f"sampler: expected one of {list(SAMPLERS)}, got {top['sampler']!r}")
    elif top["sampler"] == "grid" and search:
        not_choice = [name for name, spec in search.items() if spec.type != "choice"]
        if not_choice:
            problems.append(
                f"sampler: grid needs choice specs only; {', '.join(not_choice)} "
                "are ranges (give their values as a choice)"
            )
        else:
            size = math.prod(len(spec.values) for spec in search.values())
            if not grid_cap_given:
                top["num_samples"] = size
            elif top["num_samples"] > size:
                problems.append(
                    f"num_samples: {top['num_samples']} is more than the {size} points of the grid"
                )

    if problems:
        raise ConfigError(problems, source=source)
    return SweepConfig(
        name=top["name"],
        dataset=dict(top["dataset"]),
        model=model,
        model_params=dict(top["model_params"]),
        train=dict(top["train"]),
        search=search,
        sampler=top["sampler"],
        num_samples=top["num_samples"],
        max_concurrent=top["max_concurrent"],
        seed=top["seed"],
        metric=top["metric"],
        mode=top["mode"],
        scheduler=SchedulerConfig(**scheduler),
        resources=ResourcesConfig(
            cpu=resources["cpu"], gpu=resources["gpu"],
            custom={k: float(v) for k, v in (resources.get("custom") or {}).items()},
            scale_up_wait_s=resources["scale_up_wait_s"],
        ),
        max_failures=top["max_failures"],
        storage=StorageConfig(**storage),
        study=StudyConfig(**study),
        tracking=TrackingConfig(**tracking),
        fault_injection=dict(fault) if fault else None,
        final_seeds=tuple(top["final_seeds"]),
        source=source,
    )


def _sub_problems(values: Any, schema: Mapping[str, Any], where: str, *, required: bool = True) -> list[str]:
    if not isinstance(values, Mapping):
        return [f"{where}: expected a mapping, got {type(values).__name__}"]
    try:
        validate_fields(values, schema, source=where, required=required)
    except ConfigError as exc:
        return [f"{where}.{p}" for p in exc.problems]
    return []


def _sub(values: Any, schema: Mapping[str, Any], where: str, problems: list[str], *, required: bool = True) -> dict[str, Any]:
    found = _sub_problems(values, schema, where, required=required)
    if found:
        problems += found
        return {}
    return validate_fields(values, schema, source=where, required=required)


def final_seeds_problems(seeds: list[Any]) -> list[str]:
    """``final_seeds``: distinct integers (a repeated seed would count one run twice)."""
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    if bad:
        return [f"final_seeds: expected a list of integer seeds, got {', '.join(repr(b) for b in bad)}"]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        return [f"final_seeds: each seed once (a repeat would count one run twice); repeated: {repeated}"]
    return []


def _dataset_problems(dataset: Mapping[str, Any]) -> list[str]:
    if "path" in dataset:
        extra = sorted(set(dataset) - FOLDER_FIELDS)
        out = [] if isinstance(dataset["path"], str) and dataset["path"] else [
            f"dataset.path: expected a folder path, got {dataset['path']!r}"
        ]
        return out + [f"dataset.{k}: unknown field next to dataset.path" for k in extra]
    if dataset.get("synthetic") is True:
        extra = sorted(set(dataset) - GENERATOR_FIELDS)
        out = [f"dataset.{k}: unknown field; known: synthetic, raw, set" for k in extra]
        if "raw" in dataset and not isinstance(dataset["raw"], bool):
            out.append(f"dataset.raw: expected bool, got {dataset['raw']!r}")
        if "set" in dataset and not isinstance(dataset["set"], Mapping):
            out.append(f"dataset.set: expected a mapping of synthetic.yaml fields, got {dataset['set']!r}")
        return out
    return [f"dataset: expected {{path: DIR}} or {{synthetic: true, raw: bool, set: {{...}}}}, got {dataset!r}"]


def _model_schema(model: str, problems: list[str]) -> dict[str, Any] | None:
    from clear_core.models import model_class

    try:
        return dict(model_class(model).params)
    except ConfigError as exc:
        problems += exc.problems
        return None


def _value_problems(where: str, value: Any, expected: Any) -> list[str]:
    try:
        validate_fields({"v": value}, {"v": expected}, source=where)
    except ConfigError as exc:
        return [f"{where}: " + p.split(": ", 1)[1] for p in exc.problems]
    return []


def _resolve_target(name: str, model: str, model_schema: Mapping[str, Any]) -> tuple[str, str, Any] | str:
    """``(target, param, type)`` of a searched name, or a problem text."""
    if name.startswith("model.") or name.startswith("train."):
        target, param = name.split(".", 1)
        schema = model_schema if target == "model" else TRAIN_SCHEMA
        if param not in schema:
            return f"search.{name}: {param!r} is not a {'parameter of model ' + repr(model) if target == 'model' else 'train-config field'}"
        return target, param, schema[param]
    in_model, in_train = name in model_schema, name in TRAIN_SCHEMA
    if in_model and in_train:
        return f"search.{name}: both a parameter of model {model!r} and a train-config field; write model.{name} or train.{name}"
    if in_model:
        return "model", name, model_schema[name]
    if in_train:
        return "train", name, TRAIN_SCHEMA[name]
    return (
        f"search.{name}: unknown sweep parameter: not a parameter of model {model!r} "
        f"({', '.join(sorted(model_schema)) or 'none'}) nor a train-config field ({', '.join(sorted(TRAIN_SCHEMA))})"
    )


# The projection's settings are checked by the projection's own validator (clear_core.projection).
PROJECTION_FIELDS = ("projection", "redundancy_rank", "projection_strength", "refresh_every", "energy_ratio")


def model_rule_problems(model: str, params: Mapping[str, Any]) -> list[str]:
    """What the model's own validation says about these parameters (types, then ranges), without
    the data: :func:`clear_core.models.resolve_params`, then the projection's validator for
    models that project. No rule is restated here."""
    from clear_core.models import model_class, resolve_params
    from clear_core.projection import validate_projection

    try:
        resolved = resolve_params(model, params)
    except ConfigError as exc:
        return list(exc.problems)
    if all(name in model_class(model).params for name in PROJECTION_FIELDS):
        try:
            validate_projection(
                mode=resolved["projection"], redundancy_rank=resolved["redundancy_rank"],
                projection_strength=resolved["projection_strength"], refresh_every=resolved["refresh_every"],
                energy_ratio=resolved["energy_ratio"],
            )
        except ConfigError as exc:
            return list(exc.problems)
    return []


def _train_rule_problems(train: Mapping[str, Any]) -> list[str]:
    from clear_core.trainer import TrainConfig

    try:
        TrainConfig.resolve(dict(train))
    except ConfigError as exc:
        return list(exc.problems)
    return []


def search_value_problems(
    model: str, model_params: Mapping[str, Any], train: Mapping[str, Any], search: Mapping[str, SearchSpec]
) -> list[str]:
    """Every value a trial can be given, checked by the model's (or trainer's) own rules before
    anything starts: each value of a choice list (k = 0 among good ones included), both ends of
    a range. A value that breaks a rule would otherwise fail inside Ray, in every trial that
    draws it."""
    base_model = set(model_rule_problems(model, model_params))
    problems = [f"model_params: {p}" for p in sorted(base_model)]
    base_train = set(_train_rule_problems(train))
    for name, spec in search.items():
        if spec.type == "choice":
            tried = [(f"search.{name}.values[{i}]", v) for i, v in enumerate(spec.values)]
        else:
            tried = [(f"search.{name}.low", spec.low), (f"search.{name}.high", spec.high)]
        for where, value in tried:
            if spec.target == "model":
                found = [p for p in model_rule_problems(model, {**model_params, spec.param: value}) if p not in base_model]
            else:
                found = [p for p in _train_rule_problems({**train, spec.param: value}) if p not in base_train]
            problems += [f"{where} = {value!r}: {p}" for p in found]
    return problems


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _search_specs(
    search: Mapping[str, Any], model: str, model_schema: Mapping[str, Any] | None, problems: list[str]
) -> dict[str, SearchSpec]:
    specs: dict[str, SearchSpec] = {}
    for name, raw in search.items():
        where = f"search.{name}"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping such as {{type: choice, values: [...]}}, got {raw!r}")
            continue
        kind = raw.get("type")
        if kind not in SPEC_TYPES:
            problems.append(f"{where}.type: expected one of {list(SPEC_TYPES)}, got {kind!r}")
            continue
        allowed = {"type", "values"} if kind == "choice" else {"type", "low", "high"} | ({"log"} if kind == "int" else set())
        for key in sorted(set(raw) - allowed):
            problems.append(f"{where}.{key}: unknown field for a {kind} spec; known: {', '.join(sorted(allowed))}")
        target = _resolve_target(name, model, model_schema) if model_schema is not None else None
        if isinstance(target, str):
            problems.append(target)
            target = None
        expected = target[2] if target else None
        if kind == "choice":
            values = raw.get("values")
            if not isinstance(values, list) or not values:
                problems.append(f"{where}.values: expected a non-empty list, got {values!r}")
                continue
            if expected is not None:
                for i, v in enumerate(values):
                    problems += _value_problems(f"{where}.values[{i}]", v, expected)
            spec = SearchSpec(name, *(target[:2] if target else ("?", name)), type=kind, values=tuple(values))
        else:
            low, high = raw.get("low"), raw.get("high")
            bad = False
            for key, v in (("low", low), ("high", high)):
                if not _is_number(v) or (kind == "int" and not isinstance(v, int)):
                    problems.append(f"{where}.{key}: expected {'an integer' if kind == 'int' else 'a finite number'}, got {v!r}")
                    bad = True
            if bad:
                continue
            if kind == "int" and low > high:
                problems.append(f"{where}: empty range: low {low} > high {high}")
                continue
            if kind != "int" and low >= high:
                word = "inverted" if low > high else "empty"
                problems.append(f"{where}: {word} range: expected low < high, got low {low}, high {high}")
                continue
            if kind == "loguniform" and low <= 0:
                problems.append(f"{where}.low: a loguniform range needs low > 0, got {low}")
                continue
            if expected is not None:
                want = int if kind == "int" else float
                problems += _value_problems(where, want(low), expected)
            log = bool(raw.get("log", False))
            if kind == "int" and log and low < 1:
                problems.append(f"{where}.low: a log int range needs low >= 1, got {low}")
                continue
            spec = SearchSpec(
                name, *(target[:2] if target else ("?", name)), type=kind,
                low=low if kind == "int" else float(low), high=high if kind == "int" else float(high), log=log,
            )
        specs[name] = spec
    return specs


# --- checks that need the data ---------------------------------------------------------------


def dataset_problems(config: SweepConfig, dataset: Dataset) -> list[str]:
    """What cannot work on this dataset, found before any trial starts.

    The projection's rank ``k`` (``redundancy_rank``) may not exceed the dimension it works in:
    the model's projected dimension (``embedding_size``, the encoders' output) when it has one,
    else the smallest raw feature dimension. Then the model is built once on CPU with the largest
    searched values, so whatever else its constructor checks (modalities, projected pair, ...)
    fails here rather than in every trial.
    """
    from clear_core.models import build_model, model_class, resolve_params

    try:
        params = resolve_params(config.model, config.model_params)
    except ConfigError as exc:
        return [f"model_params: {p}" for p in exc.problems]
    cls = model_class(config.model)
    if cls.needs_features and not dataset.features:
        return [f"model {config.model!r} needs modality features; dataset {dataset.name!r} has none"]
    problems: list[str] = []
    largest = {
        spec.param: spec.largest() if spec.type != "choice" or spec.largest() is not None else spec.values[0]
        for spec in config.search.values()
        if spec.target == "model"
    }
    for rank_param in RANK_PARAMS:
        if rank_param not in cls.params:
            continue
        if isinstance(params.get("embedding_size"), int):
            limit_name, limit = "projected dimension (embedding_size)", params["embedding_size"]
            for spec in config.search.values():
                if spec.target == "model" and spec.param == "embedding_size":
                    # A searched size: the smallest one it can take bounds k.
                    limit = min(spec.values) if spec.type == "choice" else int(spec.low)
        elif dataset.features:
            limit_name, limit = min(
                ((f"feature dimension of {m!r}", int(f.shape[1])) for m, f in dataset.features.items()),
                key=lambda kv: kv[1],
            )
        else:
            continue
        ranks = {"model_params": params.get(rank_param)}
        for spec in config.search.values():
            if spec.target == "model" and spec.param == rank_param:
                ranks[f"search.{spec.name}"] = spec.largest()
        for where, k in ranks.items():
            if isinstance(k, int) and k > limit:
                problems.append(
                    f"{where}: {rank_param} (k) up to {k} exceeds the {limit_name} = {limit} "
                    f"(dataset {dataset.name!r})"
                )
    if problems:
        return problems
    try:
        build_model(config.model, dataset, {**config.model_params, **largest})
    except ConfigError as exc:
        problems += [f"model {config.model!r} with the largest searched values: {p}" for p in exc.problems]
    return problems
