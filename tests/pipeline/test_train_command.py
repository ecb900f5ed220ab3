"""`clearrec train`: trains on a dataset folder, writes OUT/result.json atomically, and turns
every bad option into one error listing all problems (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch

from clear_core.data.synthetic import write_synthetic
from pipeline.cli import main


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "synthetic"
    write_synthetic(folder, n_users=100, n_items=60, n_interactions=1800, seed=3)
    return folder


def test_train_writes_result_json_with_config_best_epoch_metrics_and_timings(data_dir, tmp_path, capsys):
    folder = tmp_path / "runs" / "train-lightgcn"  # does not exist yet (make train)
    code = main(["train", str(data_dir), "--model", "lightgcn", "--max-epochs", "3", "--seed", "7",
                 "--device", "cpu", "--set", "n_layers=1", "--set", "batch_size=512", "--out", str(folder)])
    assert code == 0
    out = folder / "result.json"
    result = json.loads(out.read_text())
    assert result["model_name"] == "lightgcn" and result["model_params"]["n_layers"] == 1
    assert result["config"]["seed"] == 7 and result["config"]["batch_size"] == 512
    assert result["config"]["max_epochs"] == 3 and result["epochs_run"] == 3
    assert 1 <= result["best_epoch"] <= 3
    assert {"recall@20", "ndcg@20", "precision@10", "map@50"} <= set(result["test"])
    assert result["valid"] == result["history"][result["best_epoch"] - 1]["valid"]
    assert result["median_train_seconds"] > 0 and result["median_eval_seconds"] > 0
    assert len(result["dataset_fingerprint"]) == 64
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temp file left
    summary = json.loads(capsys.readouterr().out)
    assert summary["best_epoch"] == result["best_epoch"]


def test_checkpoint_dir_is_filled_and_reused(data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = ["train", str(data_dir), "--model", "mf", "--max-epochs", "2", "--device", "cpu",
            "--checkpoint-dir", str(ckpt), "--out", str(tmp_path / "a")]
    assert main(args) == 0
    assert (ckpt / "last.pt").exists() and (ckpt / "best.pt").exists()
    assert main(args[:-1] + [str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / n / "result.json").read_text()) for n in ("a", "b"))
    assert a["test"] == b["test"]


def test_a_rerun_replaces_the_result_in_an_existing_out_folder(data_dir, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "result.json").write_text("an older run's result\n")
    (folder / "notes.txt").write_text("mine\n")
    assert main(["train", str(data_dir), "--model", "mf", "--max-epochs", "1", "--device", "cpu",
                 "--no-progress", "--out", str(folder)]) == 0
    assert json.loads((folder / "result.json").read_text())["model_name"] == "mf"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "result.json"]


def test_an_old_style_json_out_is_refused_saying_out_is_a_folder(data_dir, tmp_path, capsys):
    out = tmp_path / "mf.json"
    assert main(["train", str(data_dir), "--model", "mf", "--max-epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: --out now names a folder and result.json is written inside it" in err
    assert f"{tmp_path / 'mf' / 'result.json'}" in err
    assert not out.exists()


def test_unknown_keys_and_wrong_types_are_listed_together(data_dir, tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["train", str(data_dir), "--model", "lightgcn", "--set", "n_layer=2",
                 "--set", "reg_weight=lots", "--set", "batch_size=1.5", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "n_layer: unknown key" in err and "reg_weight: expected float" in err
    assert "batch_size: expected int" in err
    assert not out.exists()


def test_threads_must_be_positive(data_dir, capsys):
    assert main(["train", str(data_dir), "--model", "mf", "--threads", "0"]) == 2
    assert "--threads: expected >= 1" in capsys.readouterr().err


def test_unknown_model_is_an_error(data_dir, capsys):
    assert main(["train", str(data_dir), "--model", "nosuch"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err


def test_missing_dataset_folder_is_an_error(tmp_path, capsys):
    assert main(["train", str(tmp_path / "absent"), "--model", "mf", "--max-epochs", "1"]) == 2
    assert "absent" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_an_error(data_dir, capsys):
    assert main(["train", str(data_dir), "--model", "mf", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
