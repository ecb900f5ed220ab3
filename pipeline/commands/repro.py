"""``clearrec repro``: re-run the pinned configuration and compare it with the reference.

* ``clearrec repro [--config configs/repro.yaml] [--skip-real] [--device cpu|cuda]``: prints
  the table of expected vs measured; exit 0 when everything matches, 1 on drift.
* ``clearrec repro --update --reason TEXT``: rewrites ``repro/reference.json`` on purpose,
  recording the reason.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.commands import DEVICE_HELP, device_arg

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "repro", help="re-run the pinned configuration and compare every metric with the reference",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help="repro configuration (default: configs/repro.yaml)")
    parser.add_argument("--reference", metavar="PATH",
                        help="reference metrics to compare with or rewrite (default: the config's reference)")
    parser.add_argument("--out", metavar="DIR",
                        help="output folder: table.txt and report.json go here (default: the config's out_dir)")
    parser.add_argument("--device", default="cpu", type=device_arg, metavar="DEV",
                        help=f"{DEVICE_HELP}, default cpu: each kind has its own reference entry and tolerance")
    parser.add_argument("--part", action="append", choices=("train", "sweep", "real"), dest="parts",
                        help="run only this part (repeatable; default: all)")
    parser.add_argument("--skip-real", action="store_true", help="skip the real-data part")
    parser.add_argument("--update", action="store_true", help="rewrite the reference with what is measured now")
    parser.add_argument("--reason", help="why the reference changes (required with --update; recorded)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else configs/pipeline.yaml)")
    parser.add_argument("--no-track", action="store_true", help="do not log the run to MLflow")
    # The old spelling, kept working but out of the help: every command says --no-track.
    parser.add_argument("--no-tracking", action="store_true", dest="no_track", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clear_core.errors import ConfigError
    from pipeline.output_paths import check_outputs, output_dir_problems
    from pipeline.repro import load_repro_config, run_repro

    if args.update and not (args.reason or "").strip():
        raise ConfigError("--update needs --reason TEXT: say why the reference changes")
    if args.reason and not args.update:
        raise ConfigError("--reason is only used with --update")
    tracking_uri = None
    if not args.no_track:
        from pipeline.tracking import resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(args.tracking_uri)
    config = load_repro_config(args.config)
    # Before the parts run (minutes): a file where the report folder goes would lose them.
    check_outputs(output_dir_problems("--out" if args.out else "out_dir", args.out or config.out_dir),
                  source="clearrec repro")
    outcome = run_repro(
        config,
        reference_path=args.reference,
        out_dir=args.out,
        device=args.device,
        parts=args.parts,
        skip_real=args.skip_real,
        update_reason=args.reason if args.update else None,
        tracking_uri=tracking_uri,
        progress=lambda part: log.info("repro: running part %s", part),
    )
    sys.stdout.write(outcome.report)
    if outcome.run_id:
        log.info("logged to MLflow run %s (%s, tag clearrec.repro=true)", outcome.run_id, tracking_uri)
    return outcome.exit_code
