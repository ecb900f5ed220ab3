"""Speed of a CLEAR epoch against a LightGCN epoch on the same interaction graph.

The graph is Amazon Baby (../shared/data/baby: 19,445 users, 7,050 items, LATTICE 8:1:1 split).
The shared folder has no Baby features, so the features are RANDOM with the Amazon sizes:
4,096-d image and 384-d text (standard normal, float32) - the cost of CLEAR does not depend on
their values. One epoch = ``on_epoch_start`` (projection refresh + edge dropout for CLEAR) and
every BPR batch of 2,048 triples through forward, backward and Adam, as the trainer does.

Reports median seconds per epoch, the CLEAR/LightGCN ratio, and the share of the CLEAR epoch
spent in the projection refresh (encoders over all items + covariance + SVD).

    .venv/bin/python benchmarks/bench_clear.py --device cpu --epochs 3
    .venv/bin/python benchmarks/bench_clear.py --device cuda --epochs 10   # on a GPU machine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clear_core.config import parse_overrides  # noqa: E402
from clear_core.data.loading import load_dataset  # noqa: E402
from clear_core.models import build_model  # noqa: E402
from clear_core.trainer import adam_optimizer  # noqa: E402


def amazon_sized(dataset, seed: int):
    rng = np.random.default_rng(seed)
    feats = {
        "image": rng.standard_normal((dataset.n_items, 4096), dtype=np.float32),
        "text": rng.standard_normal((dataset.n_items, 384), dtype=np.float32),
    }
    return dataclasses.replace(dataset, features=feats)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epochs(model, dataset, device, epochs: int, batch_size: int, lr: float) -> dict:
    model = model.to(device)
    opt = adam_optimizer(model, lr)  # the trainer's optimizer (fused Adam where possible)
    train = torch.as_tensor(dataset.train, dtype=torch.long, device=device)
    epoch_s, start_s, refresh_s = [], [], []
    for epoch in range(1, epochs + 1):
        model.train()
        sync(device)
        t0 = time.perf_counter()
        proj = getattr(model, "projection", None)
        if proj is not None and proj.needs_refresh(epoch):
            # Timed on its own: the refresh is what CLEAR adds once per tau epochs.
            with torch.no_grad():
                a, b = model.projected_pair
                proj.refresh(model.encoders[a](model.raw(a)), model.encoders[b](model.raw(b)), epoch)
            sync(device)
            refresh_s.append(time.perf_counter() - t0)
        model.on_epoch_start(epoch)  # the refresh is then not due again: edge dropout only
        sync(device)
        t1 = time.perf_counter()
        start_s.append(t1 - t0)
        order = torch.randperm(len(train), device=device)
        neg = torch.randint(0, dataset.n_items, (len(train),), device=device)
        for s in range(0, len(train), batch_size):
            rows = train[order[s : s + batch_size]]
            loss = model.loss(rows[:, 0], rows[:, 1], neg[order[s : s + batch_size]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        epoch_s.append(time.perf_counter() - t0)
    # The first epoch includes one-off warm-up (allocator, kernels): drop it when we can.
    keep = slice(1, None) if epochs > 1 else slice(None)
    return {
        "epoch_seconds": epoch_s,
        "median_epoch_seconds": statistics.median(epoch_s[keep]),
        "median_epoch_start_seconds": statistics.median(start_s[keep]),
        "median_refresh_seconds": statistics.median(refresh_s[keep] or refresh_s) if refresh_s else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(os.environ.get("CLEARREC_SHARED", ROOT.parent / "shared")) / "data" / "baby"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--out", help="also write the figures as JSON here")
    ap.add_argument("--clear-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a CLEAR parameter, e.g. trainable_features=false (YAML value)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dataset = amazon_sized(load_dataset(args.data), seed=0)
    results = {}
    clear_params = parse_overrides(args.clear_set)
    for name, params in (("lightgcn", {}), ("clear", clear_params)):
        torch.manual_seed(0)
        model = build_model(name, dataset, params)
        results[name] = time_epochs(model, dataset, device, args.epochs, args.batch_size, 1e-3)
        print(f"{name}: {results[name]['median_epoch_seconds']:.3f} s/epoch", flush=True)
    clear, lgcn = results["clear"], results["lightgcn"]
    summary = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "dataset": {"name": dataset.name, "users": dataset.n_users, "items": dataset.n_items,
                    "train_pairs": int(len(dataset.train)), "features": "random 4096-d image + 384-d text"},
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lightgcn": lgcn,
        "clear": clear,
        "clear_overrides": clear_params,
        "clear_over_lightgcn": clear["median_epoch_seconds"] / lgcn["median_epoch_seconds"],
        "refresh_share_of_clear_epoch": clear["median_refresh_seconds"] / clear["median_epoch_seconds"],
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
