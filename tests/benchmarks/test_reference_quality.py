"""benchmarks/reference_quality.py: a reference model goes through our trainer unchanged, so a
gap between the two sides is the models' code; and the summary pairs the sides by seed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import reference_quality as rq  # noqa: E402

from clear_core.config import CONFIG_DIR_ENV  # noqa: E402
from clear_core.data.synthetic import generate_synthetic, write_synthetic  # noqa: E402
from clear_core.models import _REGISTRY  # noqa: E402
from clear_core.models.losses import bpr_loss, embedding_penalty  # noqa: E402
from clear_core.trainer import TrainConfig, fit  # noqa: E402


class MMRecStyleMF(nn.Module):
    """MF-BPR written the way MMRec writes a model (built from its config and train loader;
    ``calculate_loss`` on ``[users; positives; negatives]`` returning a tuple of losses;
    ``full_sort_predict``), with the same maths and initialisation as our ``mf``."""

    def __init__(self, config, dataloader) -> None:
        super().__init__()
        n_users, n_items = dataloader.dataset.get_user_num(), dataloader.dataset.get_item_num()
        self.reg_weight = config["reg_weight"]
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, config["embedding_size"])))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, config["embedding_size"])))
        self.epochs_started = 0

    def pre_epoch_processing(self) -> None:
        self.epochs_started += 1

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[0], interaction[1], interaction[2]
        u = self.user_embedding.index_select(0, users)
        p, n = self.item_embedding.index_select(0, torch.cat([pos, neg])).split(users.shape[0])
        # A one-element tensor, not a scalar, as MMRec's BM3 returns.
        ranking = bpr_loss((u * p).sum(-1), (u * n).sum(-1)).reshape(1)
        return ranking, self.reg_weight * embedding_penalty(u, p, n)

    def full_sort_predict(self, interaction):
        return self.user_embedding[interaction[0]] @ self.item_embedding.T


@pytest.fixture(scope="module")
def tiny():
    return generate_synthetic(n_users=120, n_items=80, n_interactions=2400, seed=5).dataset


def test_a_reference_model_that_computes_what_ours_computes_gets_the_same_figures_every_epoch(
        tiny, tmp_path, monkeypatch):
    config = {"embedding_size": 16, "reg_weight": 0.1}
    cls = rq.reference_model_class("fakemf", MMRecStyleMF, config)
    monkeypatch.setitem(_REGISTRY, cls.name, cls)
    monkeypatch.setenv(CONFIG_DIR_ENV, str(rq._config_dir_with(cls.name, tmp_path)))
    train = TrainConfig.resolve({"batch_size": 256, "max_epochs": 4, "device": "cpu", "seed": 3})

    reference = fit(tiny, cls.name, {}, train)
    ours = fit(tiny, "mf", config, train)

    assert [h["train_loss"] for h in reference.history] == [h["train_loss"] for h in ours.history]
    assert [h["valid"] for h in reference.history] == [h["valid"] for h in ours.history]
    assert reference.test == ours.test


def test_a_row_keeps_its_validation_and_test_curves_so_sides_that_stop_apart_can_be_read_epoch_by_epoch(tmp_path):
    write_synthetic(tmp_path / "data", n_users=120, n_items=80, n_interactions=2400, seed=5)
    job = {"side": "ours", "model": "mf", "data": str(tmp_path / "data"), "seed": 3, "threads": 1,
           "ours_set": {}, "reference_set": {},
           "train": {"max_epochs": 6, "patience": 2, "batch_size": 256, "learning_rate": 1e-2}}

    row = rq.run_one(job)

    assert len(row["valid_curve"]) == row["epochs_run"]
    assert max(row["valid_curve"]) == pytest.approx(row["valid"]["recall@20"], abs=1e-6)
    assert row["valid_curve"].index(max(row["valid_curve"])) + 1 == row["best_epoch"]
    assert row["test_curve"][row["best_epoch"] - 1] == pytest.approx(row["test"]["recall@20"], abs=1e-6)


def test_the_reference_hears_every_epoch_start_and_its_loss_terms_are_summed(tiny):
    cls = rq.reference_model_class("fakemf", MMRecStyleMF, {"embedding_size": 8, "reg_weight": 0.5})
    model = cls(tiny)
    for epoch in (1, 2, 3):
        model.on_epoch_start(epoch)
    assert model.inner.epochs_started == 3
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    ranking, reg = model.inner.calculate_loss(torch.stack((users, pos, neg)))
    loss = model.loss(users, pos, neg)
    assert loss.shape == () and loss.item() == pytest.approx((ranking + reg).item())
    assert model.score(users).shape == (2, tiny.n_items)


def test_mmrecs_adam_weight_decay_becomes_the_loss_term_whose_gradient_it_adds(tiny):
    """SLMRec's MMRec config trains with Adam(weight_decay=1e-4); the trainer's Adam has none,
    so the adapter adds wd/2 * sum(theta^2): the same parameters, step for step."""
    torch.manual_seed(0)
    cls = rq.reference_model_class("fakemf", MMRecStyleMF,
                                   {"embedding_size": 8, "reg_weight": 0.0, "weight_decay": 0.05})
    adapted = cls(tiny)
    coupled = MMRecStyleMF({"embedding_size": 8, "reg_weight": 0.0}, type(
        "Loader", (), {"dataset": type("D", (), {"get_user_num": lambda s: tiny.n_users,
                                                   "get_item_num": lambda s: tiny.n_items})()})())
    coupled.load_state_dict(adapted.inner.state_dict())
    ours_opt = torch.optim.Adam(adapted.parameters(), lr=0.01)
    mmrec_opt = torch.optim.Adam(coupled.parameters(), lr=0.01, weight_decay=0.05)
    for step in range(5):
        g = torch.Generator().manual_seed(step)
        users = torch.randint(0, tiny.n_users, (32,), generator=g)
        pos, neg = torch.randint(0, tiny.n_items, (2, 32), generator=g)
        ours_opt.zero_grad()
        adapted.loss(users, pos, neg).backward()
        ours_opt.step()
        mmrec_opt.zero_grad()
        sum(coupled.calculate_loss(torch.stack((users, pos, neg)))).sum().backward()
        mmrec_opt.step()
    for name, value in coupled.state_dict().items():
        torch.testing.assert_close(adapted.inner.state_dict()[name], value, rtol=1e-5, atol=1e-7)


def row(side, seed, test_r, test_n, valid=0.1, variant=None):
    return {"side": side, "model": "dualgnn", "seed": seed, "ours_set": {}, "reference_set": {},
            "train": {}, "valid": {"recall@20": valid}, "test": {"recall@20": test_r, "ndcg@20": test_n},
            "best_epoch": 10, **({f"{side}_variant": variant} if variant else {})}


def test_the_summary_pairs_ours_against_the_reference_by_seed_and_leaves_unpaired_seeds_out():
    rows = [row("ours", 1, 0.10, 0.05), row("ours", 2, 0.12, 0.06), row("ours", 3, 0.50, 0.50),
            row("reference", 2, 0.11, 0.05), row("reference", 1, 0.08, 0.05)]
    text = rq.summarise(rows)
    diffs = [line for line in text.splitlines() if line.startswith("| dualgnn | ours − reference | 2 |")]
    assert len(diffs) == 1
    # Seeds 1 and 2: differences +0.02 and +0.01; mean +0.015, t(0.975, 1) = 12.706.
    half = 12.706 * (0.01 / math.sqrt(2)) / math.sqrt(2)
    assert f"+0.0150 [{0.015 - half:+.4f}, {0.015 + half:+.4f}]" in diffs[0]
    assert diffs[0].endswith("2/2 / 1/2 |")
    assert "| ours | 3 |" in text and "| reference | 2 |" in text


def test_a_reference_variant_is_paired_with_ours_beside_the_plain_reference():
    rows = [row("ours", 1, 0.10, 0.05), row("ours", 2, 0.12, 0.06),
            row("reference", 1, 0.08, 0.04), row("reference", 2, 0.10, 0.05),
            row("reference", 1, 0.11, 0.05, variant="zero_encoder_biases"),
            row("reference", 2, 0.12, 0.05, variant="zero_encoder_biases")]
    text = rq.summarise(rows)
    assert "| reference: zero_encoder_biases | 2 |" in text
    plain = [line for line in text.splitlines() if line.startswith("| dualgnn | ours − reference | 2 |")]
    variant = [line for line in text.splitlines()
               if line.startswith("| dualgnn | ours − reference: zero_encoder_biases | 2 |")]
    assert len(plain) == 1 and "+0.0200" in plain[0]
    assert len(variant) == 1 and "-0.0050" in variant[0].replace("−", "-")


def test_an_ours_variant_is_paired_with_every_reference_label():
    rows = [row("ours", 1, 0.10, 0.05), row("ours", 2, 0.12, 0.06),
            row("ours", 1, 0.09, 0.05, variant="audio_as_text"), row("ours", 2, 0.10, 0.05, variant="audio_as_text"),
            row("reference", 1, 0.08, 0.04), row("reference", 2, 0.10, 0.05),
            row("reference", 1, 0.11, 0.05, variant="zero_encoder_biases"),
            row("reference", 2, 0.12, 0.05, variant="zero_encoder_biases")]
    diffs = [line.split(" | ")[1] for line in rq.summarise(rows).splitlines() if " − " in line]
    assert diffs == ["ours − reference", "ours − reference: zero_encoder_biases",
                     "ours: audio_as_text − reference", "ours: audio_as_text − reference: zero_encoder_biases"]


def test_a_variant_keys_its_sides_rows_apart_and_leaves_earlier_keys_as_they_were():
    plain = row("reference", 1, 0.1, 0.05)
    assert rq._key(plain) == rq._key({**plain, "reference_variant": None})
    assert rq._key(plain) != rq._key({**plain, "reference_variant": "zero_encoder_biases"})
    assert rq.side_label({**row("ours", 1, 0.1, 0.05), "reference_variant": "zero_encoder_biases"}) == "ours"
    assert rq.side_label(row("ours", 1, 0.1, 0.05, variant="audio_as_text")) == "ours: audio_as_text"


def test_slmrecs_audio_as_text_variant_renames_the_modality_and_keeps_the_features():
    data = generate_synthetic(n_users=30, n_items=20, n_interactions=300, seed=2,
                              modalities={"audio": 6, "image": 5}, modality_pair=["audio", "image"]).dataset
    renamed, params = rq.OURS_VARIANTS["slmrec"]["audio_as_text"](data, {"ssl_weight": 0.1})
    assert sorted(renamed.features) == ["image", "text"] and params == {"ssl_weight": 0.1}
    assert renamed.features["text"] is data.features["audio"] and renamed.train is data.train


def test_mmgcns_raw_audio_variant_adds_the_keyword_and_keeps_the_point():
    data = generate_synthetic(n_users=30, n_items=20, n_interactions=300, seed=2,
                              modalities={"audio": 6, "image": 5}, modality_pair=["audio", "image"]).dataset
    same, params = rq.OURS_VARIANTS["mmgcn"]["raw_audio"](data, {"reg_weight": 1e-4})
    assert same is data and params == {"reg_weight": 1e-4, "raw_modalities": ["audio"]}


def test_slmrecs_zero_encoder_biases_variant_zeroes_its_two_encoders_and_nothing_else():
    model = nn.Module()
    model.v_dense, model.t_dense, model.other = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)
    weights = {n: t.clone() for n, t in model.state_dict().items()}
    rq.REFERENCE_VARIANTS["slmrec"]["zero_encoder_biases"](model)
    after = model.state_dict()
    assert torch.equal(after["v_dense.bias"], torch.zeros(3)) and torch.equal(after["t_dense.bias"], torch.zeros(3))
    for name in ("v_dense.weight", "t_dense.weight", "other.weight", "other.bias"):
        assert torch.equal(after[name], weights[name])


def test_an_unknown_variant_is_refused_with_the_models_variants_named(capsys):
    with pytest.raises(SystemExit):
        rq.main(["slmrec", "--reference-src", ".", "--reference-variant", "nope"])
    assert "zero_encoder_biases" in capsys.readouterr().err


class _FakeMMGCNLayer(nn.Module):
    """The constructor of MMRec's MMGCN ``GCN`` (its attributes, no computation)."""

    def __init__(self, edge_index, batch_size, num_user, num_item, dim_feat, dim_id, aggr_mode, concate,
                 num_layer, has_id, dim_latent=None, device="cpu"):
        super().__init__()
        self.edge_index, self.batch_size, self.num_user, self.num_item = edge_index, batch_size, num_user, num_item
        self.dim_feat, self.dim_id, self.aggr_mode, self.concate = dim_feat, dim_id, aggr_mode, concate
        self.num_layer, self.has_id, self.dim_latent, self.device = num_layer, has_id, dim_latent, device


def test_mmgcns_text_through_latent_variant_rebuilds_the_text_gcn_with_the_visual_latent_width():
    model = nn.Module()
    edges = torch.tensor([[0, 1], [1, 0]])
    model.v_gcn = _FakeMMGCNLayer(edges, 2048, 5, 4, 128, 64, "mean", "False", 3, True, dim_latent=256)
    model.t_gcn = _FakeMMGCNLayer(edges, 2048, 5, 4, 96, 64, "mean", "False", 3, True)
    rq.REFERENCE_VARIANTS["mmgcn"]["text_through_latent"](model)
    text = model.t_gcn
    assert text.dim_latent == 256 and text.dim_feat == 96 and text.edge_index is edges
    assert (text.num_user, text.num_item, text.dim_id, text.concate, text.has_id) == (5, 4, 64, "False", True)


def test_mmgcns_our_encoder_init_variant_redraws_the_visual_map_only():
    model = nn.Module()
    model.v_gcn, model.t_gcn = nn.Module(), nn.Module()
    model.v_gcn.MLP, model.t_gcn.other = nn.Linear(128, 256), nn.Linear(4, 3)
    text_before = {n: t.clone() for n, t in model.t_gcn.state_dict().items()}
    torch.manual_seed(0)
    rq.REFERENCE_VARIANTS["mmgcn"]["our_encoder_init"](model)
    assert torch.equal(model.v_gcn.MLP.bias, torch.zeros(256))
    bound = (6 / (128 + 256)) ** 0.5  # Xavier-uniform, wider than nn.Linear's 1/sqrt(128)
    assert model.v_gcn.MLP.weight.abs().max() <= bound and model.v_gcn.MLP.weight.abs().max() > 128 ** -0.5
    assert all(torch.equal(t, text_before[n]) for n, t in model.t_gcn.state_dict().items())
