"""``clearrec sweep``: the product's main job, end to end.

Builds the dataset the sweep config names (for the embedded default: synthetic raw catalogue ->
feature extraction with the real encoders -> 5-core filter and split), runs the Ray Tune + Optuna
sweep with ASHA, evaluates the best configuration's checkpoint on test, writes the results table
and figures, and tracks everything in MLflow (one parent run per sweep, one child run per trial).
Each stage's output lies under ``runs/<stage>/<key>/`` and is reused while its inputs are
unchanged; re-running after an interruption resumes the sweep.

Where things go: ``MLFLOW_TRACKING_URI`` (default: ``tracking_uri`` and ``artifact_root`` in
``configs/pipeline.yaml``), ``RAY_ADDRESS`` (default: a private local Ray), Optuna study in
``optuna.db`` beside a SQLite MLflow database unless the sweep config says otherwise.

MLflow metric keys: ``valid/recall@20`` is logged as ``valid/recall_at_20`` (MLflow rejects ``@``);
each trial also logs ``best/valid/...`` and ``best/test/...`` (at its best-validation epoch).
The best model is logged on the parent run (``runs:/<parent>/model``); ``--register NAME`` also
registers it in the model registry.

Baselines through the same command: ``clearrec sweep --model lightgcn`` (search from the sweep
config's ``per_model``), logged in the same experiment so the UI compares them side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="dataset stages -> Ray Tune + Optuna sweep -> final test evaluation, tracked in MLflow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML",
                        help="sweep file merged over configs/sweeps/default.yaml (default: that file alone)")
    parser.add_argument("--model", help="model to sweep (CLEAR or a baseline: lightgcn, freedom, ...)")
    parser.add_argument("--dataset", metavar="DIR",
                        help="dataset folder (MMRec or canonical) instead of the config's dataset")
    parser.add_argument("--num-samples", type=int, help="number of trials")
    parser.add_argument("--max-concurrent", type=int, help="trials at once")
    parser.add_argument("--max-epochs", type=int, help="train.max_epochs of every trial")
    parser.add_argument("--seed", type=int, help="TPE sampler seed")
    parser.add_argument("--final-seeds", type=int, nargs="+", metavar="SEED",
                        help="then train the selected configuration again on each of these seeds and report its "
                        "test mean, std and 95%% interval over them (the protocol reports >= 5)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override any sweep field, dotted, e.g. --set scheduler.grace_period=2 "
        "--set resources.gpu=0.25 (repeatable)",
    )
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else tracking_uri in configs/pipeline.yaml)")
    parser.add_argument("--study-storage", metavar="URL", help="Optuna RDB storage URL")
    parser.add_argument("--runs-dir", metavar="DIR", help="stage outputs (default: runs)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the dataset stages in this process instead of as Ray tasks")
    parser.add_argument("--no-progress", action="store_true", help="no Tune status table")
    parser.add_argument("--register", metavar="NAME",
                        help="register the best model in the MLflow model registry under NAME")
    parser.add_argument("--json", action="store_true",
                        help="print the result (best trial, counts, MLflow ids, UI link) as JSON, not the summary")
    parser.set_defaults(func=run)


def sweep_overrides(args: argparse.Namespace) -> dict:
    from clear_core.config import parse_overrides

    overrides = parse_overrides(args.set)
    flags = {
        "model": args.model, "num_samples": args.num_samples, "max_concurrent": args.max_concurrent,
        "train.max_epochs": args.max_epochs, "seed": args.seed, "final_seeds": args.final_seeds,
    }
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if args.dataset:
        overrides["dataset"] = {"path": args.dataset}
    return overrides


def check_runs_dir(runs_dir: str | None) -> None:
    """``--runs-dir`` (or pipeline.yaml's ``runs_dir``) must be a folder we can write into,
    found before Ray starts rather than as a traceback from the first stage."""
    from pipeline.output_paths import check_outputs, output_dir_problems
    from pipeline.tracking import load_pipeline_config

    option = "--runs-dir" if runs_dir else "runs_dir (configs/pipeline.yaml)"
    check_outputs(output_dir_problems(option, runs_dir or load_pipeline_config()["runs_dir"]),
                  source="clearrec sweep")


def run(args: argparse.Namespace) -> int:
    import optuna  # noqa: F401 - imported now so that its logger can be brought into ours
    import ray  # noqa: F401

    from pipeline.console import adopt_library_loggers
    from pipeline.run import run_pipeline
    from pipeline.sweep_config import load_sweep_config

    adopt_library_loggers()

    config = load_sweep_config(args.config, sweep_overrides(args))
    check_runs_dir(args.runs_dir)

    def on_stage(out: dict) -> None:
        state = "reused" if out["reused"] else f"done in {out['seconds']:.1f}s"
        print(f"[stage {out['name']}] {state}: {out['path']}", file=sys.stderr, flush=True)

    # Tune prints its configuration box on stdout; with --json, stdout carries the JSON alone.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = run_pipeline(
            config,
            runs_dir=args.runs_dir,
            tracking_uri=args.tracking_uri,
            study_storage=args.study_storage,
            progress=not args.no_progress,
            as_tasks=not args.in_process,
            on_stage=on_stage,
            register_model=args.register,
        )
    if args.json:
        import json

        keys = ("sweep_id", "best", "counts", "final", "parent_run_id", "experiment", "experiment_id", "ui_link",
                "tracking_uri", "study_storage", "study_name", "outputs", "reused", "model_uri", "registered_uri",
                "best_trial_name", "replica_summary")
        print(json.dumps({k: result.get(k) for k in keys}, indent=2, default=str))
    else:
        print(result["summary"])
    return 0
