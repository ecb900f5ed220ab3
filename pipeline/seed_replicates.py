"""The selected configuration trained again on further seeds, its test figures over seeds in MLflow.

A sweep runs every point once, on the train config's seed, and selects on validation. One run of
the selected point cannot say how much of its test figure is the seed's: the evaluation protocol
reports every model over at least five seeds. With
``final_seeds: [7, 42, ...]`` in the sweep file (``--final-seeds`` on the command line), the
sweep ends by training the selected point from scratch once per seed:

* each seed is a Ray task with a trial's resources (a GPU share where the cluster has GPUs), at
  most ``max_concurrent`` at once; the dataset travels through Ray's object store, so the tasks
  run on any node;
* each seed is a child run of the sweep's parent (``clearrec.role = replica``, ``clearrec.seed``)
  with the point's resolved parameters, its per-epoch curves and its figures at its own
  best-validation epoch (``best/valid/*``, ``best/test/*``);
* the parent run gets, per metric, ``seeds/test/<metric>/mean``, ``/std``, ``/ci95_low``,
  ``/ci95_high`` and ``seeds/n``, so the MLflow UI's run table compares models by their mean over
  seeds and its interval, not by one run.

The replicas choose nothing: selection has ended on validation before the first one starts.
A seed whose child run FINISHED is not trained again when an interrupted sweep is resumed (the
parent run is reopened, and its finished replicas are read back from MLflow).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import tags

if TYPE_CHECKING:
    from clear_core.data.dataset import Dataset
    from pipeline.sweep_config import SweepConfig
    from pipeline.tracking import Tracker

log = logging.getLogger(__name__)

ROLE = "replica"
SPLITS = ("valid", "test")


@dataclass(frozen=True)
class Replica:
    """One seed's run of the selected point: figures at its own best-validation epoch."""

    seed: int
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    run_id: str = ""


def train_replica(dataset: Dataset, model: str, model_params: Mapping[str, Any], train: Mapping[str, Any],
                  seed: int) -> dict[str, Any]:
    """Train ``model`` once with ``train``'s settings and ``seed`` (a Ray task's body): its
    figures at the best-validation epoch and every epoch's curve, returned, not written, so
    that the task may run on a node that shares no disk with the driver."""
    from clear_core.trainer import TrainConfig, fit
    from pipeline.sweep import writable_copy

    # Arrays from Ray's object store are read-only; the trainer's samplers write in place.
    dataset = writable_copy(dataset)
    history: list[dict[str, Any]] = []

    def on_epoch_end(report) -> None:
        history.append({"epoch": report.epoch, "train_loss": report.train_loss,
                        "train_seconds": report.train_seconds, "eval_seconds": report.eval_seconds,
                        **{f"valid/{k}": v for k, v in report.valid.items()},
                        **{f"test/{k}": v for k, v in report.test.items()}})

    result = fit(dataset, model, dict(model_params), TrainConfig.resolve({**train, "seed": seed}),
                 on_epoch_end=on_epoch_end)
    return {"seed": seed, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "valid": dict(result.valid), "test": dict(result.test), "history": history}


def summarise(replicas: Sequence[Replica], split: str = "test") -> dict[str, dict[str, float]]:
    """Per metric of ``split``: n, mean, std and the 95 % t interval over the replicas' seeds."""
    from clear_core.seed_statistics import seed_summary

    if not replicas:
        return {}
    names = sorted(set.intersection(*(set(getattr(r, split)) for r in replicas)))
    return {name: seed_summary([getattr(r, split)[name] for r in replicas]) for name in names}


def parent_metrics(summary: Mapping[str, Mapping[str, float]], split: str = "test") -> dict[str, float]:
    """``seeds/test/recall@20/mean`` ... for the parent run (keys made MLflow-safe by the tracker);
    the interval's ends only where there is one (two seeds or more)."""
    out: dict[str, float] = {}
    for name, stats in summary.items():
        out["seeds/n"] = stats["n"]
        out[f"seeds/{split}/{name}/mean"] = stats["mean"]
        out[f"seeds/{split}/{name}/std"] = stats["std"]
        if stats["n"] > 1:
            out[f"seeds/{split}/{name}/ci95_low"] = stats["low"]
            out[f"seeds/{split}/{name}/ci95_high"] = stats["high"]
    return out


def replicas_of(runs: Iterable[Any]) -> dict[int, Replica]:
    """The FINISHED replicas among ``runs`` (a sweep parent's child runs), by seed, their
    figures back under the trainer's names (``best/test/recall_at_20`` -> ``test["recall@20"]``)."""
    out: dict[int, Replica] = {}
    for run in runs:
        if run.data.tags.get(tags.ROLE) != ROLE or run.info.status != "FINISHED":
            continue
        seed = int(run.data.tags[tags.SEED])
        metrics = run.data.metrics
        figures = {split: {} for split in SPLITS}
        for split in SPLITS:
            prefix = f"best/{split}/"
            for key, value in metrics.items():
                if key.startswith(prefix):
                    figures[split][key[len(prefix):].replace("_at_", "@")] = value
        out[seed] = Replica(seed=seed, best_epoch=int(metrics.get("best/epoch", 0)),
                            epochs_run=int(metrics.get("epochs_run", 0)), valid=figures["valid"],
                            test=figures["test"], run_id=run.info.run_id)
    return out


def finished_replicas(tracker: Tracker, parent: str) -> dict[int, Replica]:
    """The replicas of ``parent`` that FINISHED, read back from MLflow (an interrupted sweep's
    resume trains only the seeds these lack)."""
    return replicas_of(tracker.children(parent))


def replicate(config: SweepConfig, *, dataset: Dataset, model_params: Mapping[str, Any],
              train: Mapping[str, Any], tracker: Tracker, parent: str, run_tags: Mapping[str, Any],
              resolved_params: Mapping[str, Any]) -> list[Replica]:
    """Train the selected point on every seed of ``config.final_seeds`` not yet FINISHED under
    ``parent`` (Ray tasks, each a child run), and log the summary over all of them to ``parent``.

    Returns the replicas in the order of ``config.final_seeds``. A seed whose task fails marks
    its child run FAILED and raises once the others have ended, so the sweep stage is not
    recorded as finished and a re-run trains only what is missing."""
    import ray

    from pipeline.sweep import trial_resources

    done = finished_replicas(tracker, parent)
    todo = [s for s in config.final_seeds if s not in done]
    if done:
        log.info("replicas of seeds %s are in MLflow already; training %s", sorted(done), todo or "none")
    resources = trial_resources(config)
    options: dict[str, Any] = {"num_cpus": resources.pop("cpu"), "num_gpus": resources.pop("gpu", 0),
                               "max_retries": config.max_failures}
    if resources:
        options["resources"] = resources
    task = ray.remote(train_replica).options(**options)
    shared = ray.put(dataset)
    pending: dict[Any, tuple[int, str]] = {}
    failures: list[str] = []
    queue = list(todo)

    def submit(seed: int) -> None:
        run_id = tracker.start_run(
            f"{config.model} seed {seed}", parent_run_id=parent,
            tags={**run_tags, tags.ROLE: ROLE, tags.SEED: seed},
            params={**resolved_params, "train": {**dict(resolved_params.get("train", {})), "seed": seed}},
        )
        pending[task.remote(shared, config.model, model_params, train, seed)] = (seed, run_id)

    while queue or pending:
        while queue and len(pending) < config.max_concurrent:
            submit(queue.pop(0))
        ready, _ = ray.wait(list(pending), num_returns=1)
        seed, run_id = pending.pop(ready[0])
        try:
            out = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - reported with its seed once the rest have ended
            tracker.end_run(run_id, "FAILED")
            failures.append(f"seed {seed}: {type(exc).__name__}: {exc}")
            continue
        done[seed] = log_replica(tracker, run_id, out)
        log.info("replica seed %d: test %s at epoch %d", seed,
                 {k: round(v, 4) for k, v in out["test"].items()}, out["best_epoch"])
    if failures:
        raise RuntimeError("replicas of the selected configuration failed: " + "; ".join(failures))
    replicas = [done[s] for s in config.final_seeds]
    tracker.log_metrics(parent, parent_metrics(summarise(replicas)), step=0)
    tracker.log_metrics(parent, parent_metrics(summarise(replicas, "valid"), "valid"), step=0)
    return replicas


def log_replica(tracker: Tracker, run_id: str, out: Mapping[str, Any]) -> Replica:
    """A finished replica's curves and best-epoch figures into its child run, which ends FINISHED."""
    for row in out["history"]:
        tracker.log_metrics(run_id, {k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    best = {**{f"best/valid/{k}": v for k, v in out["valid"].items()},
            **{f"best/test/{k}": v for k, v in out["test"].items()},
            "best/epoch": out["best_epoch"], "epochs_run": out["epochs_run"]}
    tracker.log_metrics(run_id, best, step=out["best_epoch"])
    tracker.end_run(run_id, "FINISHED")
    return Replica(seed=out["seed"], best_epoch=out["best_epoch"], epochs_run=out["epochs_run"],
                   valid=dict(out["valid"]), test=dict(out["test"]), run_id=run_id)


def summary_lines(replicas: Sequence[Replica], metrics: Sequence[str] = ("recall@20", "ndcg@20")) -> list[str]:
    """The closing summary's lines: test mean ± std [95 % interval] over the seeds."""
    if not replicas:
        return []
    summary = summarise(replicas)
    parts = []
    for name in metrics:
        if name in summary:
            s = summary[name]
            interval = f" [{s['low']:.4f}, {s['high']:.4f}]" if s["n"] > 1 else ""
            parts.append(f"{name} {s['mean']:.4f} ± {s['std']:.4f}{interval}")
    seeds = ", ".join(str(r.seed) for r in replicas)
    return [f"  test over {len(replicas)} seeds ({seeds}), mean ± std [95 % t interval]: " + "; ".join(parts)]
