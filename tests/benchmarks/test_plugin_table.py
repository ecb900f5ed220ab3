"""benchmarks/plugin_table.py: selection on validation only, and the paired summary arithmetic,
on a handful of made-up runs."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import plugin_table as pt  # noqa: E402

GRID = {"vbpr": [{"reg_weight": 0.1}, {"reg_weight": 1.0}]}


def run(method, params, seed, valid, test_r, test_n):
    return {"method": method, "params": params, "seed": seed, "valid": {"recall@20": valid},
            "test": {"recall@20": test_r, "ndcg@20": test_n}, "best_epoch": 1, "epochs_run": 2,
            "train": {"max_epochs": 2}}


def test_the_interval_is_the_paired_t_interval():
    mean, low, high = pt.mean_interval([0.01, 0.02, 0.03])
    # mean 0.02, sd 0.01, t(0.975, 2 df) = 4.303: half width 4.303 * 0.01 / sqrt(3)
    half = 4.303 * 0.01 / math.sqrt(3)
    assert mean == pytest.approx(0.02)
    assert (low, high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    mean, low, high = pt.mean_interval([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)


def test_differences_are_paired_by_seed_and_unpaired_seeds_are_left_out():
    base = [run("vbpr", {}, 1, 0.1, 0.10, 0.05), run("vbpr", {}, 2, 0.1, 0.20, 0.10), run("vbpr", {}, 3, 0.1, 0.3, 0.1)]
    plugged = [run("vbpr+clear", {}, 2, 0.1, 0.23, 0.09), run("vbpr+clear", {}, 1, 0.1, 0.11, 0.06),
               run("vbpr+clear", {}, 9, 0.1, 0.9, 0.9)]
    p = pt.paired(plugged, base)
    assert p["seeds"] == [1, 2]
    assert p["recall@20"]["diffs"] == [pytest.approx(0.01), pytest.approx(0.03)]
    assert p["ndcg@20"]["diffs"] == [pytest.approx(0.01), pytest.approx(-0.01)]
    assert p["recall@20"]["ahead"] == 2 and p["ndcg@20"]["ahead"] == 1
    # two pairs: t(0.975, 1 df) = 12.706, sd of (0.01, 0.03) = sqrt(2) * 0.01
    half = 12.706 * math.sqrt(2) * 0.01 / math.sqrt(2)
    assert p["recall@20"]["interval"] == (pytest.approx(0.02), pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert pt.paired(plugged, [run("vbpr", {}, 5, 0.1, 0.1, 0.1)]) is None


def test_selection_reads_validation_only_and_waits_for_every_selection_seed():
    seeds = [1, 2]
    # reg 1.0 has the better validation mean, reg 0.1 the better test: 1.0 must be selected.
    rows = [run("vbpr", {"reg_weight": 0.1}, 1, 0.10, 0.9, 0.9), run("vbpr", {"reg_weight": 0.1}, 2, 0.12, 0.9, 0.9),
            run("vbpr", {"reg_weight": 1.0}, 1, 0.13, 0.1, 0.1)]
    assert pt.select(rows, "vbpr", GRID["vbpr"], seeds) is None  # reg 1.0 lacks seed 2
    assert pt.points(rows, "vbpr+mrdib", seeds, GRID) == []  # so no plug-in point yet
    rows.append(run("vbpr", {"reg_weight": 1.0}, 2, 0.11, 0.1, 0.1))
    assert pt.select(rows, "vbpr", GRID["vbpr"], seeds) == {"reg_weight": 1.0}
    plug_points = pt.points(rows, "vbpr+clear", seeds, GRID)
    assert plug_points == [{"reg_weight": 1.0, **s} for s in pt.CLEAR_GRID]
    assert all(p["mrdib"] is True and p["reg_weight"] == 1.0 for p in pt.points(rows, "vbpr+mrdib", seeds, GRID))
    # A model without a grid runs its YAML defaults.
    assert pt.points(rows, "lattice", seeds, GRID) == [{}]


def test_a_validation_tie_goes_to_the_first_point_of_the_grid_whatever_order_the_runs_ended_in():
    # LATTICE + MRdIB on TikTok: two points with the same hit count on seed 999.
    tied = [run("vbpr", {"reg_weight": r}, 1, 0.0946, t, t) for r, t in ((1.0, 0.2), (0.1, 0.1))]
    assert pt.select(tied, "vbpr", GRID["vbpr"], [1]) == {"reg_weight": 0.1}
    assert pt.select(tied[::-1], "vbpr", GRID["vbpr"], [1]) == {"reg_weight": 0.1}


def test_each_round_schedules_every_run_the_rows_so_far_determine():
    select_seeds, held_out = [1], [7, 8]
    # Two base points: only their selection runs are known until both have run.
    assert pt.ready_jobs([], ["vbpr"], ["clear"], select_seeds, held_out, GRID) == [
        ("vbpr", {"reg_weight": 0.1}, 1), ("vbpr", {"reg_weight": 1.0}, 1)]
    rows = [run("vbpr", {"reg_weight": 0.1}, 1, 0.10, 0.9, 0.9), run("vbpr", {"reg_weight": 1.0}, 1, 0.13, 0.1, 0.1)]
    chosen = {"reg_weight": 1.0}
    assert pt.ready_jobs(rows, ["vbpr"], ["clear"], select_seeds, held_out, GRID) == [
        ("vbpr", chosen, 7), ("vbpr", chosen, 8), *[("vbpr+clear", {**chosen, **c}, 1) for c in pt.CLEAR_GRID]]
    rows += [run("vbpr+clear", {**chosen, **c}, 1, 0.1 + i / 100, 0.3, 0.2) for i, c in enumerate(pt.CLEAR_GRID)]
    rows += [run("vbpr", chosen, s, 0.1, 0.1, 0.1) for s in held_out]
    best_clear = {**chosen, **pt.CLEAR_GRID[-1]}
    assert pt.ready_jobs(rows, ["vbpr"], ["clear"], select_seeds, held_out, GRID) == [
        ("vbpr+clear", best_clear, 7), ("vbpr+clear", best_clear, 8)]
    rows += [run("vbpr+clear", best_clear, s, 0.1, 0.1, 0.1) for s in held_out]
    assert pt.ready_jobs(rows, ["vbpr"], ["clear"], select_seeds, held_out, GRID) == []


def test_a_one_point_base_starts_its_plugins_and_held_out_seeds_at_once():
    # Nothing to select between, so no run waits for the base's selection run to finish.
    one = {"vbpr": [{"reg_weight": 0.1}]}
    first = pt.ready_jobs([], ["vbpr"], ["clear", "mrdib"], [1], [7], one)
    assert ("vbpr", {"reg_weight": 0.1}, 1) in first and ("vbpr", {"reg_weight": 0.1}, 7) in first
    assert sum(m == "vbpr+clear" for m, _, _ in first) == sum(m == "vbpr+mrdib" for m, _, _ in first) == 6
    assert len(first) == 14
    # The summary still waits for the runs: no base row is reported before it has run.
    assert "| vbpr |" not in pt.summarise([], ["vbpr"], [1], one)


def test_both_plugins_search_the_same_number_of_points():
    assert len(pt.CLEAR_GRID) == len(pt.MRDIB_GRID) == 6


def test_summary_table_shows_each_plugin_against_its_base():
    seeds = [1, 2]
    rows = [run("vbpr", {"reg_weight": r}, s, 0.1 + r / 100, 0.10 + s / 100, 0.05) for r in (0.1, 1.0) for s in (1, 2, 3)]
    chosen = {"reg_weight": 1.0}
    rows += [run("vbpr+clear", {**chosen, **p}, s, 0.1 + i / 1000, 0.12 + s / 100, 0.06)
             for i, p in enumerate(pt.CLEAR_GRID) for s in (1, 2)]
    best_clear = {**chosen, **pt.CLEAR_GRID[-1]}
    rows.append(run("vbpr+clear", best_clear, 3, 0.1, 0.15, 0.04))
    rows.append(run("vbpr+clear", best_clear, 4, 0.1, 0.16, 0.07))
    rows.append(run("vbpr", chosen, 4, 0.1, 0.13, 0.06))
    text = pt.summarise(rows, ["vbpr"], seeds, GRID)
    # Only the held-out seeds 3 and 4 are paired: test R@20 +0.02 and +0.03, N@20 -0.01 and +0.01.
    half = 12.706 * statistics.stdev([0.02, 0.03]) / math.sqrt(2)
    assert f"| vbpr | +clear | 2 | +0.0250 [{0.025 - half:+.4f}, {0.025 + half:+.4f}] |" in text
    assert "| 2/2 / 1/2 |" in text
    assert "vbpr+mrdib" not in text  # never ran: no row, no difference


def test_selection_seeds_are_left_out_of_the_reported_test_figures():
    # On its selection seed the plug-in's test figure is the best of its six tries: reporting it
    # would flatter the plug-in, so only the held-out seed 2 counts.
    rows = [run("vbpr", {}, 1, 0.1, 0.10, 0.05), run("vbpr", {}, 2, 0.1, 0.10, 0.05)]
    rows += [run("vbpr+clear", p, 1, 0.1 + i / 100, 0.30, 0.20) for i, p in enumerate(pt.CLEAR_GRID)]
    rows.append(run("vbpr+clear", pt.CLEAR_GRID[-1], 2, 0.1, 0.11, 0.05))
    text = pt.summarise(rows, ["vbpr"], [1], {"vbpr": [{}]})
    assert "| vbpr | +clear | 1 | +0.0100 |" in text
    assert "0.3000" not in text


def test_the_table_is_mirrored_into_mlflow_once_per_row_with_its_selection_tagged(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    rows = [run("vbpr", {}, s, 0.1, 0.10 + s / 100, 0.05) for s in (1, 2, 3)]
    rows += [run("vbpr+clear", p, 1, 0.1 + i / 100, 0.3, 0.2) for i, p in enumerate(pt.CLEAR_GRID)]
    rows += [run("vbpr+clear", pt.CLEAR_GRID[-1], s, 0.1, 0.13 + s / 100, 0.06) for s in (2, 3)]
    mirror = dict(tracking_uri=uri, experiment="plugins", data=tmp_path, models=["vbpr"], select_seeds=[1],
                  base_grid={"vbpr": [{}]})
    parent = pt.mirror_to_mlflow(rows[:-1], **mirror)
    # A resumed table mirrors again: the parent is reopened and only the new row is added.
    assert pt.mirror_to_mlflow(rows, **mirror) == parent

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("plugins").experiment_id
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=100)
    assert len(children) == len(rows) == 11
    chosen = [c for c in children if c.data.tags["clearrec.selected"] == "true"]
    # the base's three seeds, and the plug-in's selected point (k, lambda of CLEAR_GRID[-1]) on all three
    assert sorted((c.data.tags["clearrec.model"], int(c.data.tags["clearrec.seed"])) for c in chosen) == [
        ("vbpr", 1), ("vbpr", 2), ("vbpr", 3), ("vbpr+clear", 1), ("vbpr+clear", 2), ("vbpr+clear", 3)]
    one = next(c for c in chosen if c.data.tags["clearrec.model"] == "vbpr+clear" and c.data.tags["clearrec.seed"] == "3")
    assert one.data.tags["clearrec.plug_in"] == "clear" and one.data.tags["clearrec.base_model"] == "vbpr"
    assert one.data.metrics["best/test/recall_at_20"] == pytest.approx(0.16)
    assert one.data.params["model.redundancy_rank"] == str(pt.CLEAR_GRID[-1]["redundancy_rank"])
    assert one.data.params["train.max_epochs"] == "2"
    # The parent carries the paired difference on the held-out seeds 2 and 3 (+0.03 both) and the summary.
    top = client.get_run(parent)
    assert top.info.status == "FINISHED"
    assert top.data.metrics["vbpr/clear/delta_recall_at_20"] == pytest.approx(0.03)
    assert "| vbpr | +clear | 2 | +0.0300" in top.data.tags["mlflow.note.content"]
    assert "plugin_table.md" in {a.path for a in client.list_artifacts(parent)}


def test_a_retrained_row_replaces_its_mirror_and_a_dropped_row_leaves_it(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    rows = [run("vbpr", {}, s, 0.1, 0.10, 0.05) for s in (1, 2, 3)]
    mirror = dict(tracking_uri=uri, experiment="plugins", data=tmp_path, models=["vbpr"], select_seeds=[1],
                  base_grid={"vbpr": [{}]})
    parent = pt.mirror_to_mlflow(rows, **mirror)
    # Seed 2 re-trained by other code (new figures), seed 3 removed from the file.
    rows = [rows[0], {**run("vbpr", {}, 2, 0.2, 0.30, 0.15), "git_commit": "abc123"}]
    pt.mirror_to_mlflow(rows, **mirror)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("plugins").experiment_id
    live = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=100)
    by_seed = {r.data.tags["clearrec.seed"]: r for r in live}
    assert sorted(by_seed) == ["1", "2"]
    assert by_seed["2"].data.metrics["best/test/recall_at_20"] == pytest.approx(0.30)
    assert by_seed["2"].data.tags["clearrec.git_commit"] == "abc123"
    assert by_seed["1"].data.tags["clearrec.git_commit"] == "unknown"  # a row from before rows named their code
