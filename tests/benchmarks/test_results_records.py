"""benchmarks/results/: every committed record still summarises with the current scripts, and holds
the whole protocol its RESULTS.md section quotes (a record cut short or reshaped fails here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import plugin_table as pt  # noqa: E402
import reference_quality as rq  # noqa: E402

RESULTS = BENCH / "results"
#: The protocol of every plug-in row in RESULTS.md: select on seed 999, then these held-out seeds.
SELECT_SEEDS = [999]
HELD_OUT = [7, 42, 123, 2024, 31337]

PLUGIN_RECORDS = sorted(RESULTS.glob("plugin_table_*.jsonl"))
REFERENCE_RECORDS = sorted(RESULTS.glob("reference_quality_*.jsonl"))
#: Each baseline's Table-2 point: the base `make plugin-table` runs every plug-in row on.
TABLE2_POINTS = json.loads((RESULTS / "table2_points_tiktok.json").read_text(encoding="utf-8"))


def base_grid(record: Path) -> dict[str, list[dict]]:
    """The Table-2 point of each baseline the record holds a row of."""
    models = {pt.split_method(r["method"])[0] for r in pt.done_rows(record)}
    missing = models - TABLE2_POINTS.keys()
    assert not missing, f"{record.name}: no Table-2 point for {sorted(missing)}"
    return {model: TABLE2_POINTS[model] for model in sorted(models)}


def test_there_are_records_to_check():
    assert PLUGIN_RECORDS and REFERENCE_RECORDS


@pytest.mark.parametrize("record", PLUGIN_RECORDS, ids=lambda p: p.name)
def test_a_plugin_record_selects_every_method_and_pairs_it_on_the_held_out_seeds(record):
    grid = base_grid(record)
    rows = pt.done_rows(record)
    for model in grid:
        chosen = pt.selected(rows, model, SELECT_SEEDS, grid)
        # A row may be committed one plug-in at a time (`--plug-ins clear`), never half of one.
        ran = {plug for plug in pt.PLUG_INS if any(r["method"] == pt.method_name(model, plug) for r in rows)}
        assert ran, f"{record.name}: {model} has no plug-in run"
        assert set(chosen) == {None, *ran}, f"{record.name}: {model} lacks a selected method"
        for plug, sel in chosen.items():
            assert [r["seed"] for r in sel["held_out"]] == HELD_OUT, (record.name, plug)
            if plug is not None:
                assert pt.paired(sel["held_out"], chosen[None]["held_out"])["seeds"] == HELD_OUT
        # Each plug-in searched its six settings on the base's selected point, nothing else.
        for plug in ran:
            searched = [r["params"] for r in rows if r["method"] == pt.method_name(model, plug)
                        and r["seed"] in SELECT_SEEDS]
            assert sorted(map(json.dumps, searched)) == sorted(
                json.dumps({**chosen[None]["params"], **setting}, sort_keys=True)
                for setting in pt.PLUG_INS[plug])
        summary = pt.summary_text({model: chosen})
        assert all(f"| {model} | +{plug} | {len(HELD_OUT)} |" in summary for plug in ran)


@pytest.mark.parametrize("record", REFERENCE_RECORDS, ids=lambda p: p.name)
def test_a_reference_record_pairs_ours_with_mmrecs_on_every_seed(record):
    rows = pt.done_rows(record)
    sides = {rq.side_label(r) for r in rows}
    assert {"ours", "reference"} <= sides, record.name
    seeds = {label: sorted(r["seed"] for r in rows if rq.side_label(r) == label) for label in sides}
    assert seeds["ours"] == seeds["reference"] and len(seeds["ours"]) >= 3, seeds
    assert "| ours − reference | " + str(len(seeds["ours"])) + " |" in rq.summarise(rows)


@pytest.mark.parametrize("record", PLUGIN_RECORDS, ids=lambda p: p.name)
def test_make_plugin_table_runs_each_committed_row_at_the_point_it_was_measured_at(record):
    # `make plugin-table` reads its base points from table2_points_tiktok.json: a row measured at
    # another point could not be reproduced with the documented command.
    for model, grid in base_grid(record).items():
        ran = {json.dumps(r["params"], sort_keys=True) for r in pt.done_rows(record) if r["method"] == model}
        assert ran == {json.dumps(p, sort_keys=True) for p in grid}, (
            f"{record.name}: {model} ran at {sorted(ran)}, the Makefile's point is {grid}")
