"""``clearrec data``: inspect, generate and prepare datasets.

* ``clearrec data stats DIR [--json]``: users, items, interactions, per-split counts, rows
  dropped (valid/test rows of users with no training row), modalities, fingerprint.
* ``clearrec data synth OUT [--raw] [--set key=value ...]``: the embedded synthetic dataset
  (MMRec layout; ``--raw`` adds an Amazon-style raw catalogue). ``OUT/.complete`` is written
  last, so Make can depend on it.
* ``clearrec data prepare REVIEWS OUT [--features DIR] [--k 5] [--split random|mmrec]
  [--seed N]``: raw Amazon 2014 reviews -> k-core -> split -> canonical folder.
* ``clearrec data canonical DIR OUT``: any dataset folder -> canonical form (no re-split).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect, generate and prepare datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    stats = sub.add_parser("stats", help="counts, splits, modalities and fingerprint of a dataset")
    stats.add_argument("dir", metavar="DIR", help="MMRec folder (<name>.inter + *_feat.npy) or canonical folder")
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.set_defaults(func=run_stats)

    synth = sub.add_parser("synth", help="generate the synthetic dataset (configs/datasets/synthetic.yaml)")
    synth.add_argument("out", metavar="OUT", help="output folder (replaced atomically)")
    synth.add_argument(
        "--raw", action="store_true",
        help="also write an Amazon-style raw catalogue (reviews.json.gz, meta.json.gz, images/)",
    )
    synth.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a field of synthetic.yaml, e.g. --set redundancy=0.9 (repeatable)",
    )
    synth.set_defaults(func=run_synth)

    prep = sub.add_parser(
        "prepare", help="filter and split: raw Amazon 2014 reviews -> k-core -> split -> canonical folder"
    )
    prep.add_argument("reviews", metavar="REVIEWS", help="reviews_<Cat>_5.json(.gz): JSON or Python-literal lines")
    prep.add_argument("out", metavar="OUT", help="canonical output folder (written atomically)")
    prep.add_argument("--features", metavar="DIR", help="output of `clearrec extract` (<modality>_feat.npy + items.txt)")
    prep.add_argument("--k", type=int, help="k of the iterative k-core filter on users and items (default 5)")
    prep.add_argument("--split", choices=("random", "mmrec"), help="random per-user 8:1:1 (default) or MMRec's rule")
    prep.add_argument("--seed", type=int, help="split seed (default 999)")
    prep.add_argument("--name", help="dataset name (default: the reviews file name)")
    prep.set_defaults(func=run_prepare)

    canon = sub.add_parser("canonical", help="write any dataset folder in canonical form (keeps its split)")
    canon.add_argument("dir", metavar="DIR")
    canon.add_argument("out", metavar="OUT")
    canon.set_defaults(func=run_canonical)


def format_stats(stats: dict) -> str:
    splits = stats["splits"]
    lines = [
        f"dataset       {stats['name']}",
        f"users         {stats['users']:,}",
        f"items         {stats['items']:,}",
        f"interactions  {stats['interactions']:,}",
        "splits        " + " / ".join(f"{splits[s]:,}" for s in ("train", "valid", "test"))
        + "  (train / valid / test)",
        f"dropped       valid {stats['dropped'].get('valid', 0):,}, test {stats['dropped'].get('test', 0):,}"
        "  (rows of users with no training row)",
        f"density       {stats['density']:.6f}",
    ]
    mods = stats["modalities"]
    lines.append(
        "modalities    " + (", ".join(f"{m} {'x'.join(map(str, s))}" for m, s in mods.items()) or "none")
    )
    lines.append(f"fingerprint   {stats['fingerprint']}")
    return "\n".join(lines)


def run_stats(args: argparse.Namespace) -> int:
    from clear_core.data.loading import load_dataset

    stats = load_dataset(args.dir).stats()
    if args.json:
        json.dump(stats, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_stats(stats))
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from clear_core.config import parse_overrides
    from clear_core.data.canonical import COMPLETE_MARKER, atomic_output_dir
    from clear_core.data.synthetic import generate_synthetic, write_mmrec_into

    overrides = parse_overrides(args.set)
    synthetic = generate_synthetic(**overrides)
    with atomic_output_dir(args.out) as tmp:
        write_mmrec_into(tmp, synthetic)
        if args.raw:
            from clear_core.data.synthetic_content import write_raw_catalogue

            write_raw_catalogue(tmp, synthetic)
        (tmp / COMPLETE_MARKER).write_text(synthetic.dataset.fingerprint + "\n", encoding="utf-8")
    stats = synthetic.dataset.stats()
    log.info(
        "wrote %s: %d users, %d items, %d interactions, fingerprint %s",
        args.out, stats["users"], stats["items"], stats["interactions"], stats["fingerprint"],
    )
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from clear_core.data.prepare import prepare_dataset

    given = (("k", args.k), ("split", args.split), ("seed", args.seed), ("name", args.name))
    kwargs = {k: v for k, v in given if v is not None}
    summary = prepare_dataset(args.reviews, args.out, features_dir=args.features, **kwargs)
    json.dump(summary, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def run_canonical(args: argparse.Namespace) -> int:
    from clear_core.data.canonical import write_canonical
    from clear_core.data.loading import load_dataset

    dataset = load_dataset(args.dir)
    fp = write_canonical(dataset, args.out, provenance={"source": str(args.dir)})
    print(fp)
    return 0
