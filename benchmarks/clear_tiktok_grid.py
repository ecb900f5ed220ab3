"""CLEAR vs FREEDOM vs CLEAR without projection vs ID-only LightGCN on TikTok (image + audio).

Phase 1 (first seed): every grid point of every method; phase 2 (more seeds): the
configuration of each method with the best VALIDATION Recall@20 in phase 1. Each finished run
is appended as one JSON line to ``--out`` (so a run cut short still leaves what it finished),
and the summary (mean and std over seeds of test Recall@20 / NDCG@20 of the selected
configurations) is printed by ``--summarise``.

    nice -n 10 .venv/bin/python benchmarks/clear_tiktok_grid.py --out runs/tiktok_grid.jsonl
    .venv/bin/python benchmarks/clear_tiktok_grid.py --out runs/tiktok_grid.jsonl --summarise
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The grid. Small on purpose: CPU only, on a shared 2-core machine, before a deadline.
GRID: dict[str, list[dict]] = {
    "clear": [
        {"redundancy_rank": 4, "projection_strength": 0.9},
        {"redundancy_rank": 8, "projection_strength": 0.9},
    ],
    "clear_noproj": [{"projection": "none"}],
    "freedom": [{}],
    "lightgcn": [{}],
    # Extension, not the paper's model: an item-ID channel propagated and fused like a modality.
    "clear_id": [{"redundancy_rank": 4, "projection_strength": 0.9, "id_channel": True},
                 {"redundancy_rank": 8, "projection_strength": 0.9, "id_channel": True}],
    "clear_id_noproj": [{"projection": "none", "id_channel": True}],
}
DEFAULT_METHODS = ["clear", "clear_noproj", "freedom", "lightgcn"]
MODEL_OF = {"clear": "clear", "clear_id": "clear", "clear_id_noproj": "clear", "clear_noproj": "clear", "freedom": "freedom", "lightgcn": "lightgcn"}


def shared_dir() -> Path:
    return Path(os.environ.get("CLEARREC_SHARED", ROOT.parent / "shared"))


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from clear_core.data.loading import load_dataset
    from clear_core.trainer import TrainConfig, fit

    ds = load_dataset(job["data"])
    cfg = TrainConfig.resolve({**job["train"], "seed": job["seed"], "device": "cpu"})
    t0 = time.perf_counter()
    tag = f"{job['method']} {json.dumps(job['params'])} seed {job['seed']}"

    def progress(report) -> None:
        logging.getLogger("grid").info(
            "%s epoch %d loss %.4f valid R@20 %.4f test R@20 %.4f (train %.1fs, eval %.1fs)",
            tag, report.epoch, report.train_loss, report.valid["recall@20"],
            report.test.get("recall@20", float("nan")), report.train_seconds, report.eval_seconds,
        )

    result = fit(ds, MODEL_OF[job["method"]], job["params"], cfg, on_epoch_end=progress)
    return {
        **{k: job[k] for k in ("method", "params", "seed", "train")},
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "valid": result.valid,
        "test": result.test,
        "median_train_seconds": result.median_train_seconds,
        "wall_seconds": time.perf_counter() - t0,
    }


def _append(out: Path, row: dict) -> None:
    with out.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")


def _done(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def _key(method: str, params: dict, seed: int) -> str:
    return json.dumps([method, params, seed], sort_keys=True)


def run_phase(jobs: list[dict], out: Path, workers: int) -> None:
    done = {_key(r["method"], r["params"], r["seed"]) for r in _done(out)}
    todo = [j for j in jobs if _key(j["method"], j["params"], j["seed"]) not in done]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for row in pool.map(run_one, todo):
            _append(out, row)
            logging.info("%s %s seed %d: valid R@20 %.4f test R@20 %.4f (%d epochs)",
                         row["method"], row["params"], row["seed"], row["valid"]["recall@20"],
                         row["test"]["recall@20"], row["epochs_run"])


def selected(rows: list[dict], first_seed: int) -> dict[str, dict]:
    """Per method, the grid point with the best validation Recall@20 on the first seed."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["seed"] != first_seed:
            continue
        if r["method"] not in best or r["valid"]["recall@20"] > best[r["method"]]["valid"]["recall@20"]:
            best[r["method"]] = r
    return {m: r["params"] for m, r in best.items()}


def summarise(rows: list[dict], first_seed: int) -> str:
    chosen = selected(rows, first_seed)
    lines = ["| method | selected params | seeds | valid R@20 | test R@20 | test N@20 | epochs (best/run) |",
             "|---|---|---|---|---|---|---|"]
    for method in GRID:
        if method not in chosen:
            continue
        runs = [r for r in rows if r["method"] == method and r["params"] == chosen[method]]

        def ms(key, split, runs=runs):
            vals = [r[split][key] for r in runs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.mean(vals):.4f} ± {sd:.4f}"

        eps = ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in runs)
        lines.append(
            f"| {method} | {json.dumps(chosen[method]) if chosen[method] else 'defaults'} | "
            f"{', '.join(str(r['seed']) for r in runs)} | {ms('recall@20', 'valid')} | "
            f"{ms('recall@20', 'test')} | {ms('ndcg@20', 'test')} | {eps} |"
        )
    lines.append("")
    lines.append("All grid points (first seed):")
    lines.append("")
    lines.append("| method | params | valid R@20 | test R@20 | test N@20 |")
    lines.append("|---|---|---|---|---|")
    for r in rows:
        if r["seed"] == first_seed:
            lines.append(
                f"| {r['method']} | {json.dumps(r['params'])} | {r['valid']['recall@20']:.4f} | "
                f"{r['test']['recall@20']:.4f} | {r['test']['ndcg@20']:.4f} |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "tiktok_grid.jsonl")
    ap.add_argument("--data", type=Path, default=shared_dir() / "data" / "tiktok")
    ap.add_argument("--seeds", type=int, nargs="+", default=[999, 2024])
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--learning-rate", type=float, default=0.005)
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(GRID))
    ap.add_argument("--summarise", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.summarise:
        print(summarise(_done(args.out), args.seeds[0]))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    train = {"max_epochs": args.max_epochs, "patience": args.patience,
             "batch_size": args.batch_size, "learning_rate": args.learning_rate}
    base = {"data": str(args.data), "train": train}
    phase1 = [{**base, "method": m, "params": p, "seed": args.seeds[0]} for m in args.methods for p in GRID[m]]
    run_phase(phase1, args.out, args.workers)
    chosen = selected(_done(args.out), args.seeds[0])
    phase2 = [{**base, "method": m, "params": p, "seed": s} for s in args.seeds[1:] for m, p in chosen.items()]
    run_phase(phase2, args.out, args.workers)
    print(summarise(_done(args.out), args.seeds[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
