"""``clearrec table``: each model's newest finished sweep of an experiment, its selected
configuration and its test figures over seeds, read back from a real (SQLite) MLflow store."""

from __future__ import annotations

import json

import pytest

from pipeline import seed_replicates, tags, tracking
from pipeline.cli import main

EXPERIMENT = "clearrec-tiny"


def add_sweep(tracker, model, *, name="table", selected=None, seeds=None, single=(0.1, 0.05), status="FINISHED",
              epoch_seconds=()):
    """A sweep's parent run as the pipeline leaves it, with a replica child per seed; each of
    ``epoch_seconds`` is one trial child's per-epoch training times."""
    parent = tracker.start_run(f"{model} sweep {name}", tags={
        tags.ROLE: "sweep", tags.MODEL: model, tags.SELECTED_PARAMS: json.dumps(selected or {}, sort_keys=True)},
        params={"sweep.name": name})
    tracker.log_metrics(parent, {"best/valid/recall@20": single[0] + 0.01, "best/test/recall@20": single[0],
                                 "best/test/ndcg@20": single[1]}, step=3)
    for i, times in enumerate(epoch_seconds):
        trial = tracker.start_run(f"{model} trial {i}", parent_run_id=parent, tags={tags.ROLE: "trial"})
        for epoch, value in enumerate(times, start=1):
            tracker.log_metrics(trial, {"train_seconds": value}, step=epoch)
        tracker.end_run(trial, "FINISHED")
    if seeds:
        for seed, (recall, ndcg) in seeds.items():
            child = tracker.start_run(f"{model} seed {seed}", parent_run_id=parent,
                                      tags={tags.ROLE: seed_replicates.ROLE, tags.SEED: seed})
            tracker.log_metrics(child, {"best/test/recall@20": recall, "best/test/ndcg@20": ndcg}, step=1)
            tracker.end_run(child, "FINISHED")
        tracker.log_metrics(parent, {"seeds/n": len(seeds)}, step=0)
    tracker.end_run(parent, status)
    return parent


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    tracker = tracking.Tracker(uri, EXPERIMENT)
    # An older CLEAR sweep and an unfinished one: neither is the table's row.
    add_sweep(tracker, "clear", seeds={1: (0.50, 0.40), 2: (0.50, 0.40)}, selected={"redundancy_rank": 2})
    add_sweep(tracker, "lightgcn", seeds={1: (0.10, 0.05), 2: (0.12, 0.06), 3: (0.11, 0.04)},
              selected={"n_layers": 3})
    clear = add_sweep(tracker, "clear", seeds={1: (0.13, 0.06), 2: (0.14, 0.07), 3: (0.15, 0.05)},
                      selected={"redundancy_rank": 4, "projection_strength": 0.9},
                      epoch_seconds=[(2.0, 3.0, 9.0), (4.0, 5.0)])
    add_sweep(tracker, "clear", seeds={1: (0.9, 0.9), 2: (0.9, 0.9)}, status="KILLED")
    add_sweep(tracker, "mf", single=(0.08, 0.03))
    add_sweep(tracker, "vbpr", name="other-sweep", seeds={1: (0.3, 0.2), 2: (0.3, 0.2)})
    return {"uri": uri, "clear": clear, "tmp": tmp_path}


def test_each_model_shows_its_newest_finished_sweep_sorted_by_mean_test_recall(store, capsys):
    assert main(["table", EXPERIMENT, "--tracking-uri", store["uri"], "--sweep-name", "table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["clear", "lightgcn", "mf"]  # vbpr: another sweep
    clear, lightgcn, mf = rows
    # mean 0.14, std 0.01, interval 0.14 ± 4.303 * 0.01 / sqrt(3) = 0.14 ± 0.0248
    assert "| projection_strength=0.9 redundancy_rank=4 | 3 (1, 2, 3) | 0.1100 | 0.1400 ± 0.0100 [0.1152, 0.1648] |" in clear
    # The median over every epoch of every run of the sweep: 2, 3, 4, 5, 9 -> 4.
    assert clear.endswith(f"| 4.0 | {store['clear']} |")
    assert "| n_layers=3 | 3 (1, 2, 3) |" in lightgcn and "0.1100 ± 0.0100 [0.0852, 0.1348]" in lightgcn
    # One run is shown as what it is.
    assert "| (defaults) | 1 (no final_seeds) | 0.0900 | 0.0800 | 0.0300 | - |" in mf


def test_against_a_model_gives_paired_differences_over_shared_seeds(store, capsys, tmp_path):
    out = tmp_path / "report"
    assert main(["table", EXPERIMENT, "--tracking-uri", store["uri"], "--sweep-name", "table",
                 "--against", "clear", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "table.md").read_text() == printed
    diffs = {line.split(" | ")[0][2:]: line for line in printed.splitlines() if line.startswith("| ")}
    # lightgcn - clear on recall, per seed: -0.03, -0.02, -0.04 -> mean -0.03, std 0.01, 0/3 ahead
    assert diffs["lightgcn"].startswith("| lightgcn | -0.0300 [-0.0548, -0.0052], 0/3 | ")
    assert "- (needs two shared seeds)" in [line for line in printed.splitlines() if line.startswith("| mf |")][-1]


def test_unknown_experiment_model_or_store_is_a_clear_error(store, capsys, tmp_path):
    assert main(["table", "clearrec-nope", "--tracking-uri", store["uri"]]) == 2
    assert "experiment 'clearrec-nope': not in this tracking store; there are: " in capsys.readouterr().err
    assert main(["table", EXPERIMENT, "--tracking-uri", store["uri"], "--against", "lattice"]) == 2
    assert "--against 'lattice': no finished sweep of that model" in capsys.readouterr().err
    missing = tmp_path / "none" / "mlruns.db"
    assert main(["table", EXPERIMENT, "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert "no such database file" in capsys.readouterr().err
    assert not missing.exists()
