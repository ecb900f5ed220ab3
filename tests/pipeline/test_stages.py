"""Pipeline stages: outputs keyed by input fingerprints and config, reused when unchanged, never
half-written; the real stages chained on tiny synthetic data."""

from __future__ import annotations

import json

import pytest

from pipeline import stages

TINY = {"n_users": 120, "n_items": 90, "n_interactions": 1800}


def test_a_stage_runs_once_and_is_reused_while_inputs_and_config_are_unchanged(tmp_path):
    calls = []

    def produce(work):
        calls.append(work)
        (work / "out.txt").write_text("hello")
        return {"file": str(work / "out.txt"), "n": 1}

    first = stages.run_stage("demo", tmp_path, inputs={"a": "fp1"}, config={"x": 1}, produce=produce)
    again = stages.run_stage("demo", tmp_path, inputs={"a": "fp1"}, config={"x": 1}, produce=produce)
    assert len(calls) == 1 and not first.reused and again.reused
    assert again.path == first.path and again.info == first.info
    # Returned paths point at the final folder, not at the work folder the stage wrote into.
    assert first.info["file"] == f"{first.path}/out.txt"
    assert open(first.info["file"]).read() == "hello"
    manifest = json.loads((tmp_path / "demo" / first.key / "stage.json").read_text())
    assert manifest["inputs"] == {"a": "fp1"} and manifest["config"] == {"x": 1} and manifest["info"]["n"] == 1

    changed_input = stages.run_stage("demo", tmp_path, inputs={"a": "fp2"}, config={"x": 1}, produce=produce)
    changed_config = stages.run_stage("demo", tmp_path, inputs={"a": "fp1"}, config={"x": 2}, produce=produce)
    assert len(calls) == 3
    assert len({first.key, changed_input.key, changed_config.key}) == 3


def test_config_key_order_does_not_change_the_key():
    assert stages.stage_key("s", {"a": "1", "b": "2"}, {"x": 1, "y": [1, 2]}) == stages.stage_key(
        "s", {"b": "2", "a": "1"}, {"y": [1, 2], "x": 1}
    )


def test_a_failed_stage_leaves_nothing_that_looks_finished_and_resumes_its_work_folder(tmp_path):
    def crash(work):
        (work / "partial.bin").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        stages.run_stage("demo", tmp_path, inputs={}, config={}, produce=crash)
    key = stages.stage_key("demo", {}, {})
    assert not (tmp_path / "demo" / key).exists()
    seen = []

    def resume(work):
        seen.append((work / "partial.bin").read_text())
        return {}

    out = stages.run_stage("demo", tmp_path, inputs={}, config={}, produce=resume)
    assert seen == ["half"] and not out.reused
    assert not (tmp_path / "demo" / f"{key}.partial").exists()


def test_a_folder_without_manifest_is_not_reused(tmp_path):
    key = stages.stage_key("demo", {}, {})
    (tmp_path / "demo" / key).mkdir(parents=True)
    (tmp_path / "demo" / key / "junk").write_text("x")
    out = stages.run_stage("demo", tmp_path, inputs={}, config={}, produce=lambda w: {"ok": True})
    assert not out.reused and not (tmp_path / "demo" / key / "junk").exists()


def test_reused_paths_follow_a_moved_runs_folder(tmp_path):
    def produce(work):
        (work / "f").write_text("1")
        return {"file": str(work / "f")}

    first = stages.run_stage("demo", tmp_path / "a", inputs={}, config={}, produce=produce)
    (tmp_path / "a").rename(tmp_path / "b")
    moved = stages.run_stage("demo", tmp_path / "b", inputs={}, config={}, produce=produce)
    assert moved.reused and moved.info["file"] == str(tmp_path / "b" / "demo" / first.key / "f")


def test_path_fingerprint_follows_content_not_location(tmp_path):
    for name in ("x", "y"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "f.txt").write_text("same")
        (tmp_path / name / ".cache").mkdir()
        (tmp_path / name / ".cache" / "c").write_text(name)  # hidden: ignored
    assert stages.path_fingerprint(tmp_path / "x") == stages.path_fingerprint(tmp_path / "y")
    (tmp_path / "y" / "sub" / "f.txt").write_text("different")
    assert stages.path_fingerprint(tmp_path / "x") != stages.path_fingerprint(tmp_path / "y")
    (tmp_path / "x" / "sub" / "timings.json").write_text("1.23 s")
    assert stages.path_fingerprint(tmp_path / "x", include=("*.txt",)) == stages.path_fingerprint(
        tmp_path / "y" / ".." / "x", include=("f.txt",))
    assert stages.path_fingerprint(tmp_path / "x", include=("*.txt",)) != stages.path_fingerprint(
        tmp_path / "y", include=("*.txt",))


def test_synthesize_writes_a_loadable_dataset_and_is_reused(tmp_path):
    from clear_core.data.loading import load_dataset

    out = stages.synthesize(tmp_path, overrides=TINY)
    dataset = load_dataset(out["info"]["dataset"])
    assert dataset.fingerprint == out["info"]["fingerprint"]
    assert stages.synthesize(tmp_path, overrides=TINY)["reused"]
    assert stages.synthesize(tmp_path, overrides={**TINY, "seed": 1})["key"] != out["key"]


def test_raw_catalogue_to_prepared_dataset_with_real_text_encoder(tmp_path):
    """synthesize(raw) -> extract (MiniLM only, to stay fast) -> prepare, then an unchanged re-run
    reuses every stage."""
    from clear_core.data.loading import load_dataset
    from clear_core.data.synthetic import resolve_config

    def chain():
        raw = stages.synthesize(tmp_path, overrides=TINY, raw=True)
        feats = stages.extract(tmp_path, meta=raw["info"]["meta"], images=None,
                               options={"image_encoder": "none", "device": "cpu"})
        cfg = resolve_config(TINY)
        ds = stages.prepare(tmp_path, reviews=raw["info"]["reviews"], features=feats["info"]["features"],
                            k=cfg["k_core"], split=cfg["split"], seed=cfg["seed"], name="synthetic")
        return raw, feats, ds

    raw, feats, ds = chain()
    dataset = load_dataset(ds["info"]["dataset"])
    assert dataset.name == "synthetic" and dataset.modalities == ["text"]
    assert dataset.features["text"].shape[1] == 384  # MiniLM's width: real encoder output
    assert ds["info"]["fingerprint"] == dataset.fingerprint
    again = chain()
    assert [s["reused"] for s in again] == [True, True, True]
    assert (tmp_path / "cache" / "encoders").is_dir()
