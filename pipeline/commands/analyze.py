"""``clearrec analyze DIR``: how redundant are the dataset's modalities, and what does the
projection remove?

Without ``--checkpoint``: from the RAW features of the projected pair, the singular values of
the cross-modal covariance C before and after a projection with ``redundancy_rank`` (k) and
``projection_strength`` (lambda) (paper Figure 5), and the top-K neighbour overlap between
the two modalities against chance (Figure 1).

With ``--checkpoint CKPT`` (``last.pt`` or ``best.pt`` from ``clearrec train --checkpoint-dir``,
or its folder): the same from the trained model's encoder outputs, using the model's own
projector, plus the overlap after projection.

Writes ``analysis.json``, ``spectrum.png`` and ``neighbour_overlap.png`` into ``--out``.
``--set key=value`` overrides ``configs/analyze.yaml`` (neighbours, redundancy_rank,
projection_strength, projected_pair, chunk_size).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from clear_core.config import config_dir, load_yaml, parse_overrides, validate_fields
from clear_core.errors import ConfigError
from clear_core.param_rules import range_problems

log = logging.getLogger(__name__)

ANALYZE_SCHEMA: dict[str, Any] = {
    "neighbours": int,
    "redundancy_rank": int,
    "projection_strength": float,
    "projected_pair": (list, type(None)),
    "chunk_size": int,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="cross-modal redundancy diagnostics: covariance spectrum and neighbour overlap (JSON + PNG)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="dataset folder (MMRec layout or canonical)")
    parser.add_argument(
        "--checkpoint", metavar="CKPT",
        help="a trained model's checkpoint (last.pt/best.pt or the folder holding them)",
    )
    parser.add_argument("--out", metavar="OUTDIR", default="runs/analyze", help="output folder")
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON, not the one-line summary")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override configs/analyze.yaml: neighbours (K), redundancy_rank (k), "
        "projection_strength (lambda), projected_pair, chunk_size",
    )
    parser.set_defaults(func=run)


def resolve_settings(pairs: list[str]) -> dict[str, Any]:
    merged = {**load_yaml(config_dir() / "analyze.yaml"), **parse_overrides(pairs)}
    settings = validate_fields(merged, ANALYZE_SCHEMA, source="analyze settings")
    problems = range_problems({k: v for k, v in settings.items() if k != "projected_pair"})
    if problems:
        raise ConfigError(problems, source="analyze settings")
    return settings


def load_trained_model(checkpoint: str | Path, dataset):
    """The model a checkpoint belongs to (name and parameters from its run signature), with its
    weights; analyze needs one with modality features."""
    from clear_core.checkpoints import load_trained_model as load_checkpoint

    model, _, path = load_checkpoint(dataset, checkpoint)
    if not hasattr(model, "projection"):
        raise ConfigError(
            f"--checkpoint {path}: model {model.name!r} uses no modality features; "
            "analyze needs a multimodal model (clear, vbpr, freedom)"
        )
    return model, path


def run(args: argparse.Namespace) -> int:
    from clear_core.atomic_io import write_text_atomic
    from clear_core.data.loading import load_dataset
    from clear_core.diagnostics import dataset_diagnostics, model_diagnostics, to_jsonable
    from pipeline.output_paths import check_outputs, output_dir_problems
    from pipeline.plots import plot_neighbour_overlap, plot_spectrum

    try:
        settings = resolve_settings(args.set)
    except ConfigError as exc:
        raise ConfigError(exc.problems + output_dir_problems("--out", args.out), source="clearrec analyze") from None
    check_outputs(output_dir_problems("--out", args.out), source="clearrec analyze")
    dataset = load_dataset(args.dir)
    if len(dataset.features) < 2:
        raise ConfigError(
            f"{args.dir}: analyze needs two modalities, dataset {dataset.name!r} has "
            f"{', '.join(dataset.features) or 'none'}"
        )
    out = Path(args.out)
    if args.checkpoint:
        model, path = load_trained_model(args.checkpoint, dataset)
        result = model_diagnostics(
            model,
            neighbours=settings["neighbours"],
            redundancy_rank=settings["redundancy_rank"],
            projection_strength=settings["projection_strength"],
            chunk_size=settings["chunk_size"],
        )
        result["checkpoint"] = str(path)
        overlaps = {
            "encoded": result["neighbour_overlap"],
            "encoded + projected": result["neighbour_overlap_projected"],
        }
    else:
        result = dataset_diagnostics(
            dataset,
            redundancy_rank=settings["redundancy_rank"],
            projection_strength=settings["projection_strength"],
            neighbours=settings["neighbours"],
            projected_pair=settings["projected_pair"],
            chunk_size=settings["chunk_size"],
        )
        overlaps = {"raw features": result["neighbour_overlap"]}
    result["settings"] = settings
    a, b = result["pair"]
    plot_spectrum(result["spectrum"], out / "spectrum.png",
                  title=f"{dataset.name}: {a} x {b} cross-covariance spectrum ({result['source']})")
    plot_neighbour_overlap(overlaps, out / "neighbour_overlap.png",
                           title=f"{dataset.name}: top-{settings['neighbours']} neighbour overlap, {a} vs {b}")
    write_text_atomic(out / "analysis.json", json.dumps(to_jsonable(result), indent=2) + "\n")
    sb, sa = result["spectrum"]["before"], result["spectrum"]["after"]
    o = result["neighbour_overlap"]
    if args.json:
        print(json.dumps(to_jsonable(result), indent=2))
        return 0
    print(
        f"{dataset.name} {a} x {b} ({result['source']}): sigma_1 {sb['singular_values'][0]:.4g} -> "
        f"{sa['singular_values'][0]:.4g}, effective rank {sb['effective_rank']:.2f} -> "
        f"{sa['effective_rank']:.2f}; top-{o['neighbours']} overlap {o['mean_overlap']:.4f} "
        f"({o['ratio_to_random']:.1f}x random). Wrote {out}/analysis.json, spectrum.png, "
        "neighbour_overlap.png"
    )
    return 0
