"""The final evaluation of a trained model: a trainer checkpoint scored on the dataset's splits
gives the metrics the trainer recorded at its best epoch; a wrong path is refused by name."""

from __future__ import annotations

import pytest

from pipeline import stages
from pipeline.checkpoint_evaluation import evaluate_checkpoint

TINY = {"n_users": 120, "n_items": 90, "n_interactions": 1800}


def test_final_evaluation_of_a_checkpoint_matches_the_trained_best_epoch(tmp_path):
    from clear_core.trainer import TrainConfig, fit

    out = stages.synthesize(tmp_path, overrides=TINY)
    from clear_core.data.loading import load_dataset

    dataset = load_dataset(out["info"]["dataset"])
    train = {"max_epochs": 3, "patience": 5, "batch_size": 256, "device": "cpu"}
    result = fit(dataset, "mf", None, TrainConfig.resolve(train), checkpoint_dir=tmp_path / "ckpt")
    evaluated = evaluate_checkpoint(out["info"]["dataset"], tmp_path / "ckpt", model="mf", train=train)
    assert evaluated["epoch"] == result.best_epoch
    assert evaluated["test"]["recall@20"] == pytest.approx(result.test["recall@20"], abs=1e-6)
    assert evaluated["valid"]["ndcg@20"] == pytest.approx(result.valid["ndcg@20"], abs=1e-6)


def test_a_folder_without_a_checkpoint_is_refused_by_name(tmp_path):
    from clear_core.errors import ConfigError

    with pytest.raises(ConfigError, match="no best.pt"):
        evaluate_checkpoint(tmp_path, tmp_path, model="mf")
