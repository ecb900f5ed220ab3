"""Reproducibility runs: a pinned configuration, re-run and compared with a committed reference.

``configs/repro.yaml`` pins what makes the run short and seeded; everything else comes from
the usual defaults. Three parts:

* ``train``: one short training on the generated dataset (the fast check in ``make test``);
* ``sweep``: a small seeded TPE sweep at concurrency 1 on the same dataset (Ray + Optuna);
* ``real``: a short training on a real dataset from ``$CLEARREC_SHARED/data`` (skipped, and
  said so, when the folder is absent).

Each part yields its resolved configuration, the dataset fingerprint and a flat mapping of
measured values (metrics, best epoch, trial parameters). :func:`compare` lines them up with
``repro/reference.json`` (one entry per device kind, ``cpu`` or ``cuda``): numbers within the
device's tolerance, integers and texts exactly. A differing resolved configuration is drift too,
shown field by field, so that a changed default is named rather than only seen in the numbers.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import math
import os
import platform
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clear_core.atomic_io import write_json_atomic, write_text_atomic
from clear_core.config import config_dir, load_yaml, validate_fields
from clear_core.errors import ConfigError
from pipeline.tags import GIT_COMMIT, REPRO

log = logging.getLogger(__name__)

PARTS = ("train", "sweep", "real")
DEVICE_KINDS = ("cpu", "cuda")
REFERENCE_SCHEMA_VERSION = 1
SHARED_ENV = "CLEARREC_SHARED"
REPO = Path(__file__).resolve().parents[1]
TAG_REPRO = REPRO
SHOWN_DRIFTS = 8  # drifted values repeated under the table
EXPERIMENT = "clearrec-repro"

REPRO_SCHEMA: dict[str, Any] = {
    "reference": str,
    "out_dir": str,
    "dataset": dict,
    "train": dict,
    "sweep": dict,
    "real": dict,
    "tolerances": dict,
}
DATASET_SCHEMA = {"set": dict}
TRAIN_PART_SCHEMA = {"model": str, "model_params": dict, "train": dict}
SWEEP_PART_SCHEMA = {"config": str, "overrides": dict}
REAL_PART_SCHEMA = {"dataset": str, **TRAIN_PART_SCHEMA}
TOLERANCE_SCHEMA = {"abs": float}


@dataclass(frozen=True)
class ReproConfig:
    reference: Path
    out_dir: Path
    dataset: dict[str, Any]
    train: dict[str, Any]
    sweep: dict[str, Any]
    real: dict[str, Any]
    tolerances: dict[str, float]
    source: str = ""


def default_config_path() -> Path:
    return config_dir() / "repro.yaml"


def shared_dir() -> Path:
    """``$CLEARREC_SHARED``, else ``<repo>/../shared``."""
    return Path(os.environ.get(SHARED_ENV) or REPO.parent / "shared")


def load_repro_config(path: str | Path | None = None) -> ReproConfig:
    """Read and check ``configs/repro.yaml`` (or ``path``); every bad field is listed at once."""
    path = Path(path) if path is not None else default_config_path()
    source = str(path)
    raw = validate_fields(load_yaml(path), REPRO_SCHEMA, source=source)
    problems: list[str] = []
    parts = {}
    for key, schema in (
        ("dataset", DATASET_SCHEMA), ("train", TRAIN_PART_SCHEMA),
        ("sweep", SWEEP_PART_SCHEMA), ("real", REAL_PART_SCHEMA),
    ):
        try:
            parts[key] = validate_fields(raw[key], schema, source=key)
        except ConfigError as exc:
            problems += [f"{key}.{p}" for p in exc.problems]
    tolerances: dict[str, float] = {}
    for kind in DEVICE_KINDS:
        entry = raw["tolerances"].get(kind)
        if not isinstance(entry, Mapping):
            problems.append(f"tolerances.{kind}: expected a mapping {{abs: NUMBER}}, got {entry!r}")
            continue
        try:
            tol = validate_fields(entry, TOLERANCE_SCHEMA, source=f"tolerances.{kind}")["abs"]
        except ConfigError as exc:
            problems += [f"tolerances.{kind}.{p}" for p in exc.problems]
            continue
        if not (math.isfinite(tol) and tol >= 0):
            problems.append(f"tolerances.{kind}.abs: expected a finite number >= 0, got {tol}")
        tolerances[kind] = tol
    for kind in sorted(set(raw["tolerances"]) - set(DEVICE_KINDS)):
        problems.append(f"tolerances.{kind}: unknown device kind; known: {', '.join(DEVICE_KINDS)}")
    if problems:
        raise ConfigError(problems, source=source)
    # The reference is a file of the repository; outputs go where the command runs.
    return ReproConfig(
        reference=REPO / raw["reference"], out_dir=Path(raw["out_dir"]),
        **parts, tolerances=tolerances, source=source,
    )


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` (``cuda:1`` counts as ``cuda``): the key of the reference entry."""
    kind = device.split(":", 1)[0]
    if kind not in DEVICE_KINDS:
        raise ConfigError(f"device: expected cpu, cuda or cuda:N, got {device!r}")
    return kind


# --- running the parts ---------------------------------------------------------------------


@dataclass
class PartResult:
    """One part's resolved configuration, dataset fingerprint and measured values."""

    config: dict[str, Any]
    dataset_fingerprint: str
    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(
            {"config": self.config, "dataset_fingerprint": self.dataset_fingerprint, "values": self.values}
        ))


def train_values(result: Any) -> dict[str, Any]:
    """What a training run is judged by: epochs, the last loss and every valid/test metric."""
    values: dict[str, Any] = {
        "best_epoch": int(result.best_epoch),
        "epochs_run": int(result.epochs_run),
        "last_train_loss": float(result.history[-1]["train_loss"]),
    }
    for split in ("valid", "test"):
        for key, value in sorted(getattr(result, split).items()):
            values[f"{split}/{key}"] = float(value)
    return values


def run_training(dataset: Any, part: Mapping[str, Any], device: str) -> PartResult:
    from clear_core.models import resolve_params
    from clear_core.trainer import TrainConfig, fit

    config = TrainConfig.resolve({**part["train"], "device": device})
    params = resolve_params(part["model"], part["model_params"])
    result = fit(dataset, part["model"], params, config)
    resolved = {"model": part["model"], "model_params": params, "train": json.loads(json.dumps(asdict(config)))}
    return PartResult(resolved, dataset.fingerprint, train_values(result))


def proposal_order(trial: Any) -> tuple[int, str]:
    """Sort key: the order the searcher proposed the trial in.

    Tune's trial ids are random, but its trial folders are named
    ``<trainable>_<trial_id>_<counter>_<params>_<date>`` with a counter in proposal order.
    Without that, the parameters give a stable (if less telling) order.
    """
    name = Path(getattr(trial, "path", None) or "").name
    _, found, rest = name.partition(f"{trial.trial_id}_")
    counter = rest.split("_", 1)[0]
    if found and counter.isdigit():
        return (int(counter), "")
    return (1 << 30, json.dumps(trial.params, sort_keys=True, default=str))


def sweep_values(outcome: Any) -> dict[str, Any]:
    """Every trial's parameters, status, epochs and metrics, in proposal order; the best trial."""
    values: dict[str, Any] = {}
    trials = sorted(outcome.trials, key=proposal_order)
    for i, trial in enumerate(trials):
        prefix = f"trial{i}."
        for name, value in sorted(trial.params.items()):
            values[f"{prefix}param.{name}"] = value
        values[f"{prefix}status"] = str(trial.status)
        values[f"{prefix}best_epoch"] = None if trial.best_epoch is None else int(trial.best_epoch)
        values[f"{prefix}epochs"] = int(trial.epochs)
        for split in ("valid", "test"):
            for key, value in sorted((getattr(trial, split) or {}).items()):
                values[f"{prefix}{split}/{key}"] = float(value)
    best_id = getattr(outcome.best, "trial_id", None)
    values["best_trial"] = next(
        (i for i, t in enumerate(trials) if t.trial_id == best_id), -1
    )
    return values


def run_sweep_part(dataset_dir: Path, part: Mapping[str, Any], device: str, work: Path) -> PartResult:
    from clear_core.data.loading import load_dataset
    from pipeline.sweep import run_sweep
    from pipeline.sweep_config import load_sweep_config

    # Relative to the configs folder, so that a private copy (CLEARREC_CONFIG_DIR) is used whole.
    sweep_path = config_dir() / part["config"]
    # A fresh Tune folder and Optuna study every time: an existing one would be resumed, and
    # TPE would continue a previous sequence instead of starting the pinned one.
    overrides = {
        **part["overrides"],
        "dataset": {"path": str(dataset_dir)},
        "storage.path": str(work / "ray_results"),
        "train.device": device,
    }
    config = load_sweep_config(sweep_path, overrides)
    outcome = run_sweep(config, str(dataset_dir), study_storage=f"sqlite:///{work / 'optuna.db'}", progress=False)
    resolved = config.to_dict()
    # final_seeds acts after the trials (pipeline.seed_replicates); this part runs the trials alone.
    for key in ("storage", "study", "tracking", "dataset", "final_seeds"):
        resolved.pop(key, None)
    # The fingerprint of what the trials read, not of what was generated.
    return PartResult(resolved, load_dataset(dataset_dir).fingerprint, sweep_values(outcome))


def real_dataset_dir(part: Mapping[str, Any]) -> Path:
    return shared_dir() / "data" / part["dataset"]


def run_parts(
    config: ReproConfig, parts: list[str], device: str, *, progress: Any = None
) -> tuple[dict[str, PartResult], dict[str, str]]:
    """Run ``parts``; returns the results and, per skipped part, why it was skipped."""
    from clear_core.data.loading import load_dataset
    from clear_core.data.synthetic import resolve_config, write_synthetic

    results: dict[str, PartResult] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="clearrec-repro-") as tmp:
        work = Path(tmp)
        synthetic_cfg = resolve_config(config.dataset["set"])
        if {"train", "sweep"} & set(parts):
            synthetic = write_synthetic(work / "synthetic", **config.dataset["set"])
            dataset = synthetic.dataset
        for part in parts:
            if progress:
                progress(part)
            if part == "train":
                res = run_training(dataset, config.train, device)
                res.config["dataset"] = synthetic_cfg
            elif part == "sweep":
                res = run_sweep_part(work / "synthetic", config.sweep, device, work / "sweep")
                res.config["dataset"] = synthetic_cfg
            elif part == "real":
                folder = real_dataset_dir(config.real)
                if not folder.is_dir():
                    skipped[part] = f"{folder} is absent (set {SHARED_ENV} to the shared folder)"
                    log.warning("part real skipped: %s", skipped[part])
                    continue
                real = load_dataset(folder)
                res = run_training(real, config.real, device)
                res.config["dataset"] = config.real["dataset"]
            else:
                raise ConfigError(f"part {part!r}: unknown; known: {', '.join(PARTS)}")
            results[part] = res
    return results, skipped


# --- comparing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    part: str
    name: str
    expected: Any
    measured: Any
    ok: bool

    @property
    def diff(self) -> str:
        if isinstance(self.expected, float) and isinstance(self.measured, float):
            return f"{float(self.measured) - float(self.expected):+.3e}"
        return "" if self.ok else "differs"


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    config_diffs: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.problems or self.config_diffs or any(not r.ok for r in self.rows))


def values_match(expected: Any, measured: Any, tolerance: float) -> bool:
    if isinstance(expected, float) or isinstance(measured, float):
        if isinstance(expected, bool) or isinstance(measured, bool):
            return expected == measured
        if not all(isinstance(v, (int, float)) for v in (expected, measured)):
            return False
        if math.isnan(expected) or math.isnan(measured):
            return math.isnan(expected) and math.isnan(measured)
        return abs(float(measured) - float(expected)) <= tolerance
    return expected == measured


def config_differences(expected: Any, measured: Any, prefix: str = "") -> list[str]:
    """Readable ``field: reference X, now Y`` lines for every differing leaf."""
    if isinstance(expected, Mapping) and isinstance(measured, Mapping):
        out = []
        for key in sorted(set(expected) | set(measured), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in measured:
                out.append(f"{name}: reference {expected[key]!r}, now absent")
            elif key not in expected:
                out.append(f"{name}: absent in reference, now {measured[key]!r}")
            else:
                out += config_differences(expected[key], measured[key], name)
        return out
    return [] if expected == measured else [f"{prefix}: reference {expected!r}, now {measured!r}"]


def compare(
    reference: Mapping[str, Any], results: Mapping[str, PartResult], tolerance: float
) -> Comparison:
    """Line up measured parts with their reference entries (``reference`` = one device's entry)."""
    out = Comparison()
    for part, result in results.items():
        measured = result.to_json()
        ref = reference.get(part)
        if ref is None:
            out.problems.append(f"{part}: no reference for this part on this device; record one with `make repro-update`")
            ref = {"config": measured["config"], "dataset_fingerprint": measured["dataset_fingerprint"], "values": {}}
        if ref["dataset_fingerprint"] != measured["dataset_fingerprint"]:
            out.problems.append(
                f"{part}: dataset fingerprint {measured['dataset_fingerprint'][:16]}... differs from the "
                f"reference {ref['dataset_fingerprint'][:16]}... (generator, its defaults or the data changed)"
            )
        diffs = config_differences(ref["config"], measured["config"])
        if diffs:
            out.config_diffs[part] = diffs
        names = list(ref["values"]) + [k for k in measured["values"] if k not in ref["values"]]
        for name in names:
            expected = ref["values"].get(name)
            got = measured["values"].get(name)
            ok = name in ref["values"] and name in measured["values"] and values_match(expected, got, tolerance)
            out.rows.append(Row(part, name, expected, got, ok))
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.9g}"
    return str(value)


def format_report(comparison: Comparison, *, device: str, tolerance: float, skipped: Mapping[str, str]) -> str:
    """The table of expected vs measured, then what drifted and why, in plain text."""
    header = ("part", "value", "expected", "measured", "diff", "")
    body = [
        (r.part, r.name, _cell(r.expected), _cell(r.measured), r.diff, "ok" if r.ok else "DRIFT")
        for r in comparison.rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [f"clearrec repro on {device} (tolerance: abs {tolerance:g}; integers and texts exact)"]
    for row in [header, *body]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for part, why in skipped.items():
        lines.append(f"part {part}: SKIPPED ({why})")
    drifted = [r for r in comparison.rows if not r.ok]
    if comparison.config_diffs:
        lines.append("")
        lines.append("configuration differs from the reference:")
        for part, diffs in comparison.config_diffs.items():
            lines += [f"  {part}: {d}" for d in diffs]
    if comparison.problems:
        lines.append("")
        lines += [f"problem: {p}" for p in comparison.problems]
    if drifted:
        # The long table scrolls away in a CI log; the largest moves are repeated here.
        def size(row: Row) -> float:
            both = isinstance(row.expected, float) and isinstance(row.measured, float)
            return abs(row.measured - row.expected) if both else math.inf

        lines.append("")
        lines.append(f"largest drifts ({min(SHOWN_DRIFTS, len(drifted))} of {len(drifted)}):")
        for row in sorted(drifted, key=size, reverse=True)[:SHOWN_DRIFTS]:
            lines.append(f"  {row.part} {row.name}: expected {_cell(row.expected)}, measured {_cell(row.measured)} {row.diff}".rstrip())
    lines.append("")
    if comparison.drifted:
        lines.append(
            f"DRIFT: {len(drifted)} of {len(comparison.rows)} values outside tolerance"
            f"{', configuration changed' if comparison.config_diffs else ''}"
            f"{', ' + str(len(comparison.problems)) + ' problem(s)' if comparison.problems else ''}. "
            "If the change is intended: make repro-update REASON=\"why\""
        )
    else:
        lines.append(f"OK: {len(comparison.rows)} values match the reference")
    return "\n".join(lines) + "\n"


# --- the reference file ---------------------------------------------------------------------


def read_reference(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        return {"schema": REFERENCE_SCHEMA_VERSION, "devices": {}, "history": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != REFERENCE_SCHEMA_VERSION or not isinstance(data.get("devices"), dict):
        raise ConfigError(f"{path}: expected a repro reference (schema {REFERENCE_SCHEMA_VERSION} with 'devices')")
    return data


def platform_facts(device: str) -> dict[str, str]:
    import numpy
    import torch

    facts = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    if device_kind(device) == "cuda" and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
        facts["cuda"] = str(torch.version.cuda)
    return facts


def updated_reference(
    reference: Mapping[str, Any], results: Mapping[str, PartResult], *, device: str, reason: str, commit: str
) -> dict[str, Any]:
    """``reference`` with this device's measured parts replaced; parts not run keep their entry."""
    out = copy.deepcopy(dict(reference))
    kind = device_kind(device)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    entry = out["devices"].setdefault(kind, {})
    for part, result in results.items():
        entry[part] = {**result.to_json(), "recorded": now, "commit": commit}
    out["platform"] = {**out.get("platform", {}), kind: platform_facts(device)}
    out["history"] = [*out.get("history", []), {
        "when": now, "reason": reason.strip(), "device": kind, "parts": sorted(results), "commit": commit,
    }]
    return out


def write_reference(path: str | Path, reference: Mapping[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, reference)


# --- MLflow ---------------------------------------------------------------------------------


def log_to_mlflow(
    tracking_uri: str, *, device: str, results: Mapping[str, PartResult], comparison: Comparison,
    report_path: Path, table_path: Path, update_reason: str | None,
) -> str:
    """One run in experiment ``clearrec-repro``, tagged ``clearrec.repro=true``; returns its id."""
    from pipeline.provenance import git_commit
    from pipeline.tracking import Tracker

    tracker = Tracker(tracking_uri, EXPERIMENT)
    status = "update" if update_reason else ("drift" if comparison.drifted else "pass")
    tags = {TAG_REPRO: "true", f"{TAG_REPRO}.status": status, f"{TAG_REPRO}.device": device,
            GIT_COMMIT: git_commit()}
    if update_reason:
        tags[f"{TAG_REPRO}.reason"] = update_reason
    params = {part: res.config for part, res in results.items()}
    run_id = tracker.start_run(f"repro {device} {status}", tags=tags, params=params)
    try:
        for part, res in results.items():
            numeric = {f"{part}.{k}": v for k, v in res.values.items() if isinstance(v, (int, float))}
            tracker.log_metrics(run_id, numeric, step=0)
        tracker.log_artifact(run_id, report_path)
        tracker.log_artifact(run_id, table_path)
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")
    return run_id


# --- the whole run --------------------------------------------------------------------------


@dataclass
class ReproOutcome:
    exit_code: int
    report: str
    comparison: Comparison
    results: dict[str, PartResult]
    skipped: dict[str, str]
    run_id: str | None = None


def run_repro(
    config: ReproConfig,
    *,
    reference_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    parts: list[str] | None = None,
    skip_real: bool = False,
    update_reason: str | None = None,
    tracking_uri: str | None = None,
    progress: Any = None,
) -> ReproOutcome:
    """Run, compare (or, with ``update_reason``, rewrite the reference), write the report.

    Exit code 0 when every value matches (or the reference was updated), 1 on drift. The
    report goes to ``out_dir/table.txt`` and ``out_dir/report.json``; with ``tracking_uri`` the
    run is logged to MLflow tagged ``clearrec.repro=true``. ``reference_path`` and ``out_dir``
    default to the configuration's.
    """
    reference_path = Path(reference_path) if reference_path is not None else config.reference
    out_dir = Path(out_dir) if out_dir is not None else config.out_dir
    kind = device_kind(device)
    chosen = list(parts or PARTS)
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        raise ConfigError(f"parts: unknown {unknown}; known: {', '.join(PARTS)}")
    if update_reason is not None and not update_reason.strip():
        raise ConfigError("--reason: say why the reference changes (it is recorded in the file)")
    reference = read_reference(reference_path)
    skipped: dict[str, str] = {}
    if skip_real and "real" in chosen:
        chosen.remove("real")
        skipped["real"] = "--skip-real"
    results, more_skipped = run_parts(config, chosen, device, progress=progress)
    skipped.update(more_skipped)
    tolerance = config.tolerances[kind]
    if update_reason is not None:
        from pipeline.provenance import git_commit

        reference = updated_reference(reference, results, device=device, reason=update_reason, commit=git_commit())
        write_reference(reference_path, reference)
        log.info("reference %s updated for %s: %s", reference_path, kind, ", ".join(sorted(results)))
    comparison = compare(reference["devices"].get(kind, {}), results, tolerance)
    report = format_report(comparison, device=device, tolerance=tolerance, skipped=skipped)
    if update_reason is not None:
        report += f"reference {reference_path} rewritten ({kind}: {', '.join(sorted(results))}); reason: {update_reason.strip()}\n"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table_path, report_path = out / "table.txt", out / "report.json"
    write_text_atomic(table_path, report)
    write_json_atomic(report_path, {
        "device": device,
        "tolerance_abs": tolerance,
        "drifted": comparison.drifted,
        "skipped": skipped,
        "problems": comparison.problems,
        "config_diffs": comparison.config_diffs,
        "rows": [
            {"part": r.part, "value": r.name, "expected": r.expected, "measured": r.measured, "ok": r.ok}
            for r in comparison.rows
        ],
        "measured": {part: res.to_json() for part, res in results.items()},
    })
    run_id = None
    if tracking_uri:
        run_id = log_to_mlflow(
            tracking_uri, device=device, results=results, comparison=comparison,
            report_path=report_path, table_path=table_path, update_reason=update_reason,
        )
    exit_code = 1 if comparison.drifted and update_reason is None else 0
    return ReproOutcome(exit_code, report, comparison, results, skipped, run_id)
