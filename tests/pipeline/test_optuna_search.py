"""Trial states reach the Optuna study truthfully: scheduler-stopped trials are PRUNED (never
COMPLETE with an under-trained value), errored ones FAIL, finished ones COMPLETE at their best
validation score. Checked by reading the study back from its SQLite storage after a real Tune
run with ASHA."""

from __future__ import annotations

import sys

import optuna
import pytest
from optuna.trial import TrialState

from pipeline.optuna_search import PruningAwareOptunaSearch, fail_orphaned_trials, sweep_trials
from pipeline.sweep_config import SearchSpec

METRIC = "valid/recall@20"
SEARCH = {"quality": SearchSpec("quality", "model", "quality", "choice", values=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6))}
MAX_EPOCHS = 6


def test_state_rules():
    rule = PruningAwareOptunaSearch.trial_state
    assert rule({METRIC: 0.3, "finished": True, "best_valid": 0.4}, error=False, metric=METRIC) == (
        TrialState.COMPLETE, 0.4,
    )
    assert rule({METRIC: 0.3, "finished": False}, error=False, metric=METRIC) == (TrialState.PRUNED, None)
    assert rule({METRIC: 0.3}, error=False, metric=METRIC) == (TrialState.PRUNED, None)
    # An errored trial is FAIL even when its last result carried the metric (Ray says COMPLETE).
    assert rule({METRIC: 0.3, "finished": True}, error=True, metric=METRIC) == (TrialState.FAIL, None)
    assert rule(None, error=False, metric=METRIC) == (TrialState.PRUNED, None)


def trainable(config):
    """Curves ordered by ``quality``: ASHA stops the low ones early. quality 0.6 errors at epoch 2."""
    from ray import tune

    q = config["quality"]
    for epoch in range(1, MAX_EPOCHS + 1):
        if q == 0.6 and epoch == 2:
            raise RuntimeError("this configuration crashes")
        value = q * (1 - 0.5 ** epoch)
        tune.report({
            "epoch": epoch, METRIC: value, "best_valid": value, "finished": epoch == MAX_EPOCHS,
        })


@pytest.fixture(scope="module")
def local_ray():
    import ray
    from ray import cloudpickle

    # Test modules are not importable on Ray workers; ship this module's trainable by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_asha_stopped_trials_are_pruned_in_the_rdb_study(local_ray, tmp_path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    storage = f"sqlite:///{tmp_path}/optuna.db"
    searcher = PruningAwareOptunaSearch(
        SEARCH, metric=METRIC, mode="max", seed=7, study_name="states", storage_url=storage,
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=ASHAScheduler(time_attr="epoch", max_t=MAX_EPOCHS, grace_period=1, reduction_factor=2),
            num_samples=8, max_concurrent_trials=2, metric=METRIC, mode="max",
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "results"), name="states", verbose=0),
    )
    grid = tuner.fit()

    # The budget (8) exceeds the 6 points: proposals of a point already run are not run again,
    # so the study's sweep trials are exactly Tune's trials (only a FAIL point may come back).
    by_number = {t.number: t for t in sweep_trials(optuna.load_study(study_name="states", storage=storage))}
    assert len(by_number) == len(list(grid))
    ran = [t.params["quality"] for t in by_number.values() if t.state != TrialState.FAIL]
    assert len(ran) == len(set(ran))
    states = {t.state for t in by_number.values()}
    assert TrialState.RUNNING not in states
    tune_epochs = {}
    for result in grid:
        q = result.config["quality"]
        tune_epochs.setdefault(q, []).append((result.metrics or {}).get("epoch", 0))
    for trial in by_number.values():
        q = trial.params["quality"]
        if q == 0.6:
            assert trial.state == TrialState.FAIL
        elif trial.state == TrialState.COMPLETE:
            # COMPLETE only for trials that ran their whole budget, valued at the full curve.
            assert trial.value == pytest.approx(q * (1 - 0.5 ** MAX_EPOCHS))
        else:
            assert trial.state == TrialState.PRUNED
    # ASHA did stop some trials early, and each of those is PRUNED rather than COMPLETE.
    stopped_early = [q for q, epochs in tune_epochs.items() if q != 0.6 and min(epochs) < MAX_EPOCHS]
    assert stopped_early, tune_epochs
    pruned_q = {t.params["quality"] for t in by_number.values() if t.state == TrialState.PRUNED}
    assert set(stopped_early) <= pruned_q


def test_grid_sampler_visits_every_point_once_at_concurrency_two(local_ray, tmp_path, caplog):
    from ray import tune

    storage = f"sqlite:///{tmp_path}/optuna.db"
    searcher = PruningAwareOptunaSearch(
        SEARCH, metric=METRIC, mode="max", seed=7, study_name="grid", storage_url=storage, sampler="grid",
    )
    grid = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=6, max_concurrent_trials=2, metric=METRIC, mode="max",
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "results"), name="grid", verbose=0),
    ).fit()
    assert sorted(r.config["quality"] for r in grid) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    study = optuna.load_study(study_name="grid", storage=storage)
    assert sorted(t.params["quality"] for t in study.trials) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    # The grid's end (GridSampler calls Study.stop, which raises outside optimize) is no refusal.
    assert all(t.state.is_finished() for t in study.trials)
    assert "Optuna refused" not in caplog.text


def test_trials_left_running_by_a_killed_driver_are_closed_as_fail(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="orphans", storage=storage, direction="maximize")
    done = study.ask()
    study.tell(done, 0.5)
    study.ask()  # asked by a driver that died before telling
    assert fail_orphaned_trials(storage, "orphans") == [1]
    states = [t.state for t in optuna.load_study(study_name="orphans", storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    assert fail_orphaned_trials(storage, "no-such-study") == []


def test_a_space_smaller_than_the_budget_runs_each_point_once_and_then_stops(local_ray, tmp_path):
    """TPE over 3 points with a budget of 8 trials: once all three have been proposed, TPE
    proposes them again; those proposals are told their twin's result and never run, and the
    search ends when every point has been tried."""
    from ray import tune

    from pipeline.optuna_search import DUPLICATE_OF, sweep_trials

    storage = f"sqlite:///{tmp_path}/optuna.db"
    space = {"quality": SearchSpec("quality", "model", "quality", "choice", values=(0.1, 0.2, 0.3))}
    searcher = PruningAwareOptunaSearch(
        space, metric=METRIC, mode="max", seed=7, study_name="small", storage_url=storage,
    )
    grid = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=8, max_concurrent_trials=1, metric=METRIC, mode="max",
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "results"), name="small", verbose=0),
    ).fit()
    assert sorted(r.config["quality"] for r in grid) == [0.1, 0.2, 0.3]
    study = optuna.load_study(study_name="small", storage=storage)
    ran = sweep_trials(study)
    assert sorted(t.params["quality"] for t in ran) == [0.1, 0.2, 0.3]
    by_number = {t.number: t for t in study.trials}
    for dup in (t for t in study.trials if DUPLICATE_OF in t.user_attrs):
        twin = by_number[dup.user_attrs[DUPLICATE_OF]]
        assert dup.params == twin.params and dup.state == twin.state and dup.value == twin.value


def test_a_trial_handed_out_by_a_killed_driver_is_adopted_not_failed(tmp_path):
    """The driver died after Optuna handed out a trial but before Tune saved it: the next
    suggestion takes that study trial over (same number, same point)."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = PruningAwareOptunaSearch(SEARCH, metric=METRIC, mode="max", seed=7, study_name="adopt",
                                      storage_url=storage)
    lost = first.suggest("lost_trial")
    second = PruningAwareOptunaSearch(SEARCH, metric=METRIC, mode="max", seed=7, study_name="adopt",
                                       storage_url=storage)
    assert second.suggest("new_trial") == lost
    second.on_trial_result("new_trial", {METRIC: 0.2, "epoch": 1})
    second.on_trial_result("new_trial", {METRIC: 0.2, "epoch": 1})  # re-reported after a resume
    second.on_trial_complete("new_trial", {METRIC: 0.2, "best_valid": 0.2, "finished": True})
    # A completion an earlier driver had told already is skipped quietly, never a FAIL.
    third = PruningAwareOptunaSearch(SEARCH, metric=METRIC, mode="max", seed=7, study_name="adopt",
                                      storage_url=storage)
    third._ot_trials["new_trial"] = second._ot_trials["new_trial"]
    third.on_trial_complete("new_trial", {METRIC: 0.2, "best_valid": 0.2, "finished": True})
    trials = optuna.load_study(study_name="adopt", storage=storage).trials
    assert [(t.number, t.state, t.intermediate_values) for t in trials] == [(0, TrialState.COMPLETE, {1: 0.2})]
    assert fail_orphaned_trials(storage, "adopt") == []
