"""Trainer checkpoints: found in a file or a folder (best before last), loaded into the model their
run signature names, and refused with the file named when they do not fit."""

from __future__ import annotations

import pytest
import torch

from clear_core import checkpoints
from clear_core.data.synthetic import generate_synthetic
from clear_core.errors import ConfigError
from clear_core.trainer import TrainConfig, fit

TINY = {"n_users": 60, "n_items": 50, "n_interactions": 900}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    dataset = generate_synthetic(**TINY).dataset
    folder = tmp_path_factory.mktemp("ckpt")
    config = TrainConfig.resolve({"max_epochs": 2, "patience": 5, "batch_size": 256, "device": "cpu"})
    result = fit(dataset, "mf", {"embedding_size": 8}, config, checkpoint_dir=folder)
    return dataset, folder, result


def test_a_folder_yields_best_before_last_and_a_nested_one_is_found(trained, tmp_path):
    _, folder, _ = trained
    assert checkpoints.find(folder) == folder / checkpoints.BEST_NAME
    assert checkpoints.find(folder / checkpoints.LAST_NAME) == folder / checkpoints.LAST_NAME
    nested = tmp_path / "trial" / "trainer"
    nested.mkdir(parents=True)
    (nested / checkpoints.LAST_NAME).write_bytes((folder / checkpoints.LAST_NAME).read_bytes())
    assert checkpoints.find(tmp_path) == nested / checkpoints.LAST_NAME
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no best.pt or last.pt"):
        checkpoints.find(empty)
    with pytest.raises(ConfigError, match="file not found"):
        checkpoints.find(tmp_path / "nope.pt")


def test_best_pt_takes_its_model_from_the_signature_in_last_pt_beside_it(trained):
    dataset, folder, result = trained
    model, epoch, path = checkpoints.load_trained_model(dataset, folder)
    assert path.name == checkpoints.BEST_NAME and epoch == result.best_epoch
    assert model.name == "mf" and not model.training
    saved = torch.load(path, weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(trained):
    dataset, folder, _ = trained
    with pytest.raises(ConfigError, match=r"best\.pt: does not fit model 'lightgcn'"):
        checkpoints.load_trained_model(dataset, folder, model="lightgcn", model_params={"embedding_size": 16})


def test_a_truncated_file_is_an_error_naming_it(tmp_path):
    broken = tmp_path / checkpoints.LAST_NAME
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="last.pt: cannot be read"):
        checkpoints.read(broken)


def test_resuming_another_run_lists_what_differs(trained):
    dataset, folder, _ = trained
    signature = checkpoints.run_signature(
        dataset, "mf", {"embedding_size": 16}, TrainConfig.resolve({"device": "cpu"})
    )
    with pytest.raises(ConfigError, match="model_params differs"):
        checkpoints.load_for_resume(folder / checkpoints.LAST_NAME, torch.device("cpu"), signature)
