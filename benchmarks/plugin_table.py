"""The plug-in table: every multimodal baseline alone, + CLEAR's projection and + MRdIB, paired by seed.

For each base model (``--models``; default every registered model that reads modality features,
except ``clear``, which has the projection built in):

* ``<model>``: the points of its grid (``BASE_GRID``; a model without one runs its YAML defaults,
  or the points a ``--base-grid`` JSON file gives it) on every ``--select-seeds`` seed; the point
  with the best validation Recall@20 averaged over those seeds is selected;
* ``<model>+clear`` and ``<model>+mrdib``: the base's selected point plus each of the plug-in's
  settings (``CLEAR_GRID``, ``MRDIB_GRID``: six points each, so neither plug-in gets the larger
  search), selected the same way once every base point has run;
* the three selected points on the remaining ``--seeds``.

Selection reads validation only; test is reported, never used to choose. The report gives, per
base, mean ± std of test Recall@20 and NDCG@20 of each selected point, and each plug-in minus its
base paired by seed with a 95 % t interval, both over the held-out seeds only (``--seeds`` minus
``--select-seeds``): on a selection seed the plug-in's figure is the best of six tries and the
base's (with a one-point grid) of one, so pairing there would favour the plug-in. The training protocol is
``configs/train.yaml`` (MMRec's, ../shared/docs/protocol.md) unless overridden. Each run is
appended as one JSON line to ``--out`` as soon as it finishes, so an interrupted table resumes
where it stopped; each run in progress keeps its last epoch in ``<out>.checkpoints/`` (removed
once its row is written), so a killed run resumes from that epoch, with the metrics an unbroken
run gives, instead of from the first. With ``--tracking-uri`` the table is mirrored into MLflow
as well (experiment ``--experiment``): a run per row under one parent per table, whose
description is the summary below, so the plug-in rows sit in the UI beside the sweeps'
(``mirror_to_mlflow``).

    nice -n 10 .venv/bin/python benchmarks/plugin_table.py --out runs/plugin_table.jsonl
    .venv/bin/python benchmarks/plugin_table.py --out runs/plugin_table.jsonl --summarise \
        [--tracking-uri sqlite:///runs/mlruns.db]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from clear_tiktok_grid import GRID, PLUG_GRID, shared_dir  # noqa: E402

from clear_core.seed_statistics import mean_interval  # noqa: E402

#: Base grids: the CLEAR study's own for VBPR and FREEDOM (benchmarks/clear_tiktok_grid.py).
BASE_GRID: dict[str, list[dict]] = {"vbpr": GRID["vbpr"], "freedom": GRID["freedom"]}
#: CLEAR's projection: k and lambda around the base's point (the grid of the CLEAR study).
CLEAR_GRID: list[dict] = PLUG_GRID
#: MRdIB: the paper's best point for MGCN (alpha_1 KL 5e-3, alpha_2 redundancy 5e-2, alpha_3
#: unique 5e-3) and one step along each weight within the paper's grid {1e-4, 1e-3, 5e-3, 1e-2,
#: 5e-2}: a star of six points around it (the paper searches all 125).
MRDIB_STAR = [(5e-3, 5e-2, 5e-3), (1e-3, 5e-2, 5e-3), (1e-2, 5e-2, 5e-3), (5e-3, 1e-2, 5e-3),
              (5e-3, 5e-2, 1e-3), (5e-3, 5e-2, 5e-2)]
MRDIB_GRID: list[dict] = [
    {"mrdib": True, "mrdib_kl_weight": kl, "mrdib_redundancy_weight": red, "mrdib_unique_weight": uni,
     "mrdib_redundancy_estimator": "mine", "mrdib_synergy_weight": 0.0}
    for kl, red, uni in MRDIB_STAR
]
PLUG_INS = {"clear": CLEAR_GRID, "mrdib": MRDIB_GRID}
METRICS = ("recall@20", "ndcg@20")


def default_models() -> list[str]:
    from clear_core.models import available_models, model_class

    return [m for m in available_models() if model_class(m).needs_features and m != "clear"]


def method_name(model: str, plug: str | None) -> str:
    return model if plug is None else f"{model}+{plug}"


def split_method(method: str) -> tuple[str, str | None]:
    model, _, plug = method.partition("+")
    return model, plug or None


# --- running ------------------------------------------------------------------------------------


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)  # --workers processes share the cores
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from clear_core.data.loading import load_dataset
    from clear_core.trainer import TrainConfig, fit

    ds = load_dataset(job["data"])
    cfg = TrainConfig.resolve({**job["train"], "seed": job["seed"], "device": "cpu"})
    t0 = time.perf_counter()
    result = fit(ds, split_method(job["method"])[0], job["params"], cfg,
                 checkpoint_dir=job.get("checkpoint_dir"))
    return {
        **{k: job[k] for k in ("method", "params", "seed", "train")},
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "valid": result.valid,
        "test": result.test,
        "median_train_seconds": result.median_train_seconds,
        "wall_seconds": time.perf_counter() - t0,
        "git_commit": job["git_commit"],
    }


def _key(method: str, params: dict, seed: int) -> str:
    return json.dumps([method, params, seed], sort_keys=True)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _content(row: dict) -> str:
    """A digest of what a row measured (and with which code), to tell a re-trained row apart."""
    return _digest({k: row.get(k) for k in ("valid", "test", "best_epoch", "epochs_run", "git_commit")})


def done_rows(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def checkpoints_of(out: Path) -> Path:
    """Where the runs in progress of the table recorded in ``out`` keep their last epoch."""
    return out.with_name(out.name + ".checkpoints")


def run_jobs(jobs: list[dict], out: Path, workers: int, run=run_one) -> None:
    """Train each job not yet in ``out`` (``run``: one job to its row, in a worker process)."""
    done = {_key(r["method"], r["params"], r["seed"]) for r in done_rows(out)}
    # A run's folder is named by all that defines it, so another table's run never resumes there.
    todo = [{**j, "checkpoint_dir": str(checkpoints_of(out) / _digest(
                {k: j[k] for k in ("data", "train", "method", "params", "seed")}))}
            for j in jobs if _key(j["method"], j["params"], j["seed"]) not in done]
    failed = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # Each row is written the moment its run ends, not in submission order: a table stopped
        # while a long run is still going keeps the shorter ones that ended after it started.
        running = {pool.submit(run, job): job for job in todo}
        for future in as_completed(running):
            try:
                row = future.result()
            except Exception as exc:  # the others' rows are still written; the table stops after
                logging.error("a run of the table failed: %r", exc)
                failed.append(exc)
                continue
            with out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
            shutil.rmtree(running[future]["checkpoint_dir"], ignore_errors=True)
            logging.info("%s %s seed %d: valid R@20 %.4f test R@20 %.4f (best epoch %d of %d)",
                         row["method"], row["params"], row["seed"], row["valid"]["recall@20"],
                         row["test"]["recall@20"], row["best_epoch"], row["epochs_run"])
    if failed:
        raise failed[0]


# --- selection (validation only) ----------------------------------------------------------------


def mean_valid(rows: list[dict], method: str, params: dict, seeds: list[int]) -> float | None:
    """Validation Recall@20 of one point averaged over ``seeds`` (None until all have run)."""
    vals = {r["seed"]: r["valid"]["recall@20"] for r in rows
            if r["method"] == method and r["params"] == params and r["seed"] in seeds}
    return statistics.mean(vals.values()) if len(vals) == len(set(seeds)) else None


def points(rows: list[dict], method: str, select_seeds: list[int], base_grid: dict[str, list[dict]]) -> list[dict]:
    """The points a method searches: its grid for a base; for a plug-in, the base's chosen point
    (:func:`decided`) with each of the plug-in's settings (none until the base's is known)."""
    model, plug = split_method(method)
    grid = base_grid.get(model, [{}])
    if plug is None:
        return list(grid)
    base = decided(rows, model, grid, select_seeds)
    return [] if base is None else [{**base, **setting} for setting in PLUG_INS[plug]]


def decided(rows: list[dict], method: str, candidates: list[dict], select_seeds: list[int]) -> dict | None:
    """The point whose held-out seeds (and, for a base, whose plug-ins) can run now: the only
    candidate of a one-point grid before any run, else what :func:`select` chose. Only the
    schedule uses this shortcut; the summary still reports a point once its selection runs exist."""
    if len(candidates) == 1:
        return candidates[0]
    return select(rows, method, candidates, select_seeds)


def ready_jobs(rows: list[dict], models: list[str], plug_ins: list[str], select_seeds: list[int],
               held_out: list[int], base_grid: dict[str, list[dict]]) -> list[tuple[str, dict, int]]:
    """Every ``(method, params, seed)`` not yet in ``rows`` whose point is known from them: each
    method's points on the selection seeds, and its decided point on the held-out seeds. Running
    these and asking again until nothing is left is the whole table, with no stage waiting on
    runs it does not need (a one-point base's held-out seeds and plug-ins start at once)."""
    done = {_key(r["method"], r["params"], r["seed"]) for r in rows}
    todo: list[tuple[str, dict, int]] = []
    for model in models:
        for plug in (None, *plug_ins):
            method = method_name(model, plug)
            candidates = points(rows, method, select_seeds, base_grid)
            todo += [(method, p, s) for s in select_seeds for p in candidates]
            chosen = decided(rows, method, candidates, select_seeds)
            if chosen is not None:
                todo += [(method, chosen, s) for s in held_out]
    return [job for job in todo if _key(*job) not in done]


def select(rows: list[dict], method: str, candidates: list[dict], select_seeds: list[int]) -> dict | None:
    """The candidate with the best mean validation Recall@20; None while any has not run on
    every selection seed (a partial grid must not select). Equal scores (the same hit count on
    the same users) go to the first candidate in grid order, so a re-run selects the same point."""
    scored = [(mean_valid(rows, method, p, select_seeds), p) for p in candidates]
    if not scored or any(score is None for score, _ in scored):
        return None
    return max(scored, key=lambda sp: sp[0])[1]


# --- summary arithmetic -------------------------------------------------------------------------


def paired(plugged: list[dict], base: list[dict]) -> dict | None:
    """Plug-in minus base on test, paired by seed: per metric the differences, their mean and
    95 % interval, and on how many seeds the plug-in is ahead. None without a common seed."""
    by_seed = {r["seed"]: r for r in base}
    pairs = sorted(((r, by_seed[r["seed"]]) for r in plugged if r["seed"] in by_seed), key=lambda ab: ab[0]["seed"])
    if not pairs:
        return None
    out: dict = {"seeds": [a["seed"] for a, _ in pairs]}
    for metric in METRICS:
        diffs = [a["test"][metric] - b["test"][metric] for a, b in pairs]
        out[metric] = {"diffs": diffs, "interval": mean_interval(diffs), "ahead": sum(d > 0 for d in diffs)}
    return out


def fmt_interval(interval: tuple[float, float, float]) -> str:
    mean, low, high = interval
    return f"{mean:+.4f}" if math.isnan(low) else f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def mean_sd(vals: list[float]) -> str:
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.4f}"


def selected(rows: list[dict], model: str, select_seeds: list[int],
             base_grid: dict[str, list[dict]]) -> dict[str | None, dict]:
    """Per method of ``model`` (None = the base, else the plug-in's name) whose selection is
    complete: the point validation chose, its runs on the selection seeds and on the held-out
    seeds (sorted by seed). A method with no held-out run yet is left out."""
    out: dict[str | None, dict] = {}
    for plug in (None, *PLUG_INS):
        method = method_name(model, plug)
        chosen = select(rows, method, points(rows, method, select_seeds, base_grid), select_seeds)
        if chosen is None:
            continue
        mine = [r for r in rows if r["method"] == method and r["params"] == chosen]
        held_out = sorted((r for r in mine if r["seed"] not in select_seeds), key=lambda r: r["seed"])
        if held_out:
            out[plug] = {"method": method, "params": chosen, "held_out": held_out,
                         "selecting": [r for r in mine if r["seed"] in select_seeds]}
    return out


def summarise(rows: list[dict], models: list[str], select_seeds: list[int], base_grid: dict[str, list[dict]]) -> str:
    return summary_text({model: selected(rows, model, select_seeds, base_grid) for model in models})


def summary_text(chosen: dict[str, dict[str | None, dict]]) -> str:
    """The Markdown table of :func:`selected`'s result per model, and each plug-in minus its base."""
    lines = ["| method | selected params | held-out seeds | valid R@20 (selection seeds) | test R@20 | test N@20 |",
             "|---|---|---|---|---|---|"]
    diffs = ["| base | plug-in | seeds | ΔR@20 mean [95 % CI] | ΔN@20 mean [95 % CI] | ahead R@20 / N@20 |",
             "|---|---|---|---|---|---|"]
    for model, per_model in chosen.items():
        for sel in per_model.values():
            rs = sel["held_out"]
            lines.append(f"| {sel['method']} | {json.dumps(sel['params'], sort_keys=True)} | {len(rs)} | "
                         f"{mean_sd([r['valid']['recall@20'] for r in sel['selecting']])} | "
                         f"{mean_sd([r['test']['recall@20'] for r in rs])} | "
                         f"{mean_sd([r['test']['ndcg@20'] for r in rs])} |")
        for plug in PLUG_INS:
            if plug in per_model and None in per_model and (
                    p := paired(per_model[plug]["held_out"], per_model[None]["held_out"])):
                n = len(p["seeds"])
                diffs.append(f"| {model} | +{plug} | {n} | {fmt_interval(p['recall@20']['interval'])} | "
                             f"{fmt_interval(p['ndcg@20']['interval'])} | "
                             f"{p['recall@20']['ahead']}/{n} / {p['ndcg@20']['ahead']}/{n} |")
    return "\n".join([*lines, "", "Each plug-in minus its base, paired by held-out seed (test; t interval over seeds):", "", *diffs])


# --- MLflow: the table where the other results are compared --------------------------------------


def mirror_to_mlflow(rows: list[dict], *, tracking_uri: str, experiment: str, data: Path, models: list[str],
                     select_seeds: list[int], base_grid: dict[str, list[dict]]) -> str:
    """Log the table into MLflow and return its parent run's id.

    The parent (one per data, models and selection seeds, reopened on every call) carries the
    summary as its description, ``plugin_table.md`` and a results table, and each plug-in's paired
    difference from its base as metrics (``<model>/<plug-in>/delta_recall_at_20`` with ``_low``,
    ``_high``). Each row of ``--out`` becomes a child run once (keyed by method, point and seed, so
    a resumed table logs nothing twice), with the row's point as ``model.*`` parameters, its
    best-validation-epoch figures as ``best/valid/*`` and ``best/test/*`` and the commit that
    trained it; the runs of every selected point are tagged ``clearrec.selected=true``, so the UI
    can filter to the table's rows. The ``--out`` file stays the record: this only mirrors it, so
    a child whose row has changed (re-trained) or left the file is deleted, and a changed row is
    logged again.
    """
    from pipeline import tags
    from pipeline.mlflow_logging import log_results_table, metric_key, set_description
    from pipeline.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment)
    table_id = _digest({"data": str(data), "models": models, "select_seeds": select_seeds})
    parent = tracker.start_run(f"plug-in table: {' '.join(models)}",
                               tags={tags.ROLE: "plugin_table", tags.PLUGIN_TABLE: table_id, tags.DATASET: str(data)},
                               resume_tags={tags.PLUGIN_TABLE: table_id})
    children = {run.data.tags.get(tags.PLUGIN_RUN_KEY): run for run in tracker.children(parent)}
    contents = {_key(r["method"], r["params"], r["seed"]): _content(r) for r in rows}
    for key, run in list(children.items()):
        if contents.get(key) != run.data.tags.get(tags.PLUGIN_RUN_CONTENT):
            tracker.client.delete_run(run.info.run_id)
            del children[key]
    chosen = {model: selected(rows, model, select_seeds, base_grid) for model in models}
    chosen_keys = {_key(r["method"], r["params"], r["seed"]) for per_model in chosen.values()
                   for sel in per_model.values() for r in (*sel["selecting"], *sel["held_out"])}
    for row in rows:
        model, plug = split_method(row["method"])
        if model not in models:
            continue
        key = _key(row["method"], row["params"], row["seed"])
        flag = "true" if key in chosen_keys else "false"
        if key in children:
            if children[key].data.tags.get(tags.SELECTED) != flag:
                tracker.set_tags(children[key].info.run_id, {tags.SELECTED: flag})
            continue
        run_id = tracker.start_run(
            f"{row['method']} seed {row['seed']}", parent_run_id=parent,
            tags={tags.ROLE: "plugin_run", tags.MODEL: row["method"], tags.BASE_MODEL: model,
                  tags.PLUG_IN: plug or "none", tags.SEED: row["seed"], tags.PLUGIN_RUN_KEY: key,
                  tags.PLUGIN_RUN_CONTENT: contents[key], tags.SELECTED: flag,
                  tags.GIT_COMMIT: row.get("git_commit", "unknown")},
            params={"model": row["params"], "train": row["train"], "seed": row["seed"]})
        # Tracker.log_metrics makes the names MLflow-safe (recall@20 -> recall_at_20).
        metrics = {f"best/{split}/{m}": v for split in ("valid", "test") for m, v in row[split].items()}
        metrics.update({"best/epoch": row["best_epoch"], "epochs_run": row["epochs_run"],
                        "time/train_seconds": row.get("median_train_seconds"),
                        "time/wall_seconds": row.get("wall_seconds")})
        tracker.log_metrics(run_id, metrics, step=0)
        tracker.end_run(run_id, "FINISHED")
    summary = summary_text(chosen)
    differences: dict[str, float] = {}
    table_rows = []
    for model, per_model in chosen.items():
        for plug, sel in per_model.items():
            held = sel["held_out"]
            table_rows.append({"method": sel["method"], "selected": json.dumps(sel["params"], sort_keys=True),
                               "held_out_seeds": len(held),
                               **{f"test_{metric_key(m)}": statistics.mean(r["test"][m] for r in held) for m in METRICS}})
            if plug is not None and None in per_model and (p := paired(held, per_model[None]["held_out"])):
                for m in METRICS:
                    mean, low, high = p[m]["interval"]
                    name = f"{model}/{plug}/delta_{metric_key(m)}"
                    differences.update({name: mean, f"{name}_low": low, f"{name}_high": high})
    tracker.log_metrics(parent, differences, step=0)  # a one-seed interval's NaN ends is dropped
    set_description(tracker.client, parent, summary)
    tracker.client.log_text(parent, summary + "\n", "plugin_table.md")
    log_results_table(tracker.client, parent, table_rows)
    tracker.end_run(parent, "FINISHED")
    return parent


# --- driver -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from clear_core.trainer import TrainConfig

    protocol = TrainConfig.resolve()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "plugin_table.jsonl")
    ap.add_argument("--data", type=Path, default=shared_dir() / "data" / "tiktok")
    ap.add_argument("--models", nargs="+", default=None, help="base models (default: every multimodal baseline)")
    ap.add_argument("--base-grid", type=Path, default=None,
                    help="JSON {model: [points]} replacing BASE_GRID for the models it names")
    ap.add_argument("--select-seeds", type=int, nargs="+", default=[999, 2024])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 42, 123], help="further seeds for the selected points")
    ap.add_argument("--max-epochs", type=int, default=protocol.max_epochs)
    ap.add_argument("--patience", type=int, default=protocol.patience)
    ap.add_argument("--batch-size", type=int, default=protocol.batch_size)
    ap.add_argument("--learning-rate", type=float, default=protocol.learning_rate)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plug-ins", nargs="+", choices=sorted(PLUG_INS), default=list(PLUG_INS),
                    help="which plug-ins to run (default: both); the summary shows whatever --out holds")
    ap.add_argument("--summarise", action="store_true", help="only print the table of what --out holds")
    ap.add_argument("--tracking-uri", default=None,
                    help="also mirror the table into this MLflow store after each stage (and with --summarise)")
    ap.add_argument("--experiment", default="clearrec-plugins", help="MLflow experiment of the mirror")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    models = args.models or default_models()
    base_grid = dict(BASE_GRID)
    if args.base_grid is not None:
        base_grid.update(json.loads(args.base_grid.read_text(encoding="utf-8")))

    def mirror() -> None:
        if args.tracking_uri:
            parent = mirror_to_mlflow(done_rows(args.out), tracking_uri=args.tracking_uri, experiment=args.experiment,
                                      data=args.data, models=models, select_seeds=args.select_seeds,
                                      base_grid=base_grid)
            logging.info("mirrored into MLflow: experiment %s, run %s", args.experiment, parent)

    if args.summarise:
        mirror()
        print(summarise(done_rows(args.out), models, args.select_seeds, base_grid))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from pipeline.provenance import git_commit

    # Each row names the code that trained it: a table resumed after a change of the models
    # must not mix two versions silently (the MLflow mirror shows the commit of every run).
    common = {"data": str(args.data), "git_commit": git_commit(ROOT),
              "train": {"max_epochs": args.max_epochs, "patience": args.patience,
                        "batch_size": args.batch_size, "learning_rate": args.learning_rate}}

    held_out = [s for s in args.seeds if s not in args.select_seeds]
    # Bases, then each plug-in from its base's selected point, then the selected points on the
    # held-out seeds: each round runs everything the rows so far determine.
    while todo := ready_jobs(done_rows(args.out), models, args.plug_ins, args.select_seeds, held_out, base_grid):
        run_jobs([{**common, "method": m, "params": p, "seed": s} for m, p, s in todo], args.out, args.workers)
        mirror()
    print(summarise(done_rows(args.out), models, args.select_seeds, base_grid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
