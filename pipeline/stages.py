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


def find_checkpoint(checkpoint: str | Path) -> Path:
    """The trainer checkpoint file in ``checkpoint`` (a file, or a folder holding ``best.pt``,
    preferred: the weights of the best-validation epoch, else ``last.pt``)."""
    from clear_core.errors import ConfigError
    from clear_core.trainer import BEST_NAME, CHECKPOINT_NAME

    path = Path(checkpoint)
    if path.is_dir():
        found = [path / n for n in (BEST_NAME, CHECKPOINT_NAME) if (path / n).exists()]
        found += sorted(path.rglob(BEST_NAME)) + sorted(path.rglob(CHECKPOINT_NAME))
        if not found:
            raise ConfigError(f"checkpoint {path}: no {BEST_NAME} or {CHECKPOINT_NAME} in this folder")
        return found[0]
    if not path.exists():
        raise ConfigError(f"checkpoint {path}: file not found")
    return path


def load_trained_model(dataset: Any, checkpoint: str | Path, *, model: str,
                       model_params: Mapping[str, Any] | None, device: Any) -> tuple[Any, int, Path]:
    """A model built from ``dataset`` with the weights of ``checkpoint``: (model, epoch, file)."""
    import torch

    from clear_core.errors import ConfigError
    from clear_core.models import build_model

    path = find_checkpoint(checkpoint)
    net = build_model(model, dataset, dict(model_params or {})).to(device)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
    except (RuntimeError, KeyError, OSError, ValueError, EOFError) as exc:
        raise ConfigError(
            f"checkpoint {path}: does not fit model {model!r} on {dataset.name!r} ({str(exc).splitlines()[0]})"
        ) from None
    net.load_extra_state(state.get("extra", {}))
    net.eval()
    return net, int(state.get("epoch", 0)), path


def evaluate_checkpoint(
    dataset_path: str | Path,
    checkpoint: str | Path,
    *,
    model: str,
    model_params: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    splits: tuple[str, ...] = ("valid", "test"),
    spectrum: bool = False,
) -> dict[str, Any]:
    """Metrics of a trained model on ``splits``: the final evaluation of the chosen configuration.

    ``spectrum``: also the cross-modal covariance spectrum before/after projection of the
    trained model's encoded features (Figure 5), for models that project (CLEAR)."""
    from clear_core.data.loading import load_dataset
    from clear_core.evaluation import evaluate
    from clear_core.models import resolve_params
    from clear_core.trainer import TrainConfig, resolve_device

    config = TrainConfig.resolve(dict(train or {}))
    device = resolve_device(config.device)
    find_checkpoint(checkpoint)  # a wrong path is reported before the dataset is read
    dataset = load_dataset(dataset_path)
    net, epoch, path = load_trained_model(dataset, checkpoint, model=model, model_params=model_params,
                                          device=device)
    metrics = evaluate(net, dataset, splits=splits, topk=config.topk, batch_size=config.eval_batch_size)
    out: dict[str, Any] = {
        "checkpoint": str(path),
        "epoch": epoch,
        "model": model,
        "model_params": resolve_params(model, model_params),
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "device": str(device),
        **{s: metrics[s] for s in splits},
    }
    if spectrum and hasattr(net, "projection"):
        import torch

        from clear_core.diagnostics import model_diagnostics, to_jsonable
        from clear_core.errors import ClearrecError

        try:
            with torch.no_grad():
                diag = model_diagnostics(net, neighbours=min(10, dataset.n_items - 1))
            out["spectrum"] = to_jsonable(diag["spectrum"])
        except (ClearrecError, RuntimeError, AttributeError) as exc:
            # A figure must not sink an evaluation that has already succeeded.
            log.warning("no spectrum for %s: %s", model, exc)
    return out


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
    if on_driver_node and _node_cpus() < num_cpus:
        # A head node started with num-cpus 0 accepts no task: pinned there, it would wait forever.
        log.warning("the driver's node offers fewer than %s CPUs to Ray; running %s in the driver",
                    num_cpus, getattr(fn, "__name__", fn))
        return fn(*args, **kwargs)
    if on_driver_node:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False
        )
    return ray.get(ray.remote(fn).options(**options).remote(*args, **kwargs))


# --- the whole pipeline ---------------------------------------------------------------------


def dataset_stages(config: Any, runs_dir: str | Path, *, as_tasks: bool = False,
                   on_stage: Callable[[dict[str, Any]], None] | None = None) -> str:
    """The dataset a sweep config names, built by the stages it needs; returns its folder.

    ``{path: DIR}``: that folder as it is. ``{synthetic: true, raw: false}``: the generator's
    MMRec folder. ``{synthetic: true, raw: true}``: raw catalogue -> extract (real encoders) ->
    k-core + split (k, split and seed from the synthetic dataset config)."""
    from clear_core.data.synthetic import resolve_config

    spec = dict(config.dataset)
    if "path" in spec:
        return str(Path(spec["path"]).absolute())
    note = on_stage or (lambda out: None)

    def call(fn: Callable[..., dict[str, Any]], *args: Any, cpus: float = 1, **kwargs: Any) -> dict[str, Any]:
        out = run_as_task(fn, *args, num_cpus=cpus, **kwargs) if as_tasks else fn(*args, **kwargs)
        note(out)
        return out

    overrides = dict(spec.get("set") or {})
    runs_dir = str(Path(runs_dir).absolute())
    if not spec.get("raw"):
        return call(synthesize, runs_dir, overrides=overrides, raw=False)["info"]["dataset"]
    raw = call(synthesize, runs_dir, overrides=overrides, raw=True)["info"]
    feats = call(extract, runs_dir, meta=raw["meta"], images=raw["images"],
                 cpus=max(1.0, _node_cpus()) if as_tasks else 1)
    cfg = resolve_config(overrides)
    prepared = call(prepare, runs_dir, reviews=raw["reviews"], features=feats["info"]["features"],
                    k=cfg["k_core"], split=cfg["split"], seed=cfg["seed"], name=raw["name"])
    return prepared["info"]["dataset"]


def _node_cpus() -> float:
    """The CPUs Ray may use on the driver's node (encoders are the only work running during
    extraction, so the extract task takes them all)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    for entry in ray.nodes():
        if entry.get("NodeID") == node:
            return float(entry.get("Resources", {}).get("CPU", 0.0))
    return 0.0


def _fetch_checkpoint(uri: str, dest: Path, endpoint_url: str | None) -> Path:
    """A trial checkpoint as a local folder (downloaded when it lies on S3)."""
    if not uri.startswith("s3://"):
        return Path(uri)
    import pyarrow.fs as pafs

    from pipeline.storage import s3_filesystem

    dest.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(uri[len("s3://"):], str(dest), source_filesystem=s3_filesystem(endpoint_url),
                    destination_filesystem=pafs.LocalFileSystem())
    return dest


def run_pipeline(
    config: Any,
    *,
    runs_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    study_storage: str | None = None,
    progress: bool = True,
    as_tasks: bool = True,
    on_stage: Callable[[dict[str, Any]], None] | None = None,
    register_model: str | None = None,
) -> dict[str, Any]:
    """dataset stages -> sweep (Tune + Optuna, tracked in MLflow) -> final evaluation -> reports.

    Checks the tracking backend first (an unreachable server fails here, before any work).
    Returns the sweep stage's summary: best trial, counts, final evaluation, MLflow ids, output
    paths and the closing summary text. A finished sweep with the same inputs and its MLflow
    parent run still present is reused without starting a trial. Ray is started (or joined at
    ``RAY_ADDRESS``) for the dataset stages when ``as_tasks``, else only when the sweep runs.
    """
    import yaml

    from clear_core.data.loading import load_dataset
    from clear_core.models import resolve_params
    from clear_core.trainer import TrainConfig
    from pipeline import mlflow_logging, reporting, tracking
    from pipeline.optuna_search import rdb_storage
    from pipeline.provenance import git_commit
    from pipeline.ray_runtime import init_ray
    from pipeline.storage import check_reachable, resolve_storage
    from pipeline.sweep import run_sweep, sweep_id_for

    pcfg = tracking.load_pipeline_config()
    uri = tracking.resolve_tracking_uri(tracking_uri, pcfg)
    # Everything remote is probed before any stage: an unreachable server or bucket is reported
    # now, with its address, not after minutes of feature extraction.
    tracking.check_reachable(uri, pcfg["health_timeout_s"])
    check_reachable(resolve_storage(config.storage.path, config.storage.endpoint_url))
    runs_dir = Path(runs_dir or pcfg["runs_dir"]).absolute()
    study = (study_storage or config.study.storage
             or tracking.default_study_storage(uri, pcfg["study_storage"]))
    rdb_storage(study)

    probe_ray_address(os.environ.get("RAY_ADDRESS"))
    try:
        ray_started = init_ray() if as_tasks else False
    except (ConnectionError, RuntimeError) as exc:
        from clear_core.errors import ConfigError

        raise ConfigError(
            f"RAY_ADDRESS={_ray_address()}: cannot join the Ray cluster ({str(exc).splitlines()[0]}); a cluster "
            "with token authentication also needs RAY_AUTH_MODE=token and its token "
            "(RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None
    try:
        dataset_path = dataset_stages(config, runs_dir, as_tasks=as_tasks, on_stage=on_stage)
        dataset = load_dataset(dataset_path)
        sweep_id = sweep_id_for(config, dataset)
        experiment = config.tracking.experiment or tracking.experiment_name(dataset.name, pcfg)
        tracker = tracking.Tracker(uri, experiment, artifact_root=pcfg["artifact_root"])
        commit = git_commit()
        common_tags = {
            "clearrec.git_commit": commit, "mlflow.source.git.commit": commit,
            "clearrec.dataset": dataset.name, "clearrec.dataset_fingerprint": dataset.fingerprint,
            "clearrec.seed": config.seed, "clearrec.model": config.model, TAG_SWEEP_ID_KEY: sweep_id,
        }

        def resolve_trial(trial_config: Mapping[str, Any]) -> dict[str, Any]:
            model_params, train = config.split_params(trial_config)
            train = {**train, "valid_metric": config.metric.split("/", 1)[1]}
            return {"model": resolve_params(config.model, model_params),
                    "train": asdict(TrainConfig.resolve(train))}

        def parent_alive(info: Mapping[str, Any]) -> bool:
            found = tracker.find_run(**{TAG_SWEEP_ID_KEY: sweep_id, "clearrec.role": "sweep"})
            return found is not None and found.info.run_id == info.get("parent_run_id") \
                and found.info.status == "FINISHED"

        data_input = mlflow_logging.dataset_input(dataset, dataset_path)

        def produce(work: Path) -> dict[str, Any]:
            resolved = config.to_dict()
            config_file = work / "sweep_config.yaml"
            config_file.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
            # The best trial's configuration is logged when it is known; the search space is an artifact.
            parent_params = mlflow_logging.sweep_params(config)
            parent_tags = {**common_tags, "optuna.storage": study, "ray.address": _ray_address(),
                           "clearrec.tracking_uri": uri}
            with tracker.parent_run(f"{config.model} sweep {config.name}", sweep_id=sweep_id,
                                    tags=parent_tags, params=parent_params) as parent:
                tracker.log_artifact(parent, config_file)
                tracker.log_artifact(parent, mlflow_logging.write_search_space(config, work / "search_space.json"))
                mlflow_logging.log_dataset(tracker.client, parent, data_input)
                callback = tracking.MLflowTrialCallback(
                    tracker, parent, model=config.model, resolve=resolve_trial,
                    tags=common_tags, search_keys=list(config.search),
                    dataset_input=data_input, modalities=dataset.modalities,
                )
                # A progress bar (done / pruned / failed, best so far) instead of Tune's status table.
                from pipeline.console import SweepProgress

                bar = [SweepProgress(config.num_samples, config.metric, config.mode)] if progress else []
                outcome = run_sweep(config, dataset_path, study_storage=study, callbacks=[callback, *bar],
                                    progress=False)
                if callback.interrupted:
                    raise KeyboardInterrupt(f"sweep {sweep_id} interrupted")
                tracker.set_tags(parent, {"optuna.study_name": outcome.study_name,
                                          "clearrec.storage_path": outcome.storage_path,
                                          "clearrec.best_trial": outcome.best.trial_id})
                return _finish_sweep(config, outcome, dataset_path, work, tracker, parent, uri,
                                     resolve_trial=resolve_trial, modalities=dataset.modalities,
                                     register_model=register_model)

        sweep_out = run_stage(
            "sweep", runs_dir,
            inputs={"dataset": dataset.fingerprint},
            config={"sweep": config.fingerprint(), "tracking": uri, "experiment": experiment},
            produce=produce, still_valid=parent_alive,
        )
    finally:
        if ray_started:
            import ray

            ray.shutdown()
    info = dict(sweep_out.info)
    info.update(reused=sweep_out.reused, outputs=sweep_out.path, dataset_path=dataset_path,
                experiment=experiment, experiment_id=tracker.experiment_id, tracking_uri=uri)
    view = mlflow_logging.share_runs_view(
        tracker.client, tracker.experiment_id, parent_run_id=info["parent_run_id"],
        param_columns=[f"{spec.target}.{spec.param}" for spec in config.search.values()])
    link = mlflow_logging.ui_link(uri, tracker.experiment_id, view)
    info["ui_link"] = link
    info["summary"] = reporting.closing_summary(
        model=config.model, dataset=dataset.name, best=info["best"], final_test=info["final"].get("test"),
        counts=info["counts"], experiment=experiment, experiment_id=tracker.experiment_id,
        parent_run_id=info["parent_run_id"], tracking_uri=uri, study_storage=info["study_storage"],
        study_name=info["study_name"], outputs=sweep_out.path, resumed=info.get("resumed", False),
        ui_link=link, trial_name=info.get("best_trial_name"),
    ) + ("\n(reused: inputs unchanged since the last run)" if sweep_out.reused else "")
    if not sweep_out.reused:
        mlflow_logging.set_description(tracker.client, info["parent_run_id"], info["summary"])
    return info


TAG_SWEEP_ID_KEY = "clearrec.sweep_id"


def probe_ray_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds when ``RAY_ADDRESS`` names a host:port where nothing listens: ``ray.init``
    would otherwise retry for many minutes before giving up."""
    import socket
    from urllib.parse import urlparse

    from clear_core.errors import ConfigError

    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"RAY_ADDRESS={address}: cannot join the Ray cluster (nothing answers at "
            f"{parsed.hostname}:{parsed.port}: {exc.strerror or exc}); start it or unset RAY_ADDRESS "
            "for a local Ray"
        ) from None


def _ray_address() -> str:
    return os.environ.get("RAY_ADDRESS") or "local"


def _finish_sweep(config: Any, outcome: Any, dataset_path: str, work: Path, tracker: Any, parent: str,
                  uri: str, *, resolve_trial: Callable[[Mapping[str, Any]], Mapping[str, Any]],
                  modalities: list[str], register_model: str | None = None) -> dict[str, Any]:
    """After the trials: final evaluation of the best checkpoint, tables, figures, artifacts."""
    from pipeline import mlflow_logging, reporting

    best = outcome.best
    model_params, train = config.split_params(best.params)
    train = {**train, "valid_metric": config.metric.split("/", 1)[1]}
    final: dict[str, Any] = {}
    if best.checkpoint:
        local = _fetch_checkpoint(best.checkpoint, work / "downloaded_checkpoint", config.storage.endpoint_url)
        final = evaluate_checkpoint(dataset_path, local, model=config.model, model_params=model_params,
                                    train=train, spectrum=True)
        ckpt_dir = work / "best_checkpoint"
        ckpt_dir.mkdir(exist_ok=True)
        shutil.copy2(final["checkpoint"], ckpt_dir / Path(final["checkpoint"]).name)
        final["checkpoint"] = str(ckpt_dir / Path(final["checkpoint"]).name)
        shutil.rmtree(work / "downloaded_checkpoint", ignore_errors=True)
        tracker.log_artifact(parent, ckpt_dir, "best_checkpoint")
    else:
        log.warning("best trial %s left no checkpoint; no final evaluation", best.trial_id)
    tracker.log_metrics(parent, {f"best/valid/{k}": v for k, v in best.valid.items()}, step=best.best_epoch or 0)
    tracker.log_metrics(parent, {f"best/test/{k}": v for k, v in best.test.items()}, step=best.best_epoch or 0)
    tracker.log_metrics(parent, {"best/epoch": best.best_epoch or 0}, step=best.best_epoch or 0)
    record = mlflow_logging.record_sweep_end(
        tracker, parent, config=config, outcome=outcome, final=final, train=train, work=work,
        best_params=resolve_trial(best.params), modalities=modalities, dataset_path=dataset_path,
        register_model=register_model,
    )

    rows = reporting.results_rows(outcome.trials, metric=config.metric, mode=config.mode, selected=best.trial_id)
    for path in reporting.write_results_table(rows, work):
        tracker.log_artifact(parent, path)
    mlflow_logging.log_results_table(tracker.client, parent, rows)
    heatmap = reporting.plot_heatmap(outcome.trials, work / "heatmap_recall_lambda_k.png")
    if heatmap is not None:
        tracker.log_artifact(parent, heatmap)
    if final.get("spectrum"):
        from pipeline.plots import plot_spectrum

        spectrum = plot_spectrum(final["spectrum"], work / "spectrum_best_trial.png",
                                 title=f"best trial {best.trial_id}: cross-modal spectrum before/after projection")
        tracker.log_artifact(parent, spectrum)
    counts = {s: sum(1 for t in outcome.trials if t.status == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    outcome_json = {
        "sweep_id": outcome.sweep_id,
        "model": config.model,
        "dataset_path": str(dataset_path),
        "best_model_params": model_params,
        "best_train": train,
        "best": asdict(best),
        "trials": [asdict(t) for t in outcome.trials],
        "counts": counts,
        "final": final,
        "parent_run_id": parent,
        "study_storage": outcome.study_storage,
        "study_name": outcome.study_name,
        "storage_path": outcome.storage_path,
        "resumed": outcome.resumed,
        "tracking_uri": uri,
        **record,
    }
    (work / "outcome.json").write_text(json.dumps(outcome_json, indent=2, default=str) + "\n", encoding="utf-8")
    tracker.log_artifact(parent, work / "outcome.json")
    tracker.set_tags(parent, {f"clearrec.trials_{k.lower()}": v for k, v in counts.items()})
    mlflow_logging.prune_after_sweep(config, outcome)
    return outcome_json
