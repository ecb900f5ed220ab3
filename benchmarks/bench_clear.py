"""Speed of a CLEAR epoch against a LightGCN epoch on the same interaction graph.

The graph is Amazon Baby (../shared/data/baby: 19,445 users, 7,050 items, LATTICE 8:1:1 split).
The shared folder has no Baby features, so the features are RANDOM with the Amazon sizes:
4,096-d image and 384-d text (standard normal, float32) - the cost of CLEAR does not depend on
their values. One epoch = ``on_epoch_start`` (projection refresh + edge dropout for CLEAR) and
every BPR batch of 2,048 triples through forward, backward and Adam, as the trainer does.

The two models' epochs alternate, so that a machine's drifting speed lands on both alike.
Reports median (and fastest) seconds per epoch, the CLEAR/LightGCN ratio, and the share of the
CLEAR epoch spent in the projection refresh (encoders over all items + covariance + SVD);
``--profile`` adds a torch-profiler table with the operations and kernels per step.

    .venv/bin/python benchmarks/bench_clear.py --device cpu --epochs 3
    .venv/bin/python benchmarks/bench_clear.py --device cuda --epochs 10   # on a GPU machine
"""

from __future__ import annotations

import argparse
import contextlib
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


def train_step(model, opt, users, pos, neg, phase=lambda name: contextlib.nullcontext()) -> None:
    """One BPR step as the trainer takes it; ``phase`` names its parts (for the profiler)."""
    with phase("forward"):
        loss = model.loss(users, pos, neg)
    with phase("zero_grad"):
        opt.zero_grad(set_to_none=True)
    with phase("backward"):
        loss.backward()
    with phase("adam"):
        opt.step()


class EpochTimer:
    """One model with its optimizer, timed one epoch at a time (so models can alternate)."""

    def __init__(self, model, dataset, device, batch_size: int, lr: float) -> None:
        self.model = model.to(device)
        self.opt = adam_optimizer(self.model, lr)  # the trainer's optimizer (fused Adam where possible)
        self.train = torch.as_tensor(dataset.train, dtype=torch.long, device=device)
        self.n_items, self.device, self.batch_size = dataset.n_items, device, batch_size
        self.epoch = 0
        self.epoch_s: list[float] = []
        self.start_s: list[float] = []
        self.refresh_s: list[float] = []

    def run_epoch(self) -> None:
        model, device, train, bs = self.model, self.device, self.train, self.batch_size
        self.epoch += 1
        model.train()
        sync(device)
        t0 = time.perf_counter()
        refresh = getattr(model, "refresh_projection", None)
        if refresh is not None and refresh(self.epoch):
            # Timed on its own: the refresh is what CLEAR adds once per tau epochs.
            sync(device)
            self.refresh_s.append(time.perf_counter() - t0)
        model.on_epoch_start(self.epoch)  # the refresh is then not due again: edge dropout only
        sync(device)
        self.start_s.append(time.perf_counter() - t0)
        order = torch.randperm(len(train), device=device)
        neg = torch.randint(0, self.n_items, (len(train),), device=device)
        for s in range(0, len(train), bs):
            rows = train[order[s : s + bs]]
            train_step(model, self.opt, rows[:, 0], rows[:, 1], neg[order[s : s + bs]])
        sync(device)
        self.epoch_s.append(time.perf_counter() - t0)

    def summary(self) -> dict:
        # The first epoch includes one-off warm-up (allocator, kernels): drop it when we can.
        keep = slice(1, None) if len(self.epoch_s) > 1 else slice(None)
        return {
            "epoch_seconds": self.epoch_s,
            "median_epoch_seconds": statistics.median(self.epoch_s[keep]),
            "min_epoch_seconds": min(self.epoch_s[keep]),
            "median_epoch_start_seconds": statistics.median(self.start_s[keep]),
            "median_refresh_seconds": statistics.median(self.refresh_s[keep] or self.refresh_s) if self.refresh_s else 0.0,
        }


def profile_steps(fresh: EpochTimer, steps: int = 10) -> str:
    """Torch-profiler table of ``steps`` BPR steps (after warm-up) of a ``fresh`` timer's model,
    heaviest kernels first."""
    from torch.profiler import ProfilerActivity, profile, record_function

    model, opt, train, device, batch_size = fresh.model, fresh.opt, fresh.train, fresh.device, fresh.batch_size
    model.train()
    model.on_epoch_start(1)

    def step(i: int) -> None:
        rows = train[i * batch_size : (i + 1) * batch_size]
        neg = torch.randint(0, fresh.n_items, (len(rows),), device=device)
        train_step(model, opt, rows[:, 0], rows[:, 1], neg, phase=record_function)

    for i in range(3):
        step(i)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            step(3 + i)
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = prof.key_averages()
    # A step of these models is bound by how many operations it launches: count them.
    ops = sum(e.count for e in averages if e.key.startswith("aten::")) / steps
    kernels = sum(e.count for e in averages if e.device_type == torch.autograd.DeviceType.CUDA) / steps
    head = f"per step: {ops:.0f} aten operations, {kernels:.0f} GPU kernels and copies\n"
    return head + averages.table(sort_by=key, row_limit=30)


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
    ap.add_argument("--profile", metavar="PATH",
                    help="also write a torch-profiler table of 10 steps of each model here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dataset = amazon_sized(load_dataset(args.data), seed=0)
    clear_params = parse_overrides(args.clear_set)
    tables: list[str] = []
    models = {"lightgcn": {}, "clear": clear_params}

    def timer_of(name: str) -> EpochTimer:
        torch.manual_seed(0)
        return EpochTimer(build_model(name, dataset, models[name]), dataset, device, args.batch_size, 1e-3)

    timers = {name: timer_of(name) for name in models}
    # Epochs alternate between the models, so that drift in the machine's speed (a shared or
    # virtual machine) lands on both alike.
    for _ in range(args.epochs):
        for timer in timers.values():
            timer.run_epoch()
    results = {name: timer.summary() for name, timer in timers.items()}
    for name, res in results.items():
        print(f"{name}: median {res['median_epoch_seconds']:.3f} s/epoch, fastest {res['min_epoch_seconds']:.3f}", flush=True)
        if args.profile:
            tables.append(f"== {name} {models[name]} ==\n" + profile_steps(timer_of(name)))
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
        "clear_over_lightgcn_fastest_epochs": clear["min_epoch_seconds"] / lgcn["min_epoch_seconds"],
        "refresh_share_of_clear_epoch": clear["median_refresh_seconds"] / clear["median_epoch_seconds"],
    }
    print(json.dumps(summary, indent=2))
    if args.profile:
        Path(args.profile).write_text("\n".join(tables), encoding="utf-8")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
