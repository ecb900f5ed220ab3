"""The two redundancy plug-ins (CLEAR's projection, MRdIB) on every registered multimodal model.

Parametrised over ``available_models()`` filtered by ``needs_features``: a model registered later
is covered without a line here. What every such model must satisfy:

* its plug-in parameters default from ``configs/plugins.yaml`` when its YAML leaves them out;
* a plug-in switched off is bit-for-bit absent: the same initial weights, losses, gradients and
  scores after a few epochs as the model with the plug-in's settings untouched, and no module or
  random draw of its own;
* switched on, it acts where the paper defines it (the modality features after their first
  learned transform, i.e. what :meth:`MultimodalRecommender.encode` returns) and changes training.
"""

from __future__ import annotations

import functools
import json
import shutil

import pytest
import torch
import yaml
from multimodal_support import all_scores, tiny_dataset, train_epochs

from clear_core.config import CONFIG_DIR_ENV, config_dir
from clear_core.models import available_models, build_model, model_class, resolve_params
from clear_core.models.multimodal import PLUGIN_DEFAULTS_FILE
from clear_core.projection import cross_covariance

MULTIMODAL = [m for m in available_models() if model_class(m).needs_features]
EPOCHS = 3

# Settings that must do nothing while their plug-in is off.
MRDIB_OFF_BUT_SET = {"mrdib": False, "mrdib_kl_weight": 0.7, "mrdib_unique_weight": 3.0,
                     "mrdib_redundancy_weight": 2.0, "mrdib_synergy_weight": 5.0,
                     "mrdib_redundancy_estimator": "correlation"}
PROJECTION_OFF_BUT_SET = {"projection": "none", "redundancy_rank": 2, "projection_strength": 0.3,
                          "refresh_every": 3, "energy_ratio": 0.5, "projected_pair": ["text", "image"]}


def test_every_multimodal_model_is_covered():
    assert {"vbpr", "freedom", "clear"} <= set(MULTIMODAL)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_a_yaml_without_plugin_keys_gets_them_off_from_plugins_yaml(name, tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(config_dir(), configs)
    plugin_defaults = yaml.safe_load((configs / PLUGIN_DEFAULTS_FILE).read_text())
    model_yaml = configs / "models" / f"{name}.yaml"
    own = {k: v for k, v in yaml.safe_load(model_yaml.read_text()).items() if k not in plugin_defaults}
    model_yaml.write_text(yaml.safe_dump(own))
    monkeypatch.setenv(CONFIG_DIR_ENV, str(configs))

    params = resolve_params(name)
    assert {k: params[k] for k in plugin_defaults} == plugin_defaults
    assert params["projection"] == "none" and params["mrdib"] is False
    assert resolve_params(name, {"mrdib": True})["mrdib"] is True


@pytest.mark.parametrize("name", MULTIMODAL)
def test_every_shipped_yaml_leaves_mrdib_off(name):
    assert resolve_params(name)["mrdib"] is False


def _trained(name: str, overrides: dict) -> tuple[list[float], dict[str, torch.Tensor], torch.Tensor, dict]:
    """Losses over EPOCHS epochs, the gradients of one more batch, final scores, initial state
    (computed once per model and settings: several tests compare against the same run)."""
    return _trained_once(name, json.dumps(overrides, sort_keys=True))


@functools.cache
def _trained_once(name: str, overrides_json: str):
    overrides = json.loads(overrides_json)
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds, overrides)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    losses = train_epochs(model, ds, EPOCHS)
    model.train()
    model.zero_grad(set_to_none=True)
    train = torch.as_tensor(ds.train)
    torch.manual_seed(1)
    model.training_loss(train[:200, 0], train[:200, 1], torch.randint(0, ds.n_items, (200,))).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return losses, grads, all_scores(model, ds), initial


def _assert_bit_identical(a, b) -> None:
    losses_a, grads_a, scores_a, init_a = a
    losses_b, grads_b, scores_b, init_b = b
    assert init_a.keys() == init_b.keys()
    assert all(torch.equal(init_a[k], init_b[k]) for k in init_a)
    assert losses_a == losses_b
    assert grads_a.keys() == grads_b.keys()
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
    assert torch.equal(scores_a, scores_b)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_mrdib_switched_off_is_bit_identical_to_the_model_without_it(name):
    _assert_bit_identical(_trained(name, {}), _trained(name, MRDIB_OFF_BUT_SET))


@pytest.mark.parametrize("name", MULTIMODAL)
def test_projection_switched_off_is_bit_identical_to_the_model_without_it(name):
    _assert_bit_identical(_trained(name, {"projection": "none"}), _trained(name, PROJECTION_OFF_BUT_SET))


@pytest.mark.parametrize("name", MULTIMODAL)
def test_switched_off_the_plugins_build_nothing_and_the_hook_adds_nothing(name):
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds, {"projection": "none"})
    assert model.mrdib is None
    assert not [k for k in model.state_dict() if k.startswith("mrdib.")]
    assert model.projection.basis_a.shape[1] == 0
    # A twin, not a second call: a model's loss may change its own state (MMSSL steps its
    # discriminator inside loss()).
    torch.manual_seed(0)
    twin = build_model(name, ds, {"projection": "none"})
    train = torch.as_tensor(ds.train)
    users, pos, neg = train[:64, 0], train[:64, 1], torch.randint(0, ds.n_items, (64,))
    losses = []
    for m, call in ((model, model.loss), (twin, twin.training_loss)):
        m.train()
        torch.manual_seed(3)  # before the epoch hook: edge dropout draws there
        m.on_epoch_start(1)
        losses.append(call(users, pos, neg))
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize("name", MULTIMODAL)
def test_mrdib_on_starts_from_the_same_backbone_and_changes_training(name):
    off = _trained(name, {})
    on = _trained(name, {"mrdib": True})
    _, _, scores_off, init_off = off
    losses_on, grads_on, scores_on, init_on = on
    # The plug-in's own weights come on top: the backbone's initial weights are untouched.
    assert all(torch.equal(init_off[k], init_on[k]) for k in init_off)
    assert {k for k in init_on if k not in init_off} and all(k.startswith("mrdib.") for k in init_on if k not in init_off)
    assert all(torch.isfinite(torch.tensor(losses_on)))
    assert any(k.startswith("mrdib.") for k in grads_on)
    assert not torch.allclose(scores_off, scores_on)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_mrdib_noise_is_training_only(name):
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds, {"mrdib": True})
    model.eval()
    with torch.no_grad():
        means = model.encode(bottleneck=False)
        assert all(torch.equal(means[m], x) for m, x in model.encode().items())
        model.train()
        sampled = model.encode()
    assert not any(torch.equal(means[m], sampled[m]) for m in means)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_projection_acts_on_the_encoded_features_of_every_model(name):
    """λ = 1, k = 2: the encoded pair's cross-covariance loses exactly its two leading singular
    values (Theorem 5 with λ = 1) and keeps the others: the projection sits on the features
    after their first learned transform, whatever the model does with them next."""
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds, {"projection": "fixed", "redundancy_rank": 2, "projection_strength": 1.0})
    model.on_epoch_start(1)
    with torch.no_grad():
        before = {m: model.encoders[m](model.raw(m)) for m in model.projected_pair}
        after = model.encode()
    a, b = model.projected_pair
    sv_before = torch.linalg.svdvals(cross_covariance(before[a].double(), before[b].double()))
    sv_after = torch.linalg.svdvals(cross_covariance(after[a].double(), after[b].double()))
    torch.testing.assert_close(sv_after[:-2], sv_before[2:], rtol=1e-4, atol=1e-6)
    assert sv_after[-2:].abs().max() < 1e-4 * sv_before[0]


@pytest.mark.parametrize("name", MULTIMODAL)
def test_projection_on_changes_training(name):
    _, _, scores_off, _ = _trained(name, {"projection": "none"})
    losses_on, _, scores_on, _ = _trained(name, {"projection": "fixed", "redundancy_rank": 2})
    assert all(torch.isfinite(torch.tensor(losses_on)))
    assert not torch.allclose(scores_off, scores_on)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_both_plugins_together_train(name):
    losses, _, scores, _ = _trained(name, {"projection": "fixed", "redundancy_rank": 2, "mrdib": True})
    assert all(torch.isfinite(torch.tensor(losses)))
    assert torch.isfinite(scores).all()


def test_every_bad_mrdib_weight_is_reported_at_once():
    from clear_core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build_model("vbpr", tiny_dataset(), {"mrdib": True, "mrdib_kl_weight": -1.0, "mrdib_synergy_weight": -0.5,
                                             "mrdib_redundancy_estimator": "pearson", "embedding_size": 0})
    text = str(err.value)
    assert "mrdib_redundancy_estimator: expected 'mine' or 'correlation', got 'pearson'" in text
    assert "mrdib_kl_weight: expected a finite number >= 0, got -1.0" in text
    assert "mrdib_synergy_weight: expected a finite number >= 0, got -0.5" in text
    assert "embedding_size" in text


def test_the_trainer_adds_mrdib_and_a_resumed_run_gives_the_same_numbers(tmp_path):
    from clear_core.checkpoints import LAST_NAME
    from clear_core.trainer import TrainConfig, fit

    ds = tiny_dataset()
    config = TrainConfig.resolve({"batch_size": 512, "max_epochs": 3, "device": "cpu", "seed": 3})
    plain = fit(ds, "vbpr", {}, config)
    whole = fit(ds, "vbpr", {"mrdib": True}, config)
    # The trainer minimises training_loss: the plug-in's terms are in the reported loss.
    assert [h["train_loss"] for h in whole.history] != [h["train_loss"] for h in plain.history]
    fit(ds, "vbpr", {"mrdib": True}, config, checkpoint_dir=tmp_path, on_epoch_end=lambda r: r.epoch == 2)
    state = torch.load(tmp_path / LAST_NAME, weights_only=True)
    state["stop_reason"] = ""  # resume a run still going
    torch.save(state, tmp_path / LAST_NAME)
    resumed = fit(ds, "vbpr", {"mrdib": True}, config, checkpoint_dir=tmp_path)
    # The bottleneck's noise comes from the global generator, which the checkpoint carries.
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    assert resumed.valid == whole.valid and resumed.test == whole.test


@pytest.mark.parametrize("model", MULTIMODAL)
def test_a_run_resumed_between_two_projector_refreshes_gives_the_same_numbers(model, tmp_path):
    # tau 3: refreshes at epochs 1 and 4, so the run resumed at epoch 3 must project with the
    # basis of epoch 1 (from its checkpoint), not one computed from the weights it resumes with.
    from resume_support import assert_resume_matches

    assert_resume_matches(tiny_dataset(), model, {"projection": "fixed", "redundancy_rank": 2,
                                                  "projection_strength": 0.9, "refresh_every": 3},
                          tmp_path, epochs=4, batch_size=256)
