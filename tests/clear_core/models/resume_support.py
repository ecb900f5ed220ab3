"""Checkpoint resume through the real trainer, for the model tests: a run stopped after two
epochs and resumed must give the metrics of the uninterrupted run, epoch by epoch."""

from __future__ import annotations

import numpy as np
import torch

from clear_core.checkpoints import LAST_NAME
from clear_core.trainer import TrainConfig, fit


def history(result):
    return [(h["epoch"], h["train_loss"], h["valid"], h["test"]) for h in result.history]


def assert_resume_matches(
    dataset, model: str, params: dict, tmp_path, epochs: int = 4, batch_size: int = 512
) -> None:
    config = TrainConfig.resolve({"batch_size": batch_size, "max_epochs": epochs, "device": "cpu", "seed": 3})
    whole = fit(dataset, model, params, config)
    ckpt = tmp_path / "ckpt"
    first = fit(dataset, model, params, config, checkpoint_dir=ckpt, on_epoch_end=lambda r: r.epoch == 2)
    assert first.epochs_run == 2
    # A new process: another global RNG state, and the stop request cleared from the checkpoint.
    torch.manual_seed(987)
    np.random.seed(987)
    state = torch.load(ckpt / LAST_NAME, weights_only=True)
    state["stop_reason"] = ""
    torch.save(state, ckpt / LAST_NAME)
    resumed = fit(dataset, model, params, config, checkpoint_dir=ckpt)
    assert history(resumed) == history(whole)
    assert resumed.test == whole.test
