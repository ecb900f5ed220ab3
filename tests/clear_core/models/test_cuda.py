"""Every model runs on CUDA with the same code as on CPU, and computes the same thing there.

These tests skip where no CUDA device exists (CI); `benchmarks/gpu_suite.sh` runs them on a GPU
machine. Edge dropout is switched off for the cross-device comparisons only because the CPU
and CUDA random streams differ; with dropout on, the trainer test below covers CUDA.
"""

from __future__ import annotations

import pytest
import torch
from multimodal_support import all_scores, tiny_dataset, train_epochs

from clear_core.checkpoints import LAST_NAME
from clear_core.models import build_model
from clear_core.trainer import TrainConfig, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")

NO_DROPOUT = {"edge_dropout": 0.0}
CASES = {
    "mf": ("mf", {}),
    "lightgcn": ("lightgcn", {}),
    "vbpr": ("vbpr", {}),
    "vbpr+clear": ("vbpr", {"projection": "fixed"}),
    "freedom": ("freedom", NO_DROPOUT),
    "freedom+clear": ("freedom", {**NO_DROPOUT, "projection": "fixed"}),
    "clear": ("clear", NO_DROPOUT),
    "clear-dynamic": ("clear", {**NO_DROPOUT, "projection": "dynamic"}),
    "clear-noproj": ("clear", {**NO_DROPOUT, "projection": "none"}),
    # models-a (issue 19); DualGNN with k = 5 so that no user's neighbour list is padded at
    # random (the two devices' models draw one after the other).
    "layergcn": ("layergcn", NO_DROPOUT),
    "mmgcn": ("mmgcn", {}),
    "mmgcn+clear": ("mmgcn", {"projection": "fixed"}),
    "dualgnn": ("dualgnn", {"user_graph_k": 5}),
    "dualgnn+clear": ("dualgnn", {"user_graph_k": 5, "projection": "fixed"}),
    "lattice": ("lattice", {}),
    "lattice+clear": ("lattice", {"projection": "fixed"}),
    "slmrec": ("slmrec", {}),
    "slmrec+clear": ("slmrec", {"projection": "fixed"}),
    # Table-2 baselines with auxiliary objectives; their random parts (target dropout, Gumbel
    # noise, SimGCL noise, the discriminator) off for the cross-device comparison only.
    "bm3": ("bm3", {"dropout": 0.0}),
    "bm3+clear": ("bm3", {"dropout": 0.0, "projection": "fixed"}),
    "mgcn": ("mgcn", {}),
    "mgcn+clear": ("mgcn", {"projection": "fixed"}),
    "lgmrec": ("lgmrec", {"keep_rate": 1.0, "hyperedge_noise": False}),
    "lgmrec+clear": ("lgmrec", {"keep_rate": 1.0, "hyperedge_noise": False, "projection": "fixed"}),
    "mentor": ("mentor", {"dropout": 0.0, "perturbation_eps": 0.0}),
    "mentor+clear": ("mentor", {"dropout": 0.0, "perturbation_eps": 0.0, "projection": "fixed"}),
    "mmssl": ("mmssl", {"dropout": 0.0, "adversarial_weight": 0.0}),
    "mmssl+clear": ("mmssl", {"dropout": 0.0, "adversarial_weight": 0.0, "projection": "fixed"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_gradients_and_scores_match_the_cpu_ones(case):
    name, params = CASES[case]
    ds = tiny_dataset()
    torch.manual_seed(0)
    cpu = build_model(name, ds, params)
    gpu = build_model(name, ds, params)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    train = torch.as_tensor(ds.train)
    rows = train[torch.randint(0, len(train), (512,))]
    neg = torch.randint(0, ds.n_items, (512,))
    losses = {}
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        model.train()
        model.on_epoch_start(1)
        loss = model.loss(rows[:, 0].to(device), rows[:, 1].to(device), neg.to(device))
        loss.backward()
        losses[device] = float(loss.detach())
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-4, abs=1e-5)
    # Tolerances relative to the largest gradient of the model: some gradients are exactly zero
    # in theory (FREEDOM's encoder bias cancels between positive and negative items) and hold
    # only rounding noise, which differs between devices.
    scale = max(float(p.grad.abs().max()) for p in cpu.parameters() if p.grad is not None)
    for (pname, p_cpu), (_, p_gpu) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        assert (p_cpu.grad is None) == (p_gpu.grad is None), pname
        if p_cpu.grad is not None:
            torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-3, atol=1e-5 * scale,
                                       msg=lambda m, pname=pname: f"{pname}: {m}")
    torch.testing.assert_close(all_scores(gpu, ds).cpu(), all_scores(cpu, ds), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_on_cuda_lowers_the_loss_with_the_model_defaults(case):
    name, params = CASES[case]
    params = {k: v for k, v in params.items() if k != "edge_dropout"}  # dropout back on
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds, params).to("cuda")
    losses = train_epochs(model, ds, 6)
    assert losses[-1] < losses[0] * 0.97, losses
    scores = all_scores(model, ds)
    assert scores.device.type == "cuda" and torch.isfinite(scores).all()


def test_a_cuda_checkpoint_scores_the_same_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    gpu = build_model("clear", ds, {"redundancy_rank": 2}).to("cuda")
    train_epochs(gpu, ds, 2)
    state = {"model": gpu.state_dict(), "extra": gpu.extra_state_for_checkpoint()}
    cpu = build_model("clear", ds, {"redundancy_rank": 2})
    cpu.load_state_dict({k: v.cpu() for k, v in state["model"].items()})
    cpu.load_extra_state(state["extra"])
    torch.testing.assert_close(all_scores(cpu, ds), all_scores(gpu, ds).cpu(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["lightgcn", "clear", "mmssl"])  # mmssl: its own discriminator optimiser
def test_the_trainer_fits_and_resumes_on_cuda(name, tmp_path):
    ds = tiny_dataset()
    config = TrainConfig.resolve({"batch_size": 256, "max_epochs": 3, "device": "cuda", "seed": 3})
    whole = fit(ds, name, None, config)
    assert whole.device.startswith("cuda") and whole.epochs_run == 3
    first = fit(ds, name, None, config, checkpoint_dir=tmp_path, on_epoch_end=lambda r: r.epoch == 2)
    assert first.epochs_run == 2
    state = torch.load(tmp_path / LAST_NAME, weights_only=True)
    state["stop_reason"] = ""  # the stop request is part of the checkpoint: resume a run still going
    torch.save(state, tmp_path / LAST_NAME)
    resumed = fit(ds, name, None, config, checkpoint_dir=tmp_path)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    # CUDA sums in a different order from run to run: the same run, within the repro tolerance.
    for a, b in zip(resumed.history, whole.history, strict=True):
        assert a["valid"]["recall@20"] == pytest.approx(b["valid"]["recall@20"], abs=5e-3)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)


def test_mmssl_steps_its_discriminator_on_cuda():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("mmssl", ds, {}).to("cuda")
    before = [q.detach().clone() for q in model.discriminator.parameters()]
    losses = train_epochs(model, ds, 2)
    assert all(q.is_cuda for q in model.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters(), strict=True))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert torch.isfinite(all_scores(model, ds)).all()
