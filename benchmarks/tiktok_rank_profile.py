"""Where a trained model puts the held-out items, and how popular its top items are.

Two models with the same Recall@20 can differ on NDCG@20 when one ranks its hits lower inside
the top 20. This trains each named configuration under the protocol (the configs/train.yaml
defaults, as ``clear_tiktok_grid.py`` uses them), restores its best-validation checkpoint and reports, on the test split:

* Recall@20 and NDCG@20 (as the trainer reports them);
* how many test rows sit at rank 1, in the top 5, 10 and 20, and the median rank of a test item;
* the mean training degree (popularity) of the items each user gets at rank 1 and in the top 20;
* the best test NDCG@20 of any epoch (for the record only: the protocol reads the best-validation
  epoch), and with ``--curves FILE`` the per-epoch validation and test Recall@20 / NDCG@20,
  which tell a low ceiling from an unlucky stopping epoch.

Ranks follow the evaluator: every item is ranked and only the user's training items are masked.

    .venv/bin/python benchmarks/tiktok_rank_profile.py --seed 999 \\
        clear:'{"n_layers": 8, "redundancy_rank": 4, "projection_strength": 0.9, "reg_weight": 0.001}' \\
        freedom:'{"edge_dropout": 0.8, "reg_weight": 0.0001}' lightgcn:'{"n_layers": 2, "reg_weight": 1.0}'
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.clear_tiktok_grid import shared_dir  # noqa: E402


def profile(job: dict) -> dict:
    import numpy as np
    import torch

    from clear_core.checkpoints import BEST_NAME
    from clear_core.data.loading import load_dataset
    from clear_core.models import build_model
    from clear_core.trainer import TrainConfig, fit, resolve_params

    torch.set_num_threads(1)
    ds = load_dataset(job["data"])
    cfg = TrainConfig.resolve({"seed": job["seed"], "device": "cpu"})
    with tempfile.TemporaryDirectory() as ckpt:
        result = fit(ds, job["model"], job["params"], cfg, checkpoint_dir=ckpt)
        state = torch.load(Path(ckpt) / BEST_NAME, weights_only=False)
    model = build_model(job["model"], ds, resolve_params(job["model"], job["params"]))
    model.load_state_dict(state["model"])
    model.load_extra_state(state.get("extra") or {})
    model.eval()

    train, test = np.asarray(ds.train), np.asarray(ds.test)
    degree = np.bincount(train[:, 1], minlength=ds.n_items)
    users = np.unique(test[:, 0])
    with torch.no_grad():
        model.prepare_scoring()
        scores = model.score(torch.as_tensor(users)).float().numpy()
        model.finish_scoring()
    row = {u: r for r, u in enumerate(users)}
    seen = np.isin(train[:, 0], users)
    scores[[row[u] for u in train[seen, 0]], train[seen, 1]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    test_rows = np.array([row[u] for u in test[:, 0]])
    own = scores[test_rows, test[:, 1]]
    # Rank 0 = first: items scored strictly higher (ties count in the item's favour).
    ranks = (scores[test_rows] > own[:, None]).sum(axis=1)
    return {
        "model": job["model"], "params": job["params"], "seed": job["seed"],
        "test_recall@20": result.test["recall@20"], "test_ndcg@20": result.test["ndcg@20"],
        "test_rows": len(test),
        "at_rank_1": int((ranks < 1).sum()), "in_top_5": int((ranks < 5).sum()),
        "in_top_10": int((ranks < 10).sum()), "in_top_20": int((ranks < 20).sum()),
        "median_rank": float(np.median(ranks) + 1),
        "mean_degree_rank_1": float(degree[top[:, 0]].mean()),
        "mean_degree_top_20": float(degree[top].mean()),
        "mean_degree_test_items": float(degree[test[:, 1]].mean()),
        "best_epoch": result.best_epoch,
        "max_test_ndcg@20_any_epoch": max(e["test"]["ndcg@20"] for e in result.history),
        "curve": [
            {"epoch": e["epoch"], **{f"{split}_{m}": e[split][m] for split in ("valid", "test")
                                     for m in ("recall@20", "ndcg@20")}}
            for e in result.history
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help='MODEL:JSON-PARAMS, e.g. lightgcn:\'{"reg_weight": 1.0}\'')
    ap.add_argument("--data", type=Path, default=shared_dir() / "data" / "tiktok")
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--curves", type=Path, help="append each run's per-epoch metrics here (JSON lines)")
    args = ap.parse_args()
    jobs = []
    for spec in args.runs:
        model, _, params = spec.partition(":")
        try:
            jobs.append({"model": model, "params": json.loads(params or "{}"), "seed": args.seed,
                         "data": str(args.data)})
        except json.JSONDecodeError as exc:
            ap.error(f"{spec!r}: the parameters after '{model}:' must be a JSON object ({exc})")
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for out in pool.map(profile, jobs):
            curve = out.pop("curve")
            print(json.dumps(out, sort_keys=True), flush=True)
            if args.curves:
                with args.curves.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({**{k: out[k] for k in ("model", "params", "seed", "best_epoch")},
                                         "curve": curve}, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
