"""What a sweep leaves for people to read: the results table (CSV and Markdown), the heatmap of
Recall@20 over lambda x k (the paper's Figure 4) and the closing summary printed by the CLI.
(The spectrum plot, Figure 5, is :func:`pipeline.plots.plot_spectrum`.)

Trials are read by attribute (``trial_id``, ``params``, ``status``, ``best_epoch``, ``epochs``,
``valid``, ``test``), the shape of :class:`pipeline.sweep.TrialSummary`; plain mappings with the
same keys work too, so a table can be rebuilt from JSON.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clear_core.atomic_io import write_atomic, write_text_atomic

# Columns of the table after the parameters; the split/metric keys of clear_core.metrics.
TABLE_METRICS = ("recall@20", "ndcg@20", "precision@20", "map@20")
STATUS_ORDER = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}


def field(trial: Any, name: str, default: Any = None) -> Any:
    if isinstance(trial, Mapping):
        return trial.get(name, default)
    return getattr(trial, name, default)


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def results_rows(
    trials: Iterable[Any], *, metric: str = "valid/recall@20", mode: str = "max",
    metrics: Sequence[str] = TABLE_METRICS, selected: str | None = None,
) -> list[dict[str, Any]]:
    """One row per trial: id, status, each searched parameter, best epoch, epochs run, then
    valid metrics at the best-validation epoch and, for the ``selected`` trial only (the one
    chosen on validation), its test metrics: a test column for every trial would invite
    selecting on test. Complete trials first, best first on ``metric`` (the selection metric,
    validation); then pruned, then failed ones."""
    trials = list(trials)
    param_names = sorted({_short(k) for t in trials for k in (field(t, "params") or {})})
    split, _, key = metric.partition("/")
    sign = -1.0 if mode == "max" else 1.0

    def sort_key(t: Any) -> tuple:
        value = (field(t, split) or {}).get(key)
        has = isinstance(value, (int, float)) and math.isfinite(value)
        return (STATUS_ORDER.get(field(t, "status"), 3), 0 if has else 1, sign * value if has else 0.0,
                str(field(t, "trial_id")))

    rows = []
    for t in sorted(trials, key=sort_key):
        params = {_short(k): v for k, v in (field(t, "params") or {}).items()}
        row: dict[str, Any] = {"trial": field(t, "trial_id"), "status": field(t, "status")}
        row.update({name: params.get(name) for name in param_names})
        row["best_epoch"] = field(t, "best_epoch")
        row["epochs"] = field(t, "epochs")
        for m in metrics:
            row[f"valid/{m}"] = (field(t, "valid") or {}).get(m)
        is_selected = selected is not None and field(t, "trial_id") == selected
        row["selected"] = "yes" if is_selected else ""
        for m in metrics:
            row[f"test/{m}"] = (field(t, "test") or {}).get(m) if is_selected else None
        rows.append(row)
    return rows


def _cell(value: Any, is_metric: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and is_metric:
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "_no trials_\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[h], "/" in h) for h in header) + " |")
    return "\n".join(lines) + "\n"


def write_results_table(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, stem: str = "results") -> tuple[Path, Path]:
    """``<out_dir>/<stem>.csv`` and ``<stem>.md`` (atomic)."""
    out_dir = Path(out_dir)
    return (
        write_text_atomic(out_dir / f"{stem}.csv", to_csv(rows)),
        write_text_atomic(out_dir / f"{stem}.md", to_markdown(rows)),
    )


def grid_values(
    trials: Iterable[Any], *, x: str = "projection_strength", y: str = "redundancy_rank",
    metric: str = "valid/recall@20",
) -> tuple[list[Any], list[Any], list[list[float]], list[list[str]]]:
    """The best ``metric`` per (y, x) cell over every trial that reported it, complete or
    pruned (other parameters, such as tau, maximised over); NaN where no trial reported.
    Each trial counts with the value it reached (its best-validation epoch before it ended or
    was stopped). Also, per cell, the status of the trial that gave the value, so that a value
    of an under-trained (pruned) trial can be marked. Rows are ``y`` values, columns ``x``;
    axes list every value any trial tried."""
    split, _, key = metric.partition("/")
    cells: dict[tuple[Any, Any], tuple[float, str]] = {}
    xs_seen, ys_seen = set(), set()
    for t in trials:
        params = {_short(k): v for k, v in (field(t, "params") or {}).items()}
        if x not in params or y not in params:
            continue
        xs_seen.add(params[x])
        ys_seen.add(params[y])
        value = (field(t, split) or {}).get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        cell = (params[y], params[x])
        if cell not in cells or float(value) > cells[cell][0]:
            cells[cell] = (float(value), str(field(t, "status")))
    if not cells:
        return [], [], [], []
    xs, ys = sorted(xs_seen), sorted(ys_seen)
    grid = [[cells.get((yv, xv), (math.nan, ""))[0] for xv in xs] for yv in ys]
    status = [[cells.get((yv, xv), (math.nan, ""))[1] for xv in xs] for yv in ys]
    return xs, ys, grid, status


def plot_heatmap(
    trials: Iterable[Any], out_path: str | Path, *, x: str = "projection_strength", y: str = "redundancy_rank",
    metric: str = "valid/recall@20", title: str | None = None,
) -> Path | None:
    """Figure 4 of the paper: ``metric`` over lambda (x) x k (y), as a PNG, every trial at the
    value it reached; a cell whose value comes from a pruned trial is hatched and marked "P".
    ``None`` when no trial searched both parameters (e.g. a baseline sweep)."""
    xs, ys, grid, status = grid_values(trials, x=x, y=y, metric=metric)
    if not xs or not ys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    data = np.array(grid, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.5, 0.8 * len(ys) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(f"{x} (lambda)" if x == "projection_strength" else x)
    ax.set_ylabel(f"{y} (k)" if y == "redundancy_rank" else y)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if not math.isfinite(data[i, j]):
                continue
            pruned = status[i][j] == "PRUNED"
            if pruned:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="white",
                                       linewidth=0))
            ax.text(j, i, f"{data[i, j]:.4f}" + (" P" if pruned else ""), ha="center", va="center",
                    color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(title or f"{metric}, best trial per cell (P, hatched: pruned, value when stopped)", fontsize=9)
    fig.tight_layout()
    try:
        return write_atomic(out_path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)


def _metrics_line(values: Mapping[str, Any] | None, keys: Sequence[str] = ("recall@20", "ndcg@20")) -> str:
    values = values or {}
    return ", ".join(f"{k} {values[k]:.4f}" for k in keys if isinstance(values.get(k), (int, float))) or "n/a"


def coverage_lines(grid: Mapping[str, Any] | None, duplicate_proposals: int = 0) -> list[str]:
    """How much of its search a sweep covered: a grid's points run and skipped (each named), and
    proposals of an already-run point that were not run again."""
    lines = []
    if grid:
        size, ran, skipped = grid["size"], grid["ran"], grid.get("skipped") or []
        if not skipped:
            lines.append(f"Grid: all {size} points ran, each once")
        else:
            names = "; ".join(" ".join(f"{_short(k)}={v}" for k, v in point.items()) for point in skipped)
            lines.append(f"Grid: {ran} of {size} points ran; {len(skipped)} skipped by the num_samples cap: {names}")
    if duplicate_proposals:
        lines.append(f"  {duplicate_proposals} proposal(s) of an already-run point were not run again "
                     "(their known result was told to Optuna)")
    return lines


def closing_summary(
    *,
    model: str,
    dataset: str,
    best: Any,
    final_test: Mapping[str, Any] | None,
    counts: Mapping[str, int],
    experiment: str,
    experiment_id: str,
    parent_run_id: str,
    tracking_uri: str,
    study_storage: str,
    study_name: str,
    outputs: str,
    resumed: bool = False,
    grid: Mapping[str, Any] | None = None,
    duplicate_proposals: int = 0,
    ui_link: str | None = None,
    trial_name: str | None = None,
    seed_lines: Sequence[str] = (),
) -> str:
    """The text the CLI prints when a sweep ends: best configuration, its valid and test
    metrics, where to look in MLflow and how to open it."""
    params = field(best, "params") or {}
    lines = [
        f"Sweep of {model} on {dataset} {'(resumed) ' if resumed else ''}finished: "
        + ", ".join(f"{n} {counts.get(n, 0)}" for n in ("COMPLETE", "PRUNED", "FAIL")),
        *coverage_lines(grid, duplicate_proposals),
        "Best configuration (selected on validation): "
        + (" ".join(f"{_short(k)}={v}" for k, v in sorted(params.items())) or "(defaults)"),
        *([f"  trial {trial_name}"] if trial_name else []),
        f"  best epoch {field(best, 'best_epoch')} of {field(best, 'epochs')}",
        f"  valid: {_metrics_line(field(best, 'valid'))}",
        f"  test:  {_metrics_line(field(best, 'test'))} (at the best-validation epoch)",
    ]
    if final_test:
        lines.append(f"  final test evaluation of the best checkpoint: {_metrics_line(final_test)}")
    lines += list(seed_lines)
    lines += [
        f"MLflow: experiment {experiment!r} (id {experiment_id}), parent run {parent_run_id}",
        f"  tracking {tracking_uri}; open the UI with `make ui`, then the sweep's runs at",
        f"  {ui_link or 'http://127.0.0.1:5000'}",
        f"Optuna study {study_name!r} in {study_storage}",
        f"Outputs: {outputs}",
    ]
    return "\n".join(lines)
