"""``clearrec extract``: raw item metadata and images -> ``text_feat.npy``, ``image_feat.npy``.

``clearrec extract META --images DIR --out OUT [--text-encoder minilm]
[--image-encoder efficientnet-lite0] [--device auto] [--batch-size N] [--cache-dir DIR]``

Runs :func:`clear_core.extraction.extract_features` with a progress bar per modality and
prints the sidecar summary (counts of missing and bad inputs, encoders, timings) as JSON.
Defaults come from ``configs/extract.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.commands import DEVICE_HELP, device_arg


def _defaults() -> dict:
    """configs/extract.yaml, for the help text only (the library reads it again when it runs)."""
    from clear_core.config import config_dir, load_yaml
    from clear_core.errors import ClearrecError

    try:
        return load_yaml(config_dir() / "extract.yaml")
    except ClearrecError:
        return {}


def register(subparsers: argparse._SubParsersAction) -> None:
    d = {k: "see configs/extract.yaml" for k in ("text_encoder", "image_encoder", "device", "text_batch_size", "image_batch_size", "cache_subdir")}
    d.update(_defaults())
    parser = subparsers.add_parser(
        "extract",
        help="encode item text and images into <modality>_feat.npy (offline encoders, cached)",
        description=(
            "Encode Amazon-style item metadata (JSON or Python-literal lines, gz or plain) and an image "
            "folder into text_feat.npy and image_feat.npy (row i = asin on line i+1 of items.txt), with a "
            "features.json sidecar. Re-runs are served from a content-hash cache; a killed run resumes."
        ),
    )
    parser.add_argument("meta", metavar="META", help="item metadata: meta_<Cat>.json(.gz) with asin, title, brand, categories, description, imUrl")
    parser.add_argument("--images", metavar="DIR", help="folder of item images (imUrl file name, image_path, or <asin>.<ext>); omit for text only")
    parser.add_argument("--out", metavar="OUT", required=True, help="output folder")
    parser.add_argument("--text-encoder", metavar="NAME", help=f"registered text encoder (default {d['text_encoder']}); 'none' skips text")
    parser.add_argument("--image-encoder", metavar="NAME", help=f"registered image encoder (default {d['image_encoder']}); 'none' skips images")
    parser.add_argument("--device", type=device_arg, metavar="DEV", help=f"{DEVICE_HELP} (default {d['device']})")
    parser.add_argument("--batch-size", type=int, metavar="N", help=f"items per encoder call for both modalities (default: text {d['text_batch_size']}, image {d['image_batch_size']})")
    parser.add_argument("--cache-dir", metavar="DIR", help=f"content-hash cache folder (default OUT/{d['cache_subdir']})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


class _Bars:
    """One tqdm bar per modality, created on its first report."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict = {}

    def __call__(self, modality: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(modality)
        if bar is None:
            bar = self.bars[modality] = tqdm(total=total, desc=f"{modality:>5}", unit="item", file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def run(args: argparse.Namespace) -> int:
    from clear_core.extraction import extract_features
    from pipeline.output_paths import check_outputs, output_dir_problems

    check_outputs(output_dir_problems("--out", args.out), output_dir_problems("--cache-dir", args.cache_dir),
                  source="clearrec extract")

    bars = _Bars(enabled=not args.no_progress)
    try:
        summary = extract_features(
            args.meta,
            args.images,
            args.out,
            text_encoder=args.text_encoder,
            image_encoder=args.image_encoder,
            device=args.device,
            batch_size=args.batch_size,
            cache_dir=args.cache_dir,
            progress=bars,
        )
    finally:
        bars.close()
    brief = {
        "out": args.out,
        "items": summary["items"],
        "counts": {k: v for k, v in summary["counts"].items() if v},
        "modalities": {
            m: {k: d[k] for k in ("dim", "encoded", "from_cache", "mean_filled", "items_per_second")}
            | {"encoder": d["encoder"]["name"]}
            for m, d in summary["modalities"].items()
        },
        "device": summary["device"],
        "seconds": summary["seconds"],
    }
    json.dump(brief, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
