"""Seconds per epoch of the clearrec trainer: one training epoch (negative sampling + every
BPR step) and one evaluation epoch (full ranking of validation and test), on real Baby.

It runs the trainer itself (``clear_core.trainer.fit``) for ``--epochs`` epochs plus warm-up
and reads the per-epoch timings it records, so what is timed is exactly what a training run
does. The first ``--warmup`` epochs (allocator and kernel warm-up) are left out of the median.

    python benchmarks/bench_epoch.py                    # CPU, and CUDA when present
    python benchmarks/bench_epoch.py --device cpu --threads 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clear_core.data.loading import load_dataset  # noqa: E402
from clear_core.trainer import TrainConfig, fit  # noqa: E402


def default_data() -> Path:
    shared = Path(os.environ.get("CLEARREC_SHARED", REPO.parent / "shared"))
    return shared / "data" / "baby"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def bench(data: Path, model: str, device: str, epochs: int, warmup: int, overrides: dict) -> dict:
    dataset = load_dataset(data)
    config = TrainConfig.resolve(
        {"device": device, "max_epochs": epochs + warmup, "patience": epochs + warmup, **overrides}
    )
    load_before = loadavg()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = fit(dataset, model, None, config)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    timed = result.history[warmup:]
    train = [h["train_seconds"] for h in timed]
    evals = [h["eval_seconds"] for h in timed]
    totals = [t + e for t, e in zip(train, evals, strict=True)]
    return {
        "dataset": dataset.name,
        "model": model,
        "device": result.device,
        "gpu": torch.cuda.get_device_name() if result.device.startswith("cuda") else "",
        "threads": torch.get_num_threads(),
        "epochs_timed": len(timed),
        "median_train_seconds": statistics.median(train),
        "median_eval_seconds": statistics.median(evals),
        "median_epoch_seconds": statistics.median(totals),
        "min_epoch_seconds": min(totals),
        "median_train_cpu_seconds": statistics.median(h["train_cpu_seconds"] for h in timed),
        "median_eval_cpu_seconds": statistics.median(h["eval_cpu_seconds"] for h in timed),
        "process_cpu_seconds_per_epoch": cpu / len(result.history),
        "wall_seconds_per_epoch": wall / len(result.history),
        "batch_size": config.batch_size,
        "eval_batch_size": config.eval_batch_size,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="dataset folder (default: shared Baby)")
    parser.add_argument("--model", default="lightgcn")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="all = CPU, and CUDA when available")
    parser.add_argument("--epochs", type=int, default=5, help="epochs in the median")
    parser.add_argument("--warmup", type=int, default=1, help="epochs run first and left out")
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU (default: torch's)")
    parser.add_argument("--eval-batch-size", type=int, help="users scored at once (default: train.yaml)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"{args.data} not found (set CLEARREC_SHARED or pass --data)")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            parser.error("CUDA requested but not available")
        devices.remove("cuda")
    overrides = {"eval_batch_size": args.eval_batch_size} if args.eval_batch_size else {}
    rows = [bench(args.data, args.model, d, args.epochs, args.warmup, overrides) for d in devices]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(f"# {args.model} on {rows[0]['dataset']}: median of {args.epochs} epochs after "
          f"{args.warmup} warm-up; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'device':<22} {'threads':>7} {'train s':>8} {'eval s':>8} {'epoch s':>8} {'min s':>7} "
          f"{'cpu train/eval s':>16}  loadavg before -> after")
    for r in rows:
        name = r["device"] + (f" ({r['gpu']})" if r["gpu"] else "")
        print(f"{name:<22} {r['threads']:>7} {r['median_train_seconds']:>8.3f} "
              f"{r['median_eval_seconds']:>8.3f} {r['median_epoch_seconds']:>8.3f} "
              f"{r['min_epoch_seconds']:>7.3f} "
              f"{r['median_train_cpu_seconds']:>7.3f}/{r['median_eval_cpu_seconds']:<8.3f}  "
              f"{r['loadavg_before'].split()[0]} -> {r['loadavg_after'].split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
