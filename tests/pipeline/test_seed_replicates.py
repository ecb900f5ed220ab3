"""``final_seeds``: after selection on validation, the selected configuration is trained again on
each seed as a Ray task, each a child run in MLflow, and the parent run reports its test figures
over the seeds (mean, std, 95 % t interval). Real local Ray, real SQLite MLflow, tiny data."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest
import yaml

from clear_core.seed_statistics import seed_summary
from pipeline import seed_replicates, tags, tracking
from pipeline.cli import main

SWEEP = {
    "name": "clear-seeds",
    "dataset": {"synthetic": True, "raw": False, "set": {"n_users": 100, "n_items": 80, "n_interactions": 1500}},
    "train": {"max_epochs": 3, "patience": 1, "batch_size": 512},
    "search": {"redundancy_rank": {"type": "choice", "values": [2, 4]}},
    "sampler": "grid",
    "max_concurrent": 2,
    "scheduler": {"type": "none"},
    "storage": {"path": "runs/ray_results"},
}
SEEDS = [5, 6, 11]


@pytest.fixture(scope="module")
def seeded_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    (folder / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    old = os.getcwd()
    os.chdir(folder)
    env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        code = main(["sweep", "--config", "sweep.yaml", "--no-progress", "--in-process", "--json",
                     "--final-seeds", *map(str, SEEDS)])
    finally:
        os.chdir(old)
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    assert code == 0
    (outcome_file,) = (folder / "runs" / "sweep").glob("*/outcome.json")
    outcome = json.loads(outcome_file.read_text())
    tracker = tracking.Tracker(f"sqlite:///{folder}/mlruns.db", "clearrec-synthetic")
    return {"folder": folder, "outcome": outcome, "tracker": tracker}


def replica_runs(tracker, parent):
    return [r for r in tracker.children(parent) if r.data.tags.get(tags.ROLE) == seed_replicates.ROLE]


def test_each_seed_is_a_finished_child_run_of_the_selected_configuration(seeded_sweep):
    tracker, outcome = seeded_sweep["tracker"], seeded_sweep["outcome"]
    runs = replica_runs(tracker, outcome["parent_run_id"])
    assert sorted(int(r.data.tags[tags.SEED]) for r in runs) == sorted(SEEDS)
    selected_rank = str(outcome["best"]["params"]["redundancy_rank"])
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["model.redundancy_rank"] == selected_rank
        assert run.data.params["train.seed"] == run.data.tags[tags.SEED]
        assert run.data.tags[tags.SWEEP_ID] == outcome["sweep_id"]
        history = tracker.client.get_metric_history(run.info.run_id, "valid/recall_at_20")
        assert [m.step for m in history] == list(range(1, int(run.data.metrics["epochs_run"]) + 1))
        seconds = tracker.client.get_metric_history(run.info.run_id, "time/train_seconds")
        assert len(seconds) == len(history) and all(m.value > 0 for m in seconds)
        best_epoch = int(run.data.metrics["best/epoch"])
        assert run.data.metrics["best/valid/recall_at_20"] == pytest.approx(
            {m.step: m.value for m in history}[best_epoch])
    # The trials are still there, one run each, beside the replicas.
    assert len(tracker.children(outcome["parent_run_id"])) == len(outcome["trials"]) + len(SEEDS)


def test_the_parent_run_reports_the_test_figures_over_the_seeds(seeded_sweep):
    tracker, outcome = seeded_sweep["tracker"], seeded_sweep["outcome"]
    runs = replica_runs(tracker, outcome["parent_run_id"])
    per_seed = [r.data.metrics["best/test/recall_at_20"] for r in runs]
    expected = seed_summary(per_seed)
    parent = tracker.client.get_run(outcome["parent_run_id"]).data.metrics
    assert parent["seeds/n"] == len(SEEDS)
    assert parent["seeds/test/recall_at_20/mean"] == pytest.approx(statistics.mean(per_seed))
    assert parent["seeds/test/recall_at_20/std"] == pytest.approx(expected["std"])
    assert parent["seeds/test/recall_at_20/ci95_low"] == pytest.approx(expected["low"])
    assert parent["seeds/test/recall_at_20/ci95_high"] == pytest.approx(expected["high"])
    assert "seeds/valid/recall_at_20/mean" in parent
    assert [r["seed"] for r in outcome["replicas"]] == SEEDS
    assert outcome["replica_summary"]["test"]["recall@20"]["mean"] == pytest.approx(statistics.mean(per_seed))


def test_a_replica_is_the_training_the_trainer_gives_for_that_seed(seeded_sweep):
    import torch

    from clear_core.data.loading import load_dataset
    from clear_core.trainer import TrainConfig, fit

    outcome = seeded_sweep["outcome"]
    replica = outcome["replicas"][0]
    torch.set_num_threads(1)  # as in a one-CPU Ray task
    result = fit(load_dataset(outcome["dataset_path"]), outcome["model"], outcome["best_model_params"],
                 TrainConfig.resolve({**outcome["best_train"], "seed": replica["seed"]}))
    assert result.best_epoch == replica["best_epoch"]
    assert result.test["recall@20"] == pytest.approx(replica["test"]["recall@20"], abs=1e-6)
    assert result.test["ndcg@20"] == pytest.approx(replica["test"]["ndcg@20"], abs=1e-6)


def test_finished_replicas_are_read_back_and_only_missing_seeds_are_trained(seeded_sweep):
    import ray

    from clear_core.data.loading import load_dataset
    from pipeline.sweep_config import load_sweep_config

    tracker, outcome = seeded_sweep["tracker"], seeded_sweep["outcome"]
    parent = outcome["parent_run_id"]
    back = seed_replicates.finished_replicas(tracker, parent)
    assert sorted(back) == sorted(SEEDS)
    for row in outcome["replicas"]:
        assert back[row["seed"]].test["recall@20"] == pytest.approx(row["test"]["recall@20"])
        assert back[row["seed"]].best_epoch == row["best_epoch"]

    # A resumed sweep with one more seed trains that seed alone.
    config = load_sweep_config(Path(seeded_sweep["folder"]) / "sweep.yaml", {"final_seeds": [*SEEDS, 12]})
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        replicas = seed_replicates.replicate(
            config, dataset=load_dataset(outcome["dataset_path"]), model_params=outcome["best_model_params"],
            train=outcome["best_train"], tracker=tracker, parent=parent, run_tags={tags.SWEEP_ID: outcome["sweep_id"]},
            resolved_params={"model": outcome["best_model_params"], "train": outcome["best_train"]})
    finally:
        ray.shutdown()
    assert [r.seed for r in replicas] == [*SEEDS, 12]
    assert sorted(int(r.data.tags[tags.SEED]) for r in replica_runs(tracker, parent)) == sorted([*SEEDS, 12])
    assert tracker.client.get_run(parent).data.metrics["seeds/n"] == len(SEEDS) + 1


def test_the_closing_summary_states_the_seeds_and_their_interval():
    replicas = [seed_replicates.Replica(seed=s, best_epoch=3, epochs_run=4, valid={"recall@20": v},
                                        test={"recall@20": v, "ndcg@20": v / 2})
                for s, v in ((1, 0.10), (2, 0.12), (3, 0.11))]
    (line,) = seed_replicates.summary_lines(replicas)
    assert line.startswith("  test over 3 seeds (1, 2, 3), mean ± std [95 % t interval]: ")
    assert "recall@20 0.1100 ± 0.0100 [0.0852, 0.1348]" in line
    assert "ndcg@20 0.0550 ± 0.0050" in line
    assert seed_replicates.summary_lines([]) == []
