"""benchmarks/bench_reference.py: what every comparison with MMRec builds its model from, the
files and configuration MMRec's code reads, written once for the speed, quality and same-weights
checks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_reference as br  # noqa: E402

from clear_core.data.synthetic import generate_synthetic  # noqa: E402


@pytest.fixture(scope="module")
def tiktok_like():
    """Generated data with TikTok's modality names (image, audio), the two MMRec's loader reads."""
    return generate_synthetic(n_users=40, n_items=30, n_interactions=400, seed=2,
                              modalities={"image": 6, "audio": 4}, modality_pair=["image", "audio"]).dataset


@pytest.fixture()
def mmrec_src(tmp_path):
    """The two configuration files of an MMRec checkout that a model's configuration reads."""
    src = tmp_path / "src"
    (src / "configs" / "model").mkdir(parents=True)
    (src / "configs" / "overall.yaml").write_text("weight_decay: 0.0\nlearning_rate: 0.001\n")
    (src / "configs" / "model" / "DualGNN.yaml").write_text(
        "reg_weight: [0.1, 0.01]\nk: 10\nhyper_parameters: [reg_weight]\n")
    return src


def test_the_reference_reads_our_image_as_its_visual_and_our_audio_as_its_textual_features(tiktok_like, mmrec_src):
    with br.reference_inputs("dualgnn", tiktok_like, mmrec_src, {"k": 5}) as config:
        folder = Path(config["data_path"]) / config["dataset"]
        np.testing.assert_array_equal(np.load(folder / config["vision_feature_file"]), tiktok_like.features["image"])
        np.testing.assert_array_equal(np.load(folder / config["text_feature_file"]), tiktok_like.features["audio"])
        graph = np.load(folder / config["user_graph_dict_file"], allow_pickle=True).item()  # DualGNN's own input
        assert set(graph) == set(range(tiktok_like.n_users))
        # MMRec's grid runs its first searched value first; the caller's overrides win.
        assert config["reg_weight"] == 0.1 and config["k"] == 5 and config["model"] == "DualGNN"
    assert not folder.exists()  # nothing is left behind once the model has read its files


def test_a_model_without_a_user_graph_gets_none(tiktok_like, mmrec_src):
    (mmrec_src / "configs" / "model" / "MMGCN.yaml").write_text("reg_weight: 0.0001\n")
    with br.reference_inputs("mmgcn", tiktok_like, mmrec_src) as config:
        assert not (Path(config["data_path"]) / config["dataset"] / config["user_graph_dict_file"]).exists()


class Recorder(nn.Module):
    """Stands in for an MMRec model: keeps what it was built with, and holds DualGNN's
    ``result_embed`` as a CPU build of MMRec's DualGNN does (a registered Parameter)."""

    def __init__(self, config, train_data) -> None:
        super().__init__()
        self.config, self.n_users = config, train_data.dataset.get_user_num()
        self.interactions = train_data.inter_matrix("coo").nnz
        self.result_embed = nn.Parameter(torch.zeros(3, 2))


def test_the_reference_is_built_from_our_training_pairs_and_changed_by_its_fixups_in_order(tiktok_like):
    calls = []
    model = br.build_reference("mmgcn", Recorder, br.ReferenceConfig(a=1), tiktok_like,
                               [lambda m: calls.append("first"), None, lambda m: calls.append("second")])
    assert model.n_users == tiktok_like.n_users and model.interactions == len(tiktok_like.train)
    assert model.config["missing"] is None  # MMRec's Config answers None for a key it lacks
    assert calls == ["first", "second"]
    assert "result_embed" in dict(model.named_parameters())  # only DualGNN's build is changed


def test_dualgnns_reference_runs_on_cpu_as_on_cuda(tiktok_like):
    # On CUDA MMRec's result_embed is a plain tensor its forward replaces; on CPU it stays a
    # registered Parameter and that assignment raises.
    model = br.build_reference("dualgnn", Recorder, br.ReferenceConfig(), tiktok_like)
    assert "result_embed" not in dict(model.named_parameters())
    model.result_embed = torch.ones(3, 2)
