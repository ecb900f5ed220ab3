"""The comparison table of an experiment: every model's latest finished sweep, its selected
configuration and its test figures over seeds, read from MLflow.

A row per model (``clearrec.model``) from the newest FINISHED sweep parent run of the experiment
(optionally only sweeps named ``sweep_name``). A sweep with ``final_seeds`` gives its test mean,
std and 95 % t interval over the seeds (:mod:`pipeline.seed_replicates`); one without gives its
selected trial's single run, marked as such, because one run is not a figure to rank models by.
Rows are sorted by mean test Recall@20; each also gives the median seconds of a training epoch
over its sweep's runs, as the trainer timed them (with the sweep's concurrency). With ``against``, each model is also compared with that
model paired by seed (the seeds both ran): the mean difference of each metric and its 95 %
interval, and on how many seeds the row's model is ahead. Selection happened inside each sweep,
on validation; this table reads test only to report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clear_core.errors import ConfigError
from pipeline import tags

METRICS = ("recall@20", "ndcg@20")
#: The trainer's seconds per training epoch, as the sweep logs them.
EPOCH_SECONDS = "time/train_seconds"


@dataclass(frozen=True)
class TableRow:
    """One model's entry: where it comes from, what was selected, and its figures."""

    model: str
    sweep_name: str
    parent_run_id: str
    selected: dict[str, Any]
    valid: dict[str, float]
    #: per seed, per metric: the replicas' test figures (empty without final_seeds)
    per_seed: dict[int, dict[str, float]] = field(default_factory=dict)
    #: the selected trial's own test figures (the only ones without final_seeds)
    single: dict[str, float] = field(default_factory=dict)
    #: median seconds of a training epoch over every epoch of the sweep's runs (None: not logged)
    epoch_seconds: float | None = None

    def test_values(self, metric: str) -> list[float]:
        if self.per_seed:
            return [figures[metric] for _, figures in sorted(self.per_seed.items()) if metric in figures]
        return [self.single[metric]] if metric in self.single else []


def _best(metrics: Mapping[str, float], split: str) -> dict[str, float]:
    """The table's metrics of ``split`` among a run's ``best/<split>/*`` figures."""
    from pipeline.mlflow_logging import metric_key

    return {m: metrics[key] for m in METRICS if (key := metric_key(f"best/{split}/{m}")) in metrics}


def collect(client: Any, experiment: str, *, sweep_name: str | None = None) -> list[TableRow]:
    """The newest FINISHED sweep per model of ``experiment`` (an unknown experiment is an error
    naming the ones there are)."""
    from pipeline.seed_replicates import replicas_of

    found = client.get_experiment_by_name(experiment)
    if found is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"experiment {experiment!r}: not in this tracking store; there are: {', '.join(known) or 'none'}")
    parents = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{tags.ROLE}` = 'sweep' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=5000)
    rows: dict[str, TableRow] = {}
    for run in parents:
        model = run.data.tags.get(tags.MODEL)
        name = run.data.params.get("sweep.name", "")
        if model is None or model in rows or (sweep_name is not None and name != sweep_name):
            continue
        metrics = run.data.metrics
        children = client.search_runs(
            [found.experiment_id], filter_string=f"tags.`{tags.MLFLOW_PARENT_RUN}` = '{run.info.run_id}'",
            max_results=5000)
        per_seed = ({seed: replica.test for seed, replica in replicas_of(children).items()}
                    if "seeds/n" in metrics else {})
        rows[model] = TableRow(
            model=model, sweep_name=name, parent_run_id=run.info.run_id,
            selected=json.loads(run.data.tags.get(tags.SELECTED_PARAMS, "{}")),
            valid=_best(metrics, "valid"), per_seed=per_seed, single=_best(metrics, "test"),
            epoch_seconds=median_epoch_seconds(client, children),
        )
    return sorted(rows.values(), key=lambda r: -_mean(r.test_values(METRICS[0])))


def median_epoch_seconds(client: Any, runs: Sequence[Any]) -> float | None:
    """The median training-epoch time over every epoch of ``runs`` (trials and replicas), as
    the trainer measured it: what the model costs here, with the sweep's concurrency."""
    import statistics

    seconds = [m.value for run in runs if EPOCH_SECONDS in run.data.metrics
               for m in client.get_metric_history(run.info.run_id, EPOCH_SECONDS)]
    return statistics.median(seconds) if seconds else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else -math.inf


def _figure(values: Sequence[float]) -> str:
    from clear_core.seed_statistics import seed_summary

    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    s = seed_summary(values)
    return f"{s['mean']:.4f} ± {s['std']:.4f} [{s['low']:.4f}, {s['high']:.4f}]"


def paired(row: TableRow, reference: TableRow, metric: str) -> dict[str, Any] | None:
    """``row`` minus ``reference`` on test, paired by the seeds both ran; None without two."""
    from clear_core.seed_statistics import mean_interval

    seeds = sorted(set(row.per_seed) & set(reference.per_seed))
    diffs = [row.per_seed[s][metric] - reference.per_seed[s][metric] for s in seeds
             if metric in row.per_seed[s] and metric in reference.per_seed[s]]
    if len(diffs) < 2:
        return None
    mean, low, high = mean_interval(diffs)
    return {"n": len(diffs), "mean": mean, "low": low, "high": high, "ahead": sum(d > 0 for d in diffs)}


def markdown(rows: Sequence[TableRow], *, against: str | None = None) -> str:
    """The table as Markdown: figures over seeds (mean ± std [95 % interval]); a single-run row
    says so in its seeds column."""
    names = ", ".join(f"test {m}" for m in METRICS)
    lines = [f"| model | selected on validation | seeds | valid {METRICS[0]} | {names.replace(', ', ' | ')} "
             "| s / train epoch | parent run |",
             "|---|---|---|---|" + "---|" * len(METRICS) + "---|---|"]
    for row in rows:
        seeds = (f"{len(row.per_seed)} ({', '.join(map(str, sorted(row.per_seed)))})" if row.per_seed
                 else "1 (no final_seeds)")
        selected = " ".join(f"{k}={v}" for k, v in sorted(row.selected.items())) or "(defaults)"
        figures = " | ".join(_figure(row.test_values(m)) for m in METRICS)
        valid = f"{row.valid[METRICS[0]]:.4f}" if METRICS[0] in row.valid else "-"
        cost = "-" if row.epoch_seconds is None else f"{row.epoch_seconds:.1f}"
        lines.append(f"| {row.model} | {selected} | {seeds} | {valid} | {figures} | {cost} | {row.parent_run_id} |")
    if against is not None:
        reference = next((r for r in rows if r.model == against), None)
        if reference is None:
            raise ConfigError(f"--against {against!r}: no finished sweep of that model in this table; "
                              f"models: {', '.join(r.model for r in rows) or 'none'}")
        lines += ["", f"Each model minus {against}, test, paired by seed (mean [95 % t interval], seeds ahead):", "",
                  "| model | " + " | ".join(f"Δ {m}" for m in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for row in rows:
            if row is reference:
                continue
            cells = []
            for m in METRICS:
                p = paired(row, reference, m)
                cells.append("- (needs two shared seeds)" if p is None else
                             f"{p['mean']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}], {p['ahead']}/{p['n']}")
            lines.append(f"| {row.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
