"""``clearrec table EXPERIMENT``: every model of an MLflow experiment side by side.

One row per model from its newest finished sweep (``--sweep-name`` keeps only sweeps of that
name, e.g. ``clear-tiktok``): the configuration it selected on validation, and its test
Recall@20 and NDCG@20 as mean ± std [95 % t interval] over the sweep's ``final_seeds``. A sweep
run without ``final_seeds`` shows its single run and says so. ``--against MODEL`` adds each
model minus MODEL, paired by seed. The table goes to stdout and, with ``--out DIR``, to
``DIR/table.md`` (written atomically). ``make table`` runs the sweeps and then this.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: The file table writes into ``--out``.
TABLE_FILE = "table.md"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "table",
        help="the models of an MLflow experiment side by side: selected config, test mean and 95%% interval over seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", metavar="EXPERIMENT", help="MLflow experiment, e.g. clearrec-tiktok")
    parser.add_argument("--sweep-name", metavar="NAME", help="only sweeps of this name (the sweep file's name:)")
    parser.add_argument("--against", metavar="MODEL", help="add each model minus MODEL, paired by seed")
    parser.add_argument("--out", metavar="DIR",
                        help=f"output folder: {TABLE_FILE} goes here (atomically; created if missing)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else tracking_uri in configs/pipeline.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from clear_core.atomic_io import write_text_atomic
    from clear_core.errors import ConfigError
    from pipeline import model_table, tracking
    from pipeline.output_paths import check_outputs, output_dir_problems

    check_outputs(output_dir_problems("--out", args.out, writes=TABLE_FILE), source="clearrec table")
    pcfg = tracking.load_pipeline_config()
    uri = tracking.resolve_tracking_uri(args.tracking_uri, pcfg)
    db = tracking.sqlite_path(uri)
    if db is not None and not db.exists():
        # Opening it would create an empty store and report an empty table.
        raise ConfigError(f"tracking store {uri}: no such database file ({db}); run a sweep first or "
                          "name the store with --tracking-uri")
    tracking.check_reachable(uri, pcfg["health_timeout_s"])
    client = MlflowClient(tracking_uri=tracking.absolute_uri(uri))
    rows = model_table.collect(client, args.experiment, sweep_name=args.sweep_name)
    text = model_table.markdown(rows, against=args.against)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(args.out) / TABLE_FILE, text + "\n")
    print(text)
    return 0
