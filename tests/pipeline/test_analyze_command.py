"""`clearrec analyze`: JSON + PNGs from raw features or from a trained checkpoint; bad input
exits 2 naming the problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clear_core.data.synthetic import write_synthetic
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "synthetic"
    write_synthetic(
        out, n_users=120, n_items=90, n_interactions=2400, r_shared=3,
        modalities={"image": 24, "text": 16}, redundancy=0.8, seed=5,
    )
    return out


def test_raw_feature_analysis_writes_json_and_plots(synth_dir, tmp_path, capsys):
    out = tmp_path / "an"
    assert main(["analyze", str(synth_dir), "--out", str(out), "--set", "redundancy_rank=3",
                 "--set", "neighbours=5"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert result["pair"] == ["image", "text"]
    assert result["settings"]["redundancy_rank"] == 3
    spec = result["spectrum"]
    assert spec["after"]["singular_values"][0] < spec["before"]["singular_values"][0]
    assert result["neighbour_overlap"]["ratio_to_random"] > 1.0
    for png in ("spectrum.png", "neighbour_overlap.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert "effective rank" in capsys.readouterr().out


def test_checkpoint_analysis_uses_the_trained_projector(synth_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    assert main(["train", str(synth_dir), "--model", "clear", "--max-epochs", "2",
                 "--set", "redundancy_rank=2", "--checkpoint-dir", str(ckpt), "--no-progress",
                 "--out", str(tmp_path / "train")]) == 0
    out = tmp_path / "an"
    assert main(["analyze", str(synth_dir), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert result["model"] == "clear"
    assert result["spectrum"]["redundancy_rank"] == 2
    assert "neighbour_overlap_projected" in result
    assert (out / "spectrum.png").exists()


def test_bad_settings_exit_2_listing_every_field(synth_dir, tmp_path, capsys):
    code = main(["analyze", str(synth_dir), "--out", str(tmp_path / "x"),
                 "--set", "neighbours=0", "--set", "projection_strength=2", "--set", "colour=red"])
    assert code == 2
    err = capsys.readouterr().err
    assert "colour" in err
    assert not (tmp_path / "x" / "analysis.json").exists()
    code = main(["analyze", str(synth_dir), "--out", str(tmp_path / "y"), "--set", "neighbours=0",
                 "--set", "projection_strength=2"])
    err = capsys.readouterr().err
    assert code == 2 and "neighbours" in err and "projection_strength" in err


def test_missing_checkpoint_exits_2(synth_dir, tmp_path, capsys):
    assert main(["analyze", str(synth_dir), "--checkpoint", str(tmp_path / "nope.pt"),
                 "--out", str(tmp_path / "z")]) == 2
    assert "nope.pt" in capsys.readouterr().err


@pytest.mark.real_data
def test_tiktok_image_audio_redundancy(tmp_path):
    folder = Path(os.environ.get("CLEARREC_SHARED", REPO.parent / "shared")) / "data" / "tiktok"
    if not folder.is_dir():
        pytest.skip(f"real data {folder} not present (set CLEARREC_SHARED)")
    assert main(["analyze", str(folder), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "analysis.json").read_text())
    assert result["pair"] == ["audio", "image"]
    assert result["spectrum"]["dims"] == [128, 128]
