"""Throughput of the feature-extraction stage (items/s, text and image) with the real encoders.

Builds the synthetic raw catalogue (titles/descriptions and 64x64 PNGs, see
clear_core/data/synthetic_content.py) for ``--items`` items and, for each modality alone, runs
``extract_features`` with a fresh cache, then again to time the cached re-run. Encoder throughput counts encoder calls only
(``encode_seconds`` in the sidecar, image decoding and preprocessing included for images);
end-to-end seconds include model loading.

    .venv/bin/python benchmarks/bench_extract.py --items 500 --device cpu
    .venv/bin/python benchmarks/bench_extract.py --items 5000 --device cuda --batch-size 256

Prints one JSON object; paste the figures into benchmarks/RESULTS.md with the date and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clear_core.data.synthetic import generate_synthetic  # noqa: E402
from clear_core.data.synthetic_content import write_raw_catalogue  # noqa: E402
from clear_core.extraction import extract_features  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500, help="catalogue size (synthetic items)")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda")
    parser.add_argument("--batch-size", type=int, default=None, help="both modalities (default: configs/extract.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--modality", choices=("text", "image", "both"), default="both",
                        help="which encoder to time (default: both, one after the other)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    n_users = max(50, args.items)
    synthetic = generate_synthetic(n_items=args.items, n_users=n_users, n_interactions=n_users * 10)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        raw = Path(tmp) / "raw"
        write_raw_catalogue(raw, synthetic)
        # One modality per run, so each gets its own wall and CPU time (CPU time tells apart a
        # slow machine from an oversubscribed one).
        for modality, switches in (("text", {"image_encoder": "none"}), ("image", {"text_encoder": "none"})):
            if args.modality not in (modality, "both"):
                continue
            out = Path(tmp) / f"out-{modality}"
            kwargs = dict(device=args.device, batch_size=args.batch_size, **switches)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            first = extract_features(raw / "meta.json.gz", raw / "images", out, **kwargs)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            wall0 = time.perf_counter()
            second = extract_features(raw / "meta.json.gz", raw / "images", out, **kwargs)
            d = first["modalities"][modality]
            runs[modality] = {
                "dim": d["dim"],
                "items_per_second": d["items_per_second"],
                "encode_seconds": d["encode_seconds"],
                "cold_run_seconds": round(wall, 2),
                "cold_run_cpu_seconds": round(cpu, 2),
                "cached_rerun_seconds": round(time.perf_counter() - wall0, 2),
                "cached_rerun_encoded": second["modalities"][modality]["encoded"],
                "device": first["device"],
            }
    device = next(iter(runs.values()))["device"]
    result = {
        "items": args.items,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "batch_size": args.batch_size or "configs/extract.yaml",
        "modalities": runs,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
