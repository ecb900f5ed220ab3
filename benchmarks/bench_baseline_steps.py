"""Seconds per training epoch of the Table-2 baselines, from a few timed BPR steps.

A whole epoch of the heavier baselines takes minutes on a shared 2-core machine, so this times
``--steps`` training steps (after one warm-up step) exactly as the trainer takes them (the
model built by ``build_model``, the trainer's Adam, uniform negatives, ``on_epoch_start`` first)
and scales the median step to the epoch's ``ceil(n_train / batch_size)`` steps. Wall time and
this process's CPU time are both reported: on a loaded machine the wall time mostly measures the
neighbours. Evaluation is left out (it is the same full-ranking pass for every model).

    python benchmarks/bench_baseline_steps.py ../shared/data/tiktok --models lightgcn bm3 mgcn
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clear_core.data.loading import load_dataset  # noqa: E402
from clear_core.models import build_model  # noqa: E402
from clear_core.sampling import NegativeSampler  # noqa: E402
from clear_core.trainer import adam_optimizer  # noqa: E402


def training_batches(dataset, count: int, batch_size: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """``count`` training batches ``(users, positives, negatives)`` as the trainer draws them:
    training pairs drawn uniformly, one uniform negative each (:class:`NegativeSampler`)."""
    generator = torch.Generator().manual_seed(seed)
    sampler = NegativeSampler(dataset.train, dataset.n_items)
    pairs = torch.as_tensor(dataset.train, dtype=torch.long)
    batches = []
    for _ in range(count):
        rows = pairs[torch.randint(0, len(pairs), (batch_size,), generator=generator)]
        users, pos = rows[:, 0].contiguous(), rows[:, 1].contiguous()
        batches.append((users, pos, sampler.sample(users, generator)))
    return batches


def load_average() -> list[str] | str:
    """The machine's 1, 5 and 15-minute load averages, printed beside every timing table."""
    return Path("/proc/loadavg").read_text().split()[:3] if os.path.exists("/proc/loadavg") else "?"


def time_steps(dataset, model_name: str, steps: int, batch_size: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    model = build_model(model_name, dataset, {})
    optimizer = adam_optimizer(model, 1e-3)
    model.train()
    model.on_epoch_start(1)
    walls, cpus = [], []
    for step, (users, pos, neg) in enumerate(training_batches(dataset, steps + 1, batch_size, seed)):
        c0, t0 = time.process_time(), time.perf_counter()
        loss = model.loss(users, pos, neg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        c1, t1 = time.process_time(), time.perf_counter()
        if step:  # the first step warms the allocator up
            walls.append(t1 - t0)
            cpus.append(c1 - c0)
    n_steps = math.ceil(len(dataset.train) / batch_size)
    return {
        "wall_step": statistics.median(walls),
        "cpu_step": statistics.median(cpus),
        "wall_epoch": statistics.median(walls) * n_steps,
        "cpu_epoch": statistics.median(cpus) * n_steps,
        "steps_per_epoch": n_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--models", nargs="+", default=["lightgcn", "bm3", "mgcn", "lgmrec", "mentor", "mmssl"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=999)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    print(f"# {dataset.name}: {len(dataset.train)} train pairs, torch threads {torch.get_num_threads()}, "
          f"load {load_average()}")
    print("| model | wall s / step | CPU s / step | wall s / epoch (est.) | CPU s / epoch (est.) |")
    print("|---|---|---|---|---|")
    for name in args.models:
        r = time_steps(dataset, name, args.steps, args.batch_size, args.seed)
        print(f"| {name} | {r['wall_step']:.2f} | {r['cpu_step']:.2f} | {r['wall_epoch']:.0f} | {r['cpu_epoch']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
