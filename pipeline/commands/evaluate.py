"""``clearrec evaluate CHECKPOINT --dataset DIR --model NAME``: evaluate a trained configuration.

CHECKPOINT is a trainer checkpoint (``best.pt``/``last.pt``) or a folder holding one (a trial's
checkpoint, a ``clearrec train --checkpoint-dir``). ``--set key=value`` gives the model parameters
it was trained with (the rest come from ``configs/models/<name>.yaml``); a checkpoint that does
not fit them is refused with the reason.

CHECKPOINT may also be a finished sweep's output folder (``runs/sweep/<key>``, printed at the end of
``clearrec sweep``): its best checkpoint, model, parameters and dataset are then taken from it
(``--dataset``/``--model``/``--set`` still override).

Metrics (valid and test, K in 5/10/20/50) are printed as JSON, written to ``OUT/metrics.json``
atomically (``--out OUT``, a folder as in every clearrec command), and logged as an MLflow run in the dataset's experiment (``--no-track`` to skip), with the
checkpoint, dataset fingerprint and git commit as tags; metric keys as in ``clearrec sweep``
(``test/recall@20`` -> ``test/recall_at_20``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from clear_core.errors import ConfigError
from pipeline.commands import DEVICE_HELP, device_arg

log = logging.getLogger(__name__)

#: The file evaluate writes into ``--out``.
METRICS_FILE = "metrics.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on valid and test (full ranking) and log it in MLflow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="best.pt / last.pt, or a folder holding one")
    parser.add_argument("--dataset", metavar="DIR", help="dataset folder (MMRec or canonical)")
    parser.add_argument("--model", help="model name the checkpoint was trained as")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="model parameter the checkpoint was trained with, e.g. --set redundancy_rank=8 (repeatable)",
    )
    parser.add_argument("--device", type=device_arg, metavar="DEV", help=f"{DEVICE_HELP} (default: train.yaml)")
    parser.add_argument("--out", metavar="DIR",
                        help=f"output folder: {METRICS_FILE} goes here (atomically; created if missing)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else tracking_uri in configs/pipeline.yaml)")
    parser.add_argument("--experiment", help="MLflow experiment (default: one per dataset)")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    parser.set_defaults(func=run)


def from_sweep_folder(path: str) -> dict | None:
    """What a finished sweep's output folder says about its best trial, or None for a checkpoint."""
    folder = Path(path)
    outcome_file = folder / "outcome.json"
    if not (folder.is_dir() and outcome_file.exists()):
        return None
    outcome = json.loads(outcome_file.read_text(encoding="utf-8"))
    if "model" not in outcome:
        raise ConfigError(f"{outcome_file}: written by an older clearrec; give --dataset, --model and --set")
    return {
        "checkpoint": str(folder / "best_checkpoint"),
        "dataset_path": outcome["dataset_path"],
        "model": outcome["model"],
        "best_model_params": outcome["best_model_params"],
        "best_train": {k: v for k, v in outcome["best_train"].items() if k != "device"},
        "params": outcome["best"]["params"],
    }


def run(args: argparse.Namespace) -> int:
    from clear_core.atomic_io import write_text_atomic
    from clear_core.config import parse_overrides
    from pipeline import tags, tracking
    from pipeline.checkpoint_evaluation import evaluate_checkpoint
    from pipeline.output_paths import output_dir_problems
    from pipeline.provenance import git_commit
    from pipeline.stages import path_fingerprint

    params = parse_overrides(args.set)
    train = {"device": args.device} if args.device else {}
    checkpoint, dataset, model = args.checkpoint, args.dataset, args.model
    sweep = from_sweep_folder(args.checkpoint)
    if sweep is not None:
        checkpoint = sweep["checkpoint"]
        dataset = dataset or sweep["dataset_path"]
        model = model or sweep["model"]
        params = {**sweep["best_model_params"], **params}
        train = {**sweep["best_train"], **train}
    missing = [f"--{name}: required (or give a sweep output folder)" for name, value in
               (("dataset", dataset), ("model", model)) if not value]
    missing += output_dir_problems("--out", args.out, writes=METRICS_FILE)
    if missing:
        raise ConfigError(missing)
    uri = None
    if not args.no_track:
        pcfg = tracking.load_pipeline_config()
        uri = tracking.resolve_tracking_uri(args.tracking_uri, pcfg)
        tracking.check_reachable(uri, pcfg["health_timeout_s"])  # before the work, not after
    result = evaluate_checkpoint(dataset, checkpoint, model=model, model_params=params, train=train)
    if uri is not None:
        pcfg = tracking.load_pipeline_config()
        experiment = args.experiment or tracking.experiment_name(result["dataset"], pcfg)
        tracker = tracking.Tracker(uri, experiment, artifact_root=pcfg["artifact_root"])
        run_id = tracker.start_run(
            "evaluate " + tracking.run_name(model, parse_overrides(args.set) if sweep is None else
                                            {**sweep["params"], **parse_overrides(args.set)}),
            tags={
                tags.ROLE: "evaluate", tags.MODEL: model,
                tags.CHECKPOINT: result["checkpoint"],
                tags.CHECKPOINT_SHA256: path_fingerprint(result["checkpoint"]),
                tags.DATASET: result["dataset"],
                tags.DATASET_FINGERPRINT: result["dataset_fingerprint"],
                tags.GIT_COMMIT: git_commit(),
            },
            params={"model": result["model_params"]},
        )
        try:
            for split in ("valid", "test"):
                tracker.log_metrics(run_id, {f"{split}/{k}": v for k, v in result[split].items()},
                                    step=result["epoch"])
        except BaseException:
            tracker.end_run(run_id, "FAILED")
            raise
        tracker.end_run(run_id, "FINISHED")
        result["mlflow"] = {"tracking_uri": uri, "experiment": experiment, "run_id": run_id}
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text, flush=True)  # before metrics.json: a full disk then loses the file, not the metrics
    if args.out:
        write_text_atomic(Path(args.out) / METRICS_FILE, text + "\n")
    return 0
