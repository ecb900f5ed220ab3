"""The results table, the lambda x k heatmap and the closing summary of a sweep."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field

from PIL import Image

from pipeline import reporting


@dataclass
class Trial:
    trial_id: str
    params: dict
    status: str
    valid: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    best_epoch: int = 3
    epochs: int = 5


def trials() -> list[Trial]:
    return [
        Trial("a", {"redundancy_rank": 2, "projection_strength": 0.5, "refresh_every": 1}, "COMPLETE",
              {"recall@20": 0.10, "ndcg@20": 0.05}, {"recall@20": 0.09}),
        Trial("b", {"redundancy_rank": 8, "projection_strength": 0.9, "refresh_every": 2}, "COMPLETE",
              {"recall@20": 0.30, "ndcg@20": 0.15}, {"recall@20": 0.28}),
        Trial("c", {"redundancy_rank": 8, "projection_strength": 0.9, "refresh_every": 5}, "COMPLETE",
              {"recall@20": 0.20}, {"recall@20": 0.21}),
        Trial("d", {"redundancy_rank": 4, "projection_strength": 0.3, "refresh_every": 1}, "PRUNED",
              {"recall@20": 0.50}, {}),
        Trial("e", {"redundancy_rank": 2, "projection_strength": 0.9, "refresh_every": 1}, "FAIL"),
    ]


def test_table_ranks_complete_trials_by_validation_then_pruned_then_failed():
    rows = reporting.results_rows(trials())
    assert [r["trial"] for r in rows] == ["b", "c", "a", "d", "e"]
    assert list(rows[0])[:5] == ["trial", "status", "projection_strength", "redundancy_rank", "refresh_every"]
    assert rows[0]["valid/recall@20"] == 0.30
    assert rows[-1]["valid/recall@20"] is None


def test_test_metrics_are_shown_for_the_selected_trial_only():
    rows = reporting.results_rows(trials(), selected="b")
    assert [(r["trial"], r["test/recall@20"], r["selected"]) for r in rows if r["test/recall@20"] is not None] == [
        ("b", 0.28, "yes")]
    assert all(r["test/recall@20"] is None for r in reporting.results_rows(trials()))


def test_min_mode_ranks_lowest_first():
    rows = reporting.results_rows(trials(), mode="min")
    assert [r["trial"] for r in rows][:3] == ["a", "c", "b"]


def test_csv_and_markdown_tables_are_written_with_every_trial(tmp_path):
    csv_path, md_path = reporting.write_results_table(reporting.results_rows(trials()), tmp_path)
    with csv_path.open() as handle:
        read = list(csv.DictReader(handle))
    assert [r["trial"] for r in read] == ["b", "c", "a", "d", "e"]
    assert read[-1]["valid/recall@20"] == ""
    md = md_path.read_text().splitlines()
    assert md[0].startswith("| trial | status |") and md[1].startswith("|---|")
    assert "| b | COMPLETE | 0.9 | 8 | 2 | 3 | 5 | 0.3000 |" in md[2]
    assert len(md) == 2 + 5
    assert not list(tmp_path.glob(".*.tmp"))


def test_heatmap_cells_show_every_trial_at_the_value_it_reached_marking_pruned_ones():
    xs, ys, grid, status = reporting.grid_values(trials())
    assert xs == [0.3, 0.5, 0.9] and ys == [2, 4, 8]  # every value tried, pruned or failed too
    assert grid[2][2] == 0.30 and status[2][2] == "COMPLETE"  # k=8, lambda=0.9: the better of tau=2 and tau=5
    assert grid[0][1] == 0.10
    assert grid[1][0] == 0.50 and status[1][0] == "PRUNED"  # k=4, lambda=0.3 was only pruned: shown, marked
    assert math.isnan(grid[0][2])  # k=2, lambda=0.9 only failed: nothing reached


def test_heatmap_png_is_written_and_absent_without_the_grid_parameters(tmp_path):
    path = reporting.plot_heatmap(trials(), tmp_path / "heatmap.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
    baseline = [Trial("x", {"learning_rate": 0.001}, "COMPLETE", {"recall@20": 0.1})]
    assert reporting.plot_heatmap(baseline, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_closing_summary_names_best_config_metrics_and_where_to_look():
    best = trials()[1]
    text = reporting.closing_summary(
        model="clear", dataset="synthetic", best=best, final_test={"recall@20": 0.2812},
        counts={"COMPLETE": 3, "PRUNED": 1, "FAIL": 1}, experiment="clearrec-synthetic", experiment_id="7",
        parent_run_id="abc123", tracking_uri="sqlite:///mlruns.db", study_storage="sqlite:///optuna.db",
        study_name="s", outputs="runs/x", ui_link="http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning",
        trial_name="clear k=8 lam=0.9 tau=2 [b]",
    )
    assert "COMPLETE 3, PRUNED 1, FAIL 1" in text
    assert "projection_strength=0.9 redundancy_rank=8 refresh_every=2" in text
    assert "valid: recall@20 0.3000, ndcg@20 0.1500" in text
    assert "final test evaluation of the best checkpoint: recall@20 0.2812" in text
    assert "abc123" in text and "make ui" in text and "sqlite:///optuna.db" in text
    assert "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning" in text
    assert "trial clear k=8 lam=0.9 tau=2 [b]" in text

