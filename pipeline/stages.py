"""The pipeline's stages as plain functions: synthesize -> extract -> prepare -> sweep -> evaluate.

Each stage takes and returns plain values (paths, dicts), so the CLI calls it directly, a Ray
task runs it on a worker (:func:`run_as_task`) and a Kubeflow step runs it in a container.

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
from typing import Any

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


def path_fingerprint(path: str | Path) -> str:
    """Content hash of a file, or of a folder (relative names and contents of every file,
    hidden files such as caches and markers left out)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        from clear_core.errors import DataError

        raise DataError(path, "stage input not found")
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
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
) -> StageOutput:
    """Run ``produce(work_dir)`` unless a finished output with the same key exists.

    ``produce`` writes its files under ``work_dir`` and returns a JSON-able summary, which is
    kept in the manifest and returned (as ``info``) by this run and every later reuse.
    """
    key = stage_key(name, inputs, config)
    stage_root = Path(runs_dir).absolute() / name
    final = stage_root / key
    manifest = read_manifest(final)
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
        sidecar = extract_features(meta, images, work / "features", cache_dir=cache_dir, **options)
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
        inputs["features"] = path_fingerprint(features)

    def produce(work: Path) -> dict[str, Any]:
        summary = prepare_dataset(reviews, work / "dataset", features_dir=features, k=k, split=split, seed=seed,
                                  name=name)
        return {**summary, "dataset": str(work / "dataset")}

    out = run_stage("prepare", runs_dir, inputs=inputs, config={"k": k, "split": split, "seed": seed, "name": name},
                    produce=produce)
    info = out.to_dict()
    info["info"].pop("out_dir", None)
    return info


def evaluate_checkpoint(
    dataset_path: str | Path,
    checkpoint: str | Path,
    *,
    model: str,
    model_params: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    splits: tuple[str, ...] = ("valid", "test"),
) -> dict[str, Any]:
    """Metrics of a trained model on ``splits``: the final evaluation of the chosen configuration.

    ``checkpoint`` is a trainer checkpoint file (``best.pt``/``last.pt``) or a folder holding
    one (``best.pt`` preferred: the weights of the best-validation epoch)."""
    import torch

    from clear_core.data.loading import load_dataset
    from clear_core.errors import ConfigError
    from clear_core.evaluation import evaluate
    from clear_core.models import build_model
    from clear_core.trainer import BEST_NAME, CHECKPOINT_NAME, TrainConfig, resolve_device

    path = Path(checkpoint)
    if path.is_dir():
        found = [path / n for n in (BEST_NAME, CHECKPOINT_NAME) if (path / n).exists()]
        found += sorted(path.rglob(BEST_NAME))
        if not found:
            raise ConfigError(f"checkpoint {path}: no {BEST_NAME} or {CHECKPOINT_NAME} in this folder")
        path = found[0]
    if not path.exists():
        raise ConfigError(f"checkpoint {path}: file not found")
    config = TrainConfig.resolve(dict(train or {}))
    device = resolve_device(config.device)
    dataset = load_dataset(dataset_path)
    net = build_model(model, dataset, dict(model_params or {})).to(device)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
    except (RuntimeError, KeyError, OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint {path}: does not fit model {model!r} on {dataset.name!r} ({exc})") from None
    net.load_extra_state(state.get("extra", {}))
    net.eval()
    metrics = evaluate(net, dataset, splits=splits, topk=config.topk, batch_size=config.eval_batch_size)
    return {
        "checkpoint": str(path),
        "epoch": int(state.get("epoch", 0)),
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "device": str(device),
        **{s: metrics[s] for s in splits},
    }


# --- Ray --------------------------------------------------------------------------------------


def run_as_task(fn: Callable[..., Any], *args: Any, num_cpus: float = 1, num_gpus: float = 0,
                on_driver_node: bool = True, **kwargs: Any) -> Any:
    """Run a stage as a Ray task and wait for it.

    ``on_driver_node`` pins the task to the driver's node: stage outputs are folders on a local
    (or mounted) disk, which a task on another node could not hand back. Ray must be initialised.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": 1}
    if on_driver_node:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False
        )
    return ray.get(ray.remote(fn).options(**options).remote(*args, **kwargs))
