"""The sweep configuration: defaults from configs/sweeps, merge rules, and every bad field of a
sweep reported at once before anything runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from clear_core.data.synthetic import generate_synthetic
from clear_core.errors import ConfigError
from pipeline.sweep_config import dataset_problems, load_sweep_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, payload: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(payload), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, payload: dict, overrides: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_sweep_config(write(tmp_path, payload), overrides)
    return info.value.problems


def test_default_sweep_searches_the_papers_grid_of_model_clear():
    config = load_sweep_config(None)
    assert config.model == "clear"
    grid = {name: (spec.target, spec.param, list(spec.values)) for name, spec in config.search.items()}
    assert grid == {
        "redundancy_rank": ("model", "redundancy_rank", [2, 4, 8, 16, 20]),
        "projection_strength": ("model", "projection_strength", [0.3, 0.5, 0.7, 0.9]),
        "refresh_every": ("model", "refresh_every", [1, 2, 5, 10]),
    }
    assert config.metric == "valid/recall@20" and config.mode == "max"
    assert config.scheduler.type == "asha"


def test_a_sweep_file_is_merged_over_the_defaults_and_its_search_replaces_theirs():
    config = load_sweep_config(REPO / "configs/sweeps/smoke.yaml")
    assert set(config.search) == {"redundancy_rank", "projection_strength", "refresh_every"}
    assert config.search["redundancy_rank"].values == (2, 4, 8)
    # Keys the smoke file does not name come from default.yaml.
    assert config.resources.cpu == load_sweep_config(None).resources.cpu
    assert config.train["max_epochs"] == 4


def _shipped_sweeps() -> list[tuple[str, str]]:
    cases = []
    for path in sorted((REPO / "configs/sweeps").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        models = {raw.get("model", "clear"), *raw.get("per_model", {})}
        cases += [(path.name, model) for model in sorted(models)]
    return cases


@pytest.mark.parametrize(("name", "model"), _shipped_sweeps())
def test_every_shipped_sweep_file_is_valid_for_every_model_it_configures(name, model):
    config = load_sweep_config(REPO / "configs/sweeps" / name, {"model": model})
    assert config.model == model
    assert config.search


def test_dotted_overrides_reach_nested_fields(tmp_path):
    config = load_sweep_config(
        None, {"scheduler.grace_period": 2, "train.max_epochs": 3, "storage.path": str(tmp_path), "num_samples": 5}
    )
    assert config.scheduler.grace_period == 2
    assert config.train["max_epochs"] == 3 and config.max_epochs == 3
    assert config.storage.path == str(tmp_path)
    assert config.num_samples == 5


def test_a_dotted_override_into_a_per_model_search_changes_that_axis_and_keeps_the_rest(tmp_path):
    # The LATTICE row of 2026-12-06 ran one trial instead of four: the override replaced the
    # whole per_model mapping, so reg_weight's axis, the other models and the grid sampler went.
    path = write(tmp_path, {"per_model": {
        "lattice": {"sampler": "grid", "model_params": {"knn_k": 5},
                    "search": {"reg_weight": {"type": "choice", "values": [0.0, 0.001]},
                               "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}},
        "mf": {"search": {"reg_weight": {"type": "choice", "values": [0.01]}}},
    }})
    override = {"model": "lattice",
                "per_model.lattice.search.learning_rate": {"type": "choice", "values": [0.001]}}
    config = load_sweep_config(path, override)
    assert set(config.search) == {"reg_weight", "learning_rate"}
    assert config.search["reg_weight"].values == (0.0, 0.001)
    # The leaf is replaced whole: no `low`/`high` left over from the loguniform it replaced.
    assert (config.search["learning_rate"].type, config.search["learning_rate"].values, config.search["learning_rate"].low) == ("choice", (0.001,), None)
    assert (config.sampler, config.num_samples) == ("grid", 2)
    assert config.model_params == {"knn_k": 5}
    assert load_sweep_config(path, {**override, "model": "mf"}).search["reg_weight"].values == (0.01,)


def test_a_dotted_search_override_narrows_the_chosen_models_own_search():
    tiktok = REPO / "configs/sweeps/tiktok.yaml"
    own = load_sweep_config(tiktok, {"model": "lightgcn"})
    narrowed = load_sweep_config(tiktok, {"model": "lightgcn",
                                          "search.reg_weight": {"type": "choice", "values": [0.1]}})
    assert set(narrowed.search) == set(own.search) and len(own.search) > 1
    assert narrowed.search["reg_weight"].values == (0.1,)
    assert narrowed.sampler == own.sampler
    # CLEAR's own search (the file's top level) is narrowed the same way.
    clear = load_sweep_config(tiktok, {"search.knn_k": {"type": "choice", "values": [5]}})
    assert set(clear.search) == set(load_sweep_config(tiktok).search)


def test_a_dotted_dataset_override_switches_between_a_folder_and_the_generator(tmp_path):
    # The dataset's two forms exclude each other: naming one field of the other form replaces it.
    folder = load_sweep_config(None, {"dataset.path": str(tmp_path)})
    assert folder.dataset == {"path": str(tmp_path)}
    generated = load_sweep_config(REPO / "configs/sweeps/tiktok.yaml", {"dataset.synthetic": True})
    assert generated.dataset == {"synthetic": True}
    smaller = load_sweep_config(None, {"dataset.set.n_users": 50})
    assert smaller.dataset["set"] == {"n_users": 50} and smaller.dataset["synthetic"] is True


def test_a_dotted_override_through_a_value_that_is_not_a_mapping_names_the_path():
    with pytest.raises(ConfigError, match=r"'num_samples.x'.*num_samples is not a mapping"):
        load_sweep_config(None, {"num_samples.x": 3})


def test_train_config_fields_can_be_searched_and_land_in_the_train_overrides(tmp_path):
    config = load_sweep_config(
        write(tmp_path, {"search": {
            "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
            "redundancy_rank": {"type": "int", "low": 2, "high": 8},
        }})
    )
    assert config.search["learning_rate"].target == "train"
    assert config.search["redundancy_rank"].target == "model"
    model_params, train = config.split_params({"learning_rate": 0.003, "redundancy_rank": 4})
    assert train["learning_rate"] == 0.003 and "learning_rate" not in model_params
    assert model_params["redundancy_rank"] == 4


def test_a_baseline_model_takes_its_search_from_per_model():
    config = load_sweep_config(None, {"model": "lightgcn"})
    assert config.model == "lightgcn"
    assert set(config.search) == {"learning_rate"}
    assert config.search["learning_rate"].target == "train"


def test_every_bad_field_is_listed_at_once(tmp_path):
    problems = problems_of(tmp_path, {
        "search": {
            "not_a_param": {"type": "choice", "values": [1, 2]},
            "projection_strength": {"type": "uniform", "low": 0.9, "high": 0.3},
            "refresh_every": {"type": "choice", "values": []},
            "redundancy_rank": {"type": "int", "low": 8, "high": 2},
        },
        "metric": "test/recall@20",
        "num_samples": 0,
        "scheduler": {"type": "hyperband"},
        "unknown_top_level": 1,
    })
    text = "\n".join(problems)
    for needle in (
        "search.not_a_param: unknown sweep parameter",
        "search.projection_strength: inverted range",
        "search.refresh_every.values: expected a non-empty list",
        "search.redundancy_rank: empty range",
        "metric: expected 'valid/",
        "num_samples: expected >= 1",
        "scheduler.type",
        "unknown_top_level: unknown field",
    ):
        assert needle in text, f"{needle!r} missing from:\n{text}"


def test_empty_float_range_and_wrongly_typed_choices_are_rejected(tmp_path):
    problems = problems_of(tmp_path, {"search": {
        "projection_strength": {"type": "uniform", "low": 0.5, "high": 0.5},
        "redundancy_rank": {"type": "choice", "values": [2, "four"]},
        "learning_rate": {"type": "loguniform", "low": 0.0, "high": 0.1},
    }})
    text = "\n".join(problems)
    assert "search.projection_strength: empty range" in text
    assert "search.redundancy_rank.values[1]: expected int" in text
    assert "search.learning_rate.low: a loguniform range needs low > 0" in text


def test_metric_cut_off_must_be_one_the_trainer_evaluates(tmp_path):
    problems = problems_of(tmp_path, {"metric": "valid/recall@30"})
    assert any("K=30 is not in train.topk" in p for p in problems)


def test_fixed_model_params_are_checked_against_the_model(tmp_path):
    problems = problems_of(tmp_path, {"model_params": {"embedding_sise": 32}})
    assert any(p.startswith("model_params.embedding_sise: not a parameter of model 'clear'") for p in problems)


def test_fingerprint_ignores_where_results_go_but_not_what_is_searched(tmp_path):
    a = load_sweep_config(None, {"storage.path": str(tmp_path / "a")})
    b = load_sweep_config(None, {"storage.path": str(tmp_path / "b"), "study.storage": "sqlite:///x.db"})
    c = load_sweep_config(None, {"num_samples": 3})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_fingerprint_changes_when_a_model_or_trainer_default_changes(tmp_path, monkeypatch):
    before = load_sweep_config(None, {}).fingerprint()
    copy = tmp_path / "configs"
    shutil.copytree(REPO / "configs", copy)
    monkeypatch.setenv("CLEARREC_CONFIG_DIR", str(copy))
    assert load_sweep_config(None, {}).fingerprint() == before  # same defaults, same sweep

    clear_yaml = copy / "models" / "clear.yaml"
    clear_yaml.write_text(clear_yaml.read_text().replace("knn_k: 10 ", "knn_k: 12 "))
    changed_model = load_sweep_config(None, {}).fingerprint()
    train_yaml = copy / "train.yaml"
    train_yaml.write_text(train_yaml.read_text().replace("batch_size: 2048 ", "batch_size: 1024 "))
    changed_train = load_sweep_config(None, {}).fingerprint()
    assert len({before, changed_model, changed_train}) == 3


@pytest.fixture(scope="module")
def tiny_dataset():
    return generate_synthetic(
        n_users=80, n_items=60, n_interactions=900, modalities={"image": 12, "text": 10}
    ).dataset


def test_rank_above_the_projected_dimension_is_found_before_any_trial(tiny_dataset):
    config = load_sweep_config(None, {"model_params": {"embedding_size": 8}})
    problems = dataset_problems(config, tiny_dataset)
    assert any(
        "search.redundancy_rank: redundancy_rank (k) up to 20 exceeds the projected dimension "
        "(embedding_size) = 8" in p for p in problems
    ), problems


def test_a_search_that_fits_the_data_has_no_problems(tiny_dataset):
    config = load_sweep_config(REPO / "configs/sweeps/smoke.yaml", {"model_params": {"embedding_size": 16, "knn_k": 5}})
    assert dataset_problems(config, tiny_dataset) == []


def test_an_empty_search_is_refused_with_the_way_to_fix_a_configuration(tmp_path):
    problems = problems_of(tmp_path, {"search": {}})
    assert any(p.startswith("search: nothing to search for model 'clear'") for p in problems)
    fixed = load_sweep_config(write(tmp_path, {"search": {"redundancy_rank": {"type": "choice", "values": [4]}}}))
    assert fixed.search["redundancy_rank"].values == (4,)


def test_grid_sampler_needs_choices_and_at_most_the_grid_size(tmp_path):
    problems = problems_of(tmp_path, {
        "sampler": "grid", "num_samples": 3,
        "search": {
            "redundancy_rank": {"type": "choice", "values": [2, 4]},
            "projection_strength": {"type": "uniform", "low": 0.3, "high": 0.9},
        },
    })
    assert any("sampler: grid needs choice specs only; projection_strength" in p for p in problems)
    problems = problems_of(tmp_path, {
        "sampler": "grid", "num_samples": 5,
        "search": {"redundancy_rank": {"type": "choice", "values": [2, 4]},
                   "projection_strength": {"type": "choice", "values": [0.5, 0.9]}},
    })
    assert problems == ["num_samples: 5 is more than the 4 points of the grid"]
    assert problems_of(tmp_path, {"sampler": "random"}) == ["sampler: expected one of ['tpe', 'grid'], got 'random'"]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_file_is_valid(path):
    config = load_sweep_config(path)
    assert config.search and config.num_samples >= 1


def test_final_seeds_are_off_by_default_and_part_of_what_makes_a_sweep(tmp_path):
    assert load_sweep_config(None).final_seeds == ()
    seeded = load_sweep_config(write(tmp_path, {"final_seeds": [7, 42, 123]}))
    assert seeded.final_seeds == (7, 42, 123)
    assert seeded.to_dict()["final_seeds"] == [7, 42, 123]
    # More seeds change what the sweep reports, so they make another sweep, not a reused one.
    assert seeded.fingerprint() != load_sweep_config(None).fingerprint()


def test_final_seeds_must_be_distinct_integers(tmp_path):
    assert problems_of(tmp_path, {"final_seeds": [7, "x", 1.5]}) == [
        "final_seeds: expected a list of integer seeds, got 'x', 1.5"]
    assert problems_of(tmp_path, {"final_seeds": [7, 42, 7]}) == [
        "final_seeds: each seed once (a repeat would count one run twice); repeated: [7]"]
    assert any(p.startswith("final_seeds: expected list") for p in problems_of(tmp_path, {"final_seeds": 7}))


def test_a_baseline_may_run_its_own_grid_beside_the_files_tpe_budget(tmp_path):
    payload = {
        "num_samples": 40,  # CLEAR's TPE budget
        "per_model": {
            "lightgcn": {"model_params": {}, "sampler": "grid",
                         "search": {"n_layers": {"type": "choice", "values": [2, 3]},
                                    "reg_weight": {"type": "choice", "values": [0.001, 0.01, 0.1]}}},
            "mf": {"model_params": {}, "sampler": "grid", "num_samples": 2,
                   "search": {"reg_weight": {"type": "choice", "values": [0.001, 0.01, 0.1]}}},
        },
    }
    path = write(tmp_path, payload)
    assert load_sweep_config(path).num_samples == 40 and load_sweep_config(path).sampler == "tpe"
    lightgcn = load_sweep_config(path, {"model": "lightgcn"})
    assert (lightgcn.sampler, lightgcn.num_samples) == ("grid", 6)  # every point, not 40
    mf = load_sweep_config(path, {"model": "mf"})
    assert (mf.sampler, mf.num_samples) == ("grid", 2)  # its own cap
    # The command line still wins.
    assert load_sweep_config(path, {"model": "lightgcn", "num_samples": 4}).num_samples == 4
    assert load_sweep_config(path, {"model": "lightgcn", "sampler": "tpe"}).num_samples == 40


def test_a_per_model_entry_with_a_bad_field_is_reported(tmp_path):
    problems = problems_of(tmp_path, {"per_model": {"mf": {"sampler": 3, "search": {}}}}, {"model": "mf"})
    assert any(p.startswith("per_model.mf.sampler: expected str") for p in problems)
