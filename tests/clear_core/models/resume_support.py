"""A run interrupted after epoch 2 and resumed from its checkpoint must give the same metrics
as an uninterrupted run (CPU): the check each model's test file makes with its own settings."""

from __future__ import annotations

import numpy as np
import torch

from clear_core.checkpoints import LAST_NAME
from clear_core.trainer import TrainConfig, fit


def _history(result):
    return [(h["epoch"], h["train_loss"], h["valid"], h["test"]) for h in result.history]


def assert_resume_matches_uninterrupted(dataset, model: str, params: dict, tmp_path, epochs: int = 3) -> None:
    config = TrainConfig.resolve({"batch_size": 256, "max_epochs": epochs, "device": "cpu", "seed": 3})
    whole = fit(dataset, model, params, config)
    ckpt = tmp_path / "ckpt"
    first = fit(dataset, model, params, config, checkpoint_dir=ckpt, on_epoch_end=lambda r: r.epoch == 2)
    assert first.epochs_run == 2
    # A fresh process: other global RNG states; the checkpoint must carry everything needed.
    torch.manual_seed(987)
    np.random.seed(987)
    state = torch.load(ckpt / LAST_NAME, weights_only=True)
    state["stop_reason"] = ""  # resume a run still going
    torch.save(state, ckpt / LAST_NAME)
    resumed = fit(dataset, model, params, config, checkpoint_dir=ckpt)
    assert _history(resumed) == _history(whole)
    assert resumed.best_epoch == whole.best_epoch and resumed.test == whole.test
