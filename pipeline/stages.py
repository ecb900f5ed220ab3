"""The pipeline's stages as plain functions, and the cache that lets an unchanged stage be reused.

The dataset stages are here (synthesize -> extract -> prepare, chained by :func:`dataset_stages`);
the sweep stage and the final evaluation are run by :mod:`pipeline.run`. Each stage takes and
returns plain values (paths, dicts), so the CLI calls it directly, a Ray task runs it on a worker
(:func:`pipeline.ray_runtime.run_as_task`) and a Kubeflow step runs it in a container.

Reuse. A stage's output folder is ``<runs_dir>/<stage>/<key>/`` where ``key`` hashes the stage
name, the fingerprints of its inputs (file contents, upstream stage keys, dataset fingerprints)
and its configuration. The folder holds ``stage.json`` (the stage manifest: key, inputs, config,
what the stage returned, when and how long), written last; a folder with a manifest is complete
and is reused as it is, so an unchanged re-run skips the stage. A stage works in
``<key>.partial/`` and renames it when done, so a killed stage leaves nothing that looks finished
and its next run continues there (extraction keeps its encoder cache, so finished batches are not
encoded again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.sweep_config import SweepConfig

log = logging.getLogger(__name__)

MANIFEST = "stage.json"
STAGE_FORMAT = 1
# Bump when a stage's code changes what it writes, so old outputs stop being reused.
STAGE_VERSIONS = {"synthesize": 1, "extract": 1, "prepare": 1, "sweep": 1, "evaluate": 1}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def config_hash(config: Any) -> str:
    """sha256 of a configuration's canonical JSON (key order never matters)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path_fingerprint(path: str | Path, include: tuple[str, ...] = ("*",)) -> str:
    """Content hash of a file, or of a folder (relative names and contents of every file whose
    name matches one of ``include``; hidden files such as caches and markers left out)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        from clear_core.errors import DataError

        raise DataError(path, "stage input not found")
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not any(file.match(p) for p in include):
            continue
        h.update(f"{rel.as_posix()}\0{file_sha256(file)}\0".encode())
    return h.hexdigest()


@dataclass
class StageOutput:
    """Where a stage's output lies and what it returned. ``reused``: taken from an earlier run."""

    name: str
    key: str
    path: str
    reused: bool
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_key(name: str, inputs: Mapping[str, str], config: Mapping[str, Any]) -> str:
    payload = {"stage": name, "version": STAGE_VERSIONS.get(name, 1), "inputs": dict(inputs), "config": config}
    return config_hash(payload)[:16]


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The stage manifest of a finished stage folder, or None when absent or unreadable."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == STAGE_FORMAT else None


def run_stage(
    name: str,
    runs_dir: str | Path,
    *,
    inputs: Mapping[str, str],
    config: Mapping[str, Any],
    produce: Callable[[Path], Mapping[str, Any]],
    still_valid: Callable[[Mapping[str, Any]], bool] | None = None,
) -> StageOutput:
    """Run ``produce(work_dir)`` unless a finished output with the same key exists.

    ``produce`` writes its files under ``work_dir`` and returns a JSON-able summary, which is
    kept in the manifest and returned (as ``info``) by this run and every later reuse.
    ``still_valid(info)`` can veto a reuse when the output depends on something outside the
    folder (the sweep's MLflow runs, say) that has gone.
    """
    key = stage_key(name, inputs, config)
    stage_root = Path(runs_dir).absolute() / name
    final = stage_root / key
    manifest = read_manifest(final)
    if manifest is not None and still_valid is not None and not still_valid(manifest.get("info", {})):
        log.info("stage %s: %s is finished but no longer valid; running again", name, final)
        manifest = None
    if manifest is not None and manifest.get("key") == key:
        log.info("stage %s: reusing %s (inputs unchanged)", name, final)
        # The runs folder may have moved since: paths in the manifest follow it.
        info = _rebase(manifest.get("info", {}), Path(manifest.get("path", final)), final)
        return StageOutput(name, key, str(final), True, info, manifest.get("seconds", 0.0))
    if final.exists():
        # A folder without a manifest was never finished; it must not be mistaken for output.
        shutil.rmtree(final)
    work = stage_root / f"{key}.partial"
    work.mkdir(parents=True, exist_ok=True)
    log.info("stage %s: running into %s", name, final)
    start = time.perf_counter()
    info = _rebase(dict(produce(work)), work, final)
    seconds = time.perf_counter() - start
    manifest = {
        "format": STAGE_FORMAT,
        "stage": name,
        "key": key,
        "path": str(final),
        "inputs": dict(inputs),
        "config": json.loads(canonical_json(config)),
        "info": json.loads(canonical_json(info)),
        "seconds": seconds,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = work / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, work / MANIFEST)
    os.replace(work, final)
    return StageOutput(name, key, str(final), False, manifest["info"], seconds)


def _rebase(info: Mapping[str, Any], old: Path, new: Path) -> dict[str, Any]:
    """Paths a stage returned point into its work folder (or where the runs folder was);
    point them at the final folder."""
    out: dict[str, Any] = {}
    for k, v in info.items():
        if isinstance(v, str) and (v == str(old) or v.startswith(str(old) + os.sep)):
            v = str(new) + v[len(str(old)):]
        out[k] = v
    return out


# --- the stages ----------------------------------------------------------------------------


def synthesize(runs_dir: str | Path, *, overrides: Mapping[str, Any] | None = None, raw: bool = False) -> dict[str, Any]:
    """The embedded default dataset. ``raw``: an Amazon-style catalogue (reviews, meta, images)
    for the extract and prepare stages; otherwise the MMRec folder with its own features."""
    from clear_core.data.synthetic import generate_synthetic, resolve_config, write_mmrec_into

    cfg = resolve_config(dict(overrides or {}))

    def produce(work: Path) -> dict[str, Any]:
        synthetic = generate_synthetic(**dict(overrides or {}))
        if raw:
            from clear_core.data.synthetic_content import write_raw_catalogue

            files = write_raw_catalogue(work / "raw", synthetic)
            return {
                "reviews": files["reviews_file"], "meta": files["meta"], "images": files["images"],
                "items": files["items"], "name": synthetic.dataset.name,
            }
        folder = work / "dataset"
        folder.mkdir(parents=True, exist_ok=True)
        write_mmrec_into(folder, synthetic)
        return {"dataset": str(folder), "fingerprint": synthetic.dataset.fingerprint, "name": synthetic.dataset.name}

    out = run_stage("synthesize", runs_dir, inputs={}, config={"synthetic": cfg, "raw": raw}, produce=produce)
    return out.to_dict()


def extract(
    runs_dir: str | Path,
    *,
    meta: str | Path,
    images: str | Path | None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Raw metadata and images -> ``text_feat.npy``/``image_feat.npy``/``items.txt`` (real encoders).

    ``options`` are :func:`clear_core.extraction.extract_features` keywords (defaults in
    ``configs/extract.yaml``). Encoded vectors are cached by content in ``<runs_dir>/cache/encoders``,
    shared by every extract run, so only new contents are encoded."""
    from clear_core.extraction import extract_features, resolve_extract_config

    options = dict(options or {})
    cache_dir = Path(runs_dir).absolute() / "cache" / "encoders"
    resolved = resolve_extract_config({k: options.get(k) for k in ("text_encoder", "image_encoder")})
    # Device and batch size change how, not what, is computed: they stay out of the key.
    config = {
        "text_encoder": resolved["text_encoder"], "image_encoder": resolved["image_encoder"],
        "encoders": resolved["encoders"], "max_image_pixels": resolved["max_image_pixels"],
    }
    inputs = {"meta": path_fingerprint(meta)}
    if images is not None:
        inputs["images"] = path_fingerprint(images)

    def produce(work: Path) -> dict[str, Any]:
        from pipeline.console import ExtractionProgress

        sidecar = extract_features(meta, images, work / "features", cache_dir=cache_dir,
                                   **{"progress": ExtractionProgress(), **options})
        return {"features": str(work / "features"), "counts": sidecar.get("counts", {}),
                "device": sidecar.get("device")}

    out = run_stage("extract", runs_dir, inputs=inputs, config=config, produce=produce)
    return out.to_dict()


def prepare(
    runs_dir: str | Path,
    *,
    reviews: str | Path,
    features: str | Path | None = None,
    k: int,
    split: str,
    seed: int,
    name: str | None = None,
) -> dict[str, Any]:
    """Filter and split: raw reviews -> ``k``-core -> split -> canonical dataset folder."""
    from clear_core.data.prepare import prepare_dataset

    inputs = {"reviews": path_fingerprint(reviews)}
    if features is not None:
        # The arrays and their item order, not the sidecar: its timings differ run to run.
        inputs["features"] = path_fingerprint(features, include=("*_feat.npy", "items.txt"))

    def produce(work: Path) -> dict[str, Any]:
        summary = prepare_dataset(reviews, work / "dataset", features_dir=features, k=k, split=split, seed=seed,
                                  name=name)
        return {**summary, "dataset": str(work / "dataset")}

    out = run_stage("prepare", runs_dir, inputs=inputs, config={"k": k, "split": split, "seed": seed, "name": name},
                    produce=produce)
    info = out.to_dict()
    info["info"].pop("out_dir", None)
    return info


# --- the dataset a sweep needs ----------------------------------------------------------------


def dataset_stages(config: SweepConfig, runs_dir: str | Path, *, as_tasks: bool = False,
                   on_stage: Callable[[dict[str, Any]], None] | None = None) -> str:
    """The dataset a sweep config names, built by the stages it needs; returns its folder.

    ``{path: DIR}``: that folder as it is. ``{synthetic: true, raw: false}``: the generator's
    MMRec folder. ``{synthetic: true, raw: true}``: raw catalogue -> extract (real encoders) ->
    k-core + split (k, split and seed from the synthetic dataset config). ``as_tasks``: each
    stage runs as a Ray task on the driver's node; ``on_stage`` is called with each stage's output.
    """
    from clear_core.data.synthetic import resolve_config
    from pipeline.ray_runtime import node_cpus

    spec = dict(config.dataset)
    if "path" in spec:
        return str(Path(spec["path"]).absolute())
    overrides = dict(spec.get("set") or {})
    runs_dir = str(Path(runs_dir).absolute())
    if not spec.get("raw"):
        synthetic = _run_one(synthesize, runs_dir, as_tasks=as_tasks, on_stage=on_stage, overrides=overrides, raw=False)
        return synthetic["info"]["dataset"]
    raw = _run_one(synthesize, runs_dir, as_tasks=as_tasks, on_stage=on_stage, overrides=overrides, raw=True)["info"]
    # Encoders are the only work running during extraction, so the extract task takes every CPU.
    feats = _run_one(extract, runs_dir, as_tasks=as_tasks, on_stage=on_stage, cpus=max(1.0, node_cpus()) if as_tasks else 1,
                     meta=raw["meta"], images=raw["images"])
    cfg = resolve_config(overrides)
    prepared = _run_one(prepare, runs_dir, as_tasks=as_tasks, on_stage=on_stage, reviews=raw["reviews"],
                        features=feats["info"]["features"], k=cfg["k_core"], split=cfg["split"], seed=cfg["seed"],
                        name=raw["name"])
    return prepared["info"]["dataset"]


def _run_one(stage: Callable[..., dict[str, Any]], runs_dir: str, *, as_tasks: bool,
             on_stage: Callable[[dict[str, Any]], None] | None, cpus: float = 1, **kwargs: Any) -> dict[str, Any]:
    """One dataset stage, in this process or as a Ray task, its output handed to ``on_stage``."""
    from pipeline.ray_runtime import run_as_task

    out = run_as_task(stage, runs_dir, num_cpus=cpus, **kwargs) if as_tasks else stage(runs_dir, **kwargs)
    if on_stage is not None:
        on_stage(out)
    return out
