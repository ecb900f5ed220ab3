"""``clearrec train DIR --model NAME``: train one model with BPR, early-stopped on validation.

``--set key=value`` (repeatable) overrides a model parameter (``configs/models/<name>.yaml``)
or a trainer field (``configs/train.yaml``); unknown keys and wrong types are reported
together. The result JSON (resolved configuration, best epoch, valid and test metrics at the
best epoch, median seconds per epoch, dataset fingerprint, per-epoch history) goes to
``OUT/result.json`` atomically (``--out OUT``, a folder as in every clearrec command) and a
summary to stdout.

``--out`` and ``--checkpoint-dir`` are checked before the data is read, so a run never trains
and then fails to save. The summary is printed before ``result.json`` is written, so a full disk
loses the file but not the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from clear_core.atomic_io import write_json_atomic
from clear_core.config import parse_overrides
from clear_core.data.loading import load_dataset
from clear_core.errors import ConfigError
from clear_core.models import available_models, model_class, resolve_params
from clear_core.trainer import TRAIN_SCHEMA, EpochReport, TrainConfig, fit
from pipeline.commands import DEVICE_HELP, device_arg
from pipeline.output_paths import check_outputs, output_dir_problems

log = logging.getLogger(__name__)

#: The file train writes into ``--out``.
RESULT_FILE = "result.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model (BPR, early stopping on validation) and report test metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="dataset folder (MMRec layout or canonical)")
    parser.add_argument(
        "--model", required=True,
        help=f"model name ({', '.join(available_models())})",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a model parameter or a train.yaml field, e.g. --set reg_weight=1e-4 "
        "--set learning_rate=5e-4 (repeatable)",
    )
    parser.add_argument("--seed", type=int, help="random seed (train.yaml: seed)")
    parser.add_argument("--device", type=device_arg, metavar="DEV", help=f"{DEVICE_HELP} (default: train.yaml)")
    parser.add_argument("--max-epochs", type=int, help="train.yaml: max_epochs")
    parser.add_argument("--out", metavar="DIR",
                        help=f"output folder: {RESULT_FILE} goes here (atomically; created if missing)")
    parser.add_argument(
        "--checkpoint-dir", metavar="D",
        help="checkpoint every epoch into D (last.pt, best.pt); resume if D holds this run's checkpoint",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N",
        help="torch CPU threads for this process (default: torch's choice; 1 is fastest on a busy machine)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def split_overrides(
    model_name: str, pairs: list[str], flags: dict[str, object]
) -> tuple[dict, dict]:
    """``--set`` pairs -> (model params, train fields), resolved and checked; every unknown key
    or bad value of either kind is reported in one ConfigError."""
    overrides = parse_overrides(pairs)
    model_keys = set(model_class(model_name).params)
    model_over = {k: v for k, v in overrides.items() if k in model_keys}
    train_over = {k: v for k, v in overrides.items() if k in TRAIN_SCHEMA}
    problems = [
        f"--set {key}: unknown key; model {model_name!r} takes {', '.join(sorted(model_keys))}; "
        f"the trainer takes {', '.join(sorted(TRAIN_SCHEMA))}"
        for key in overrides
        if key not in model_keys and key not in TRAIN_SCHEMA
    ]
    train_over.update({k: v for k, v in flags.items() if v is not None})
    params = config = None
    try:
        params = resolve_params(model_name, model_over)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        config = TrainConfig.resolve(train_over)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, source="clearrec train")
    return params, config


def run(args: argparse.Namespace) -> int:
    flags = {"seed": args.seed, "device": args.device, "max_epochs": args.max_epochs}
    outputs = (output_dir_problems("--out", args.out, writes=RESULT_FILE)
               + output_dir_problems("--checkpoint-dir", args.checkpoint_dir))
    try:
        params, config = split_overrides(args.model, args.set, flags)
    except ConfigError as exc:
        raise ConfigError(exc.problems + outputs, source="clearrec train") from None
    check_outputs(outputs, source="clearrec train")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads: expected >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dir)
    show_bar = not args.no_progress and sys.stderr.isatty()
    bar = tqdm(total=config.max_epochs, desc=args.model, unit="epoch", disable=not show_bar)

    def on_epoch_end(report: EpochReport) -> None:
        metric = config.valid_metric
        if show_bar:
            bar.update(1)
            bar.set_postfix(loss=f"{report.train_loss:.4f}", valid=f"{report.valid[metric]:.4f}",
                            best=f"{report.best_valid:.4f}@{report.best_epoch}")
        else:
            log.info(
                "epoch %d loss %.5f valid %s %.5f test %.5f best %.5f@%d (%.2fs + %.2fs)",
                report.epoch, report.train_loss, metric, report.valid[metric],
                report.test.get(metric, float("nan")), report.best_valid, report.best_epoch,
                report.train_seconds, report.eval_seconds,
            )

    try:
        result = fit(
            dataset, args.model, params, config,
            checkpoint_dir=args.checkpoint_dir, on_epoch_end=on_epoch_end,
        )
    finally:
        bar.close()
    summary = {
        "model": result.model_name,
        "dataset": result.dataset_name,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "valid": {k: round(v, 5) for k, v in result.valid.items() if k.endswith(("@10", "@20"))},
        "test": {k: round(v, 5) for k, v in result.test.items() if k.endswith(("@10", "@20"))},
        "median_train_seconds": round(result.median_train_seconds, 4),
        "median_eval_seconds": round(result.median_eval_seconds, 4),
    }
    print(json.dumps(summary, indent=2), flush=True)
    if args.out:
        path = write_json_atomic(Path(args.out) / RESULT_FILE, result.to_json())
        log.info("wrote %s", path)
    return 0
