"""Reproducibility runs: the pinned configuration reproduces the committed reference, a changed
default is reported as drift with a readable diff, and the reference only changes on purpose.

Tests never edit committed files: they read the committed reference and configs, and write
changed copies under tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.repro import (
    Comparison,
    PartResult,
    compare,
    config_differences,
    format_report,
    load_repro_config,
    run_parts,
    run_repro,
    shared_dir,
    values_match,
)

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "repro" / "reference.json"
SHARED = Path(os.environ.get("CLEARREC_SHARED") or REPO.parent / "shared")

# A run that takes seconds: a small generated dataset and one or two epochs.
TINY_DATASET = {"n_users": 120, "n_items": 80, "n_interactions": 2000}


def tiny_config(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "repro.yaml").read_text())
    raw["dataset"]["set"] = dict(TINY_DATASET)
    raw["train"]["train"] = {"max_epochs": 2, "patience": 2, "seed": 7, "batch_size": 512}
    raw["sweep"]["overrides"] = {
        **raw["sweep"]["overrides"], "num_samples": 2, "train.max_epochs": 2, "train.batch_size": 512,
    }
    for key, value in changes.items():
        raw[key] = value
    path = tmp_path / "repro.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def configs_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of configs/ that the code under test reads instead of the committed one."""
    copy = tmp_path / "configs"
    shutil.copytree(REPO / "configs", copy)
    monkeypatch.setenv("CLEARREC_CONFIG_DIR", str(copy))
    return copy


# --- the fast check in `make test` -------------------------------------------------------------


def test_pinned_training_reproduces_the_committed_reference(tmp_path):
    config = load_repro_config()
    assert config.reference == REFERENCE
    outcome = run_repro(config, out_dir=tmp_path, parts=["train"], tracking_uri=None)
    assert outcome.exit_code == 0, outcome.report
    assert outcome.comparison.rows and all(r.ok for r in outcome.comparison.rows)
    assert {"valid/recall@20", "test/ndcg@20", "best_epoch"} <= {r.name for r in outcome.comparison.rows}
    assert (tmp_path / "table.txt").read_text() == outcome.report


def test_changed_default_exits_non_zero_and_names_the_field_and_the_metrics(configs_copy, tmp_path, capsys):
    args = ["repro", "--part", "train", "--no-track", "--config", str(tiny_config(tmp_path)),
            "--reference", str(tmp_path / "ref.json"), "--out", str(tmp_path)]
    assert main([*args, "--update", "--reason", "baseline before the change"]) == 0
    capsys.readouterr()
    train_yaml = configs_copy / "train.yaml"
    text = train_yaml.read_text()
    assert "learning_rate: 0.001 " in text
    train_yaml.write_text(text.replace("learning_rate: 0.001 ", "learning_rate: 0.004 "))

    code = main(args)

    out = capsys.readouterr().out
    assert code == 1
    assert "train.learning_rate: reference 0.001, now 0.004" in out
    assert "DRIFT" in out and "valid/recall@20" in out
    drifted = [line for line in out.splitlines() if line.startswith("train ") and line.endswith("DRIFT")]
    assert drifted, out


# --- determinism on CPU ---------------------------------------------------------------------------


def test_training_twice_with_the_same_seed_is_bit_identical(tmp_path):
    config = load_repro_config(tiny_config(tmp_path))
    first, _ = run_parts(config, ["train"], "cpu")
    second, _ = run_parts(config, ["train"], "cpu")
    assert first["train"].values == second["train"].values
    assert first["train"].dataset_fingerprint == second["train"].dataset_fingerprint


def test_a_different_seed_gives_different_metrics(tmp_path):
    # Guards the test above: identical values must come from seeding, not from constant output.
    config = load_repro_config(tiny_config(tmp_path))
    other = load_repro_config(tiny_config(
        tmp_path, train={**config.train, "train": {**config.train["train"], "seed": 8}}
    ))
    a, _ = run_parts(config, ["train"], "cpu")
    b, _ = run_parts(other, ["train"], "cpu")
    assert a["train"].values["last_train_loss"] != b["train"].values["last_train_loss"]


@pytest.fixture
def local_ray():
    """One local Ray for both sweeps of a test (run_sweep uses it and leaves it running)."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def test_sweep_twice_at_concurrency_one_gives_identical_trials(tmp_path, local_ray):
    config = load_repro_config(tiny_config(tmp_path))
    first, _ = run_parts(config, ["sweep"], "cpu")
    second, _ = run_parts(config, ["sweep"], "cpu")
    values = first["sweep"].values
    assert first["sweep"].config == second["sweep"].config
    assert values == second["sweep"].values
    assert values["trial0.status"] == "COMPLETE" and values["trial1.status"] == "COMPLETE"
    assert first["sweep"].config["max_concurrent"] == 1


# --- updating the reference ---------------------------------------------------------------------


def test_update_needs_a_reason(tmp_path, capsys):
    code = main(["repro", "--update", "--part", "train", "--no-track",
                 "--reference", str(tmp_path / "ref.json"), "--out", str(tmp_path)])
    assert code == 2
    assert "--reason" in capsys.readouterr().err
    assert not (tmp_path / "ref.json").exists()


def test_update_records_the_reason_then_a_rerun_matches_and_is_logged_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    config = load_repro_config(tiny_config(tmp_path))
    ref = tmp_path / "ref.json"
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"

    updated = run_repro(config, reference_path=ref, out_dir=tmp_path / "u", parts=["train"],
                        update_reason="tiny config for a test", tracking_uri=uri)
    again = run_repro(config, reference_path=ref, out_dir=tmp_path / "a", parts=["train"], tracking_uri=uri)

    assert updated.exit_code == 0 and again.exit_code == 0, again.report
    saved = json.loads(ref.read_text())
    assert saved["history"][-1]["reason"] == "tiny config for a test"
    assert saved["devices"]["cpu"]["train"]["values"] == again.results["train"].to_json()["values"]
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("clearrec-repro").experiment_id],
        filter_string="tags.`clearrec.repro` = 'true'",
    )
    assert sorted(r.data.tags["clearrec.repro.status"] for r in runs) == ["pass", "update"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert any("train.valid/recall_at_20" in r.data.metrics for r in runs)


def test_update_keeps_parts_it_did_not_run(tmp_path):
    config = load_repro_config(tiny_config(tmp_path))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"schema": 1, "history": [], "devices": {"cpu": {"real": {"kept": True}}}}))
    run_repro(config, reference_path=ref, out_dir=tmp_path, parts=["train"], update_reason="x")
    assert json.loads(ref.read_text())["devices"]["cpu"]["real"] == {"kept": True}


# --- real data ----------------------------------------------------------------------------------


def test_real_part_is_skipped_with_the_reason_when_the_shared_folder_is_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARREC_SHARED", str(tmp_path / "nowhere"))
    assert shared_dir() == tmp_path / "nowhere"
    results, skipped = run_parts(load_repro_config(), ["real"], "cpu")
    assert results == {}
    assert "nowhere" in skipped["real"] and "absent" in skipped["real"]


@pytest.mark.real_data
@pytest.mark.slow
def test_real_part_reproduces_the_committed_reference(tmp_path):
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED}/data is absent (set CLEARREC_SHARED)")
    outcome = run_repro(load_repro_config(), reference_path=REFERENCE, out_dir=tmp_path, parts=["real"])
    assert outcome.exit_code == 0, outcome.report


# --- comparing ----------------------------------------------------------------------------------


def part(values, config=None, fingerprint="f" * 64):
    return PartResult(config or {"model": "clear"}, fingerprint, values)


def test_numbers_match_within_the_tolerance_integers_and_texts_exactly():
    assert values_match(0.5, 0.5 + 9e-7, 1e-6)
    assert not values_match(0.5, 0.5 + 2e-6, 1e-6)
    assert not values_match(3, 4, 1.0)
    assert not values_match("COMPLETE", "PRUNED", 1.0)
    assert not values_match(0.5, None, 1.0)


def test_comparison_flags_changed_values_new_values_config_and_fingerprint():
    reference = {"train": {
        "config": {"model": "clear", "train": {"learning_rate": 0.001}},
        "dataset_fingerprint": "a" * 64,
        "values": {"valid/recall@20": 0.25, "best_epoch": 3},
    }}
    measured = part({"valid/recall@20": 0.2, "best_epoch": 3, "test/recall@20": 0.1},
                    {"model": "clear", "train": {"learning_rate": 0.002}}, "b" * 64)
    result = compare(reference, {"train": measured}, 1e-6)
    by_name = {r.name: r for r in result.rows}
    assert not by_name["valid/recall@20"].ok and by_name["best_epoch"].ok
    assert not by_name["test/recall@20"].ok and by_name["test/recall@20"].expected is None
    assert result.config_diffs == {"train": ["train.learning_rate: reference 0.001, now 0.002"]}
    assert any("fingerprint" in p for p in result.problems)
    report = format_report(result, device="cpu", tolerance=1e-6, skipped={"real": "--skip-real"})
    assert "-5.000e-02" in report and "DRIFT" in report and "SKIPPED (--skip-real)" in report
    summary = report.split("largest drifts (2 of 2):", 1)[1]
    assert summary.index("test/recall@20") < summary.index("valid/recall@20")  # absent first


def test_a_part_without_reference_is_drift_not_silence():
    result = compare({}, {"sweep": part({"best_trial": 0})}, 1e-6)
    assert result.drifted
    assert "no reference" in result.problems[0]


def test_config_differences_list_added_and_removed_fields():
    diffs = config_differences({"a": 1, "b": {"c": 2}}, {"b": {"c": 2, "d": 3}})
    assert diffs == ["a: reference 1, now absent", "b.d: absent in reference, now 3"]
    assert not Comparison().drifted


def test_bad_repro_config_lists_every_problem(tmp_path):
    path = tmp_path / "repro.yaml"
    path.write_text(yaml.safe_dump({
        "reference": "r.json", "out_dir": "o", "dataset": {"set": {}}, "train": {"model": "clear"}, "sweep": {"config": "x", "overrides": {}},
        "real": {"dataset": "tiktok", "model": "clear", "model_params": {}, "train": {}},
        "tolerances": {"cpu": {"abs": -1.0}, "tpu": {"abs": 1.0}},
    }))
    from clear_core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_repro_config(path)
    text = str(err.value)
    for expected in ("train.model_params: missing", "tolerances.cpu.abs", "tolerances.cuda", "tolerances.tpu"):
        assert expected in text


# --- CI definitions -----------------------------------------------------------------------------


def workflow(name: str) -> dict:
    data = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    # YAML 1.1 reads the bare key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def run_lines(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {line.split(":", 1)[0] for line in text.splitlines() if line and not line[0].isspace() and ":" in line}


def test_tests_run_on_every_push_and_pull_request_with_python_3_11_and_a_pip_cache():
    ci = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    job = ci["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    python = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] == "3.11" and python["with"]["cache"] == "pip"
    assert "make test" in run_lines(job)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_repro_runs_on_push_pull_request_and_nightly_and_uploads_its_artifacts_even_on_drift():
    repro = workflow("repro.yml")
    assert {"push", "pull_request", "schedule"} <= set(repro["on"])
    assert repro["on"]["schedule"][0]["cron"].split()[2:] == ["*", "*", "*"]
    for name, job in repro["jobs"].items():
        assert "make repro" in run_lines(job), name
        upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
        assert upload["if"] == "always()", name
        assert upload["with"]["path"].rstrip("/") == repro["env"]["REPRO_OUT"]
    assert repro["env"]["MLFLOW_TRACKING_URI"].endswith(repro["env"]["REPRO_OUT"] + "/mlruns.db")


def test_gpu_job_only_runs_where_a_gpu_runner_is_declared():
    gpu = workflow("repro.yml")["jobs"]["gpu"]
    assert "self-hosted" in gpu["runs-on"] and "gpu" in gpu["runs-on"]
    # Without the guard the job would wait for a runner that does not exist, forever.
    assert "vars." in gpu["if"]
    assert "--device cuda" in run_lines(gpu)


def test_every_make_target_the_workflows_call_exists():
    called = set()
    for name in ("ci.yml", "repro.yml"):
        for job in workflow(name)["jobs"].values():
            for line in run_lines(job).splitlines():
                words = line.replace("|", " ").split()
                if "make" in words:
                    called.add(words[words.index("make") + 1])
    assert called and called <= make_targets(), called - make_targets()


def test_sweep_trials_are_listed_in_the_order_the_searcher_proposed_them():
    from types import SimpleNamespace

    from pipeline.repro import proposal_order

    def trial(trial_id, counter, k):
        path = f"/r/clear-smoke/run_trial_{trial_id}_{counter}_redundancy_rank={k}_2026-11-24_05-23-53"
        return SimpleNamespace(trial_id=trial_id, path=path, params={"redundancy_rank": k})

    # Trial ids are random hex: their order says nothing about the proposal order.
    trials = [trial("ff000000", 2, 8), trial("00000000", 10, 4), trial("aa000000", 1, 2)]
    assert [t.params["redundancy_rank"] for t in sorted(trials, key=proposal_order)] == [2, 8, 4]


def test_cuda_runs_use_their_own_reference_entry_and_fail_clearly_without_a_gpu(tmp_path, capsys):
    import torch

    from pipeline.repro import device_kind

    assert device_kind("cuda:1") == "cuda" and device_kind("cpu") == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the message for a CPU-only machine cannot be seen here")
    code = main(["repro", "--device", "cuda", "--part", "train", "--no-track",
                 "--reference", str(REFERENCE), "--out", str(tmp_path), "--config", str(tiny_config(tmp_path))])
    assert code == 2
    assert "CUDA is not available" in capsys.readouterr().err
