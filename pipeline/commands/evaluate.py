"""``clearrec evaluate CHECKPOINT --dataset DIR --model NAME``: evaluate a trained configuration.

CHECKPOINT is a trainer checkpoint (``best.pt``/``last.pt``) or a folder holding one (a trial's
checkpoint, a sweep's ``runs/sweep/<key>/best_checkpoint``, a ``clearrec train --checkpoint-dir``).
``--set key=value`` gives the model parameters it was trained with (the rest come from
``configs/models/<name>.yaml``); a checkpoint that does not fit them is refused with the reason.

Metrics (valid and test, K in 5/10/20/50) are printed as JSON, written to ``--out`` atomically,
and logged as an MLflow run in the dataset's experiment (``--no-track`` to skip), with the
checkpoint, dataset fingerprint and git commit as tags; metric keys as in ``clearrec sweep``
(``test/recall@20`` -> ``test_recall_at_20``).
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on valid and test (full ranking) and log it in MLflow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="best.pt / last.pt, or a folder holding one")
    parser.add_argument("--dataset", required=True, metavar="DIR", help="dataset folder (MMRec or canonical)")
    parser.add_argument("--model", required=True, help="model name the checkpoint was trained as")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="model parameter the checkpoint was trained with, e.g. --set redundancy_rank=8 (repeatable)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="train.yaml: device")
    parser.add_argument("--out", metavar="FILE", help="also write the metrics JSON here (atomically)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db)")
    parser.add_argument("--experiment", help="MLflow experiment (default: one per dataset)")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clear_core.config import parse_overrides
    from pipeline import tracking
    from pipeline.reporting import write_text_atomic
    from pipeline.stages import evaluate_checkpoint, path_fingerprint

    params = parse_overrides(args.set)
    train = {"device": args.device} if args.device else {}
    uri = None
    if not args.no_track:
        pcfg = tracking.load_pipeline_config()
        uri = tracking.resolve_tracking_uri(args.tracking_uri, pcfg)
        tracking.check_reachable(uri, pcfg["health_timeout_s"])  # before the work, not after
    result = evaluate_checkpoint(args.dataset, args.checkpoint, model=args.model, model_params=params, train=train)
    if uri is not None:
        pcfg = tracking.load_pipeline_config()
        experiment = args.experiment or tracking.experiment_name(result["dataset"], pcfg)
        tracker = tracking.Tracker(uri, experiment, artifact_root=pcfg["artifact_root"])
        run_id = tracker.start_run(
            "evaluate " + tracking.run_name(args.model, params),
            tags={
                tracking.TAG_ROLE: "evaluate", "clearrec.model": args.model,
                "clearrec.checkpoint": result["checkpoint"],
                "clearrec.checkpoint_sha256": path_fingerprint(result["checkpoint"]),
                "clearrec.dataset": result["dataset"],
                "clearrec.dataset_fingerprint": result["dataset_fingerprint"],
                "clearrec.git_commit": tracking.git_commit(),
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
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0
