"""The synthetic generator: seeded, power-law popular, and with tunable cross-modal redundancy
that really is in the features."""

from __future__ import annotations

import numpy as np
import pytest

from clear_core.data.loading import load_dataset
from clear_core.data.synthetic import generate_synthetic, resolve_config, write_synthetic
from clear_core.errors import ConfigError

SMALL = {"n_users": 200, "n_items": 120, "n_interactions": 3000}


def _out_of_sample_r2(x: np.ndarray, y: np.ndarray) -> float:
    """Share of ``y``'s variance a linear map from ``x`` explains on held-out rows."""
    idx = np.random.default_rng(0).permutation(len(x))
    a, b = idx[: len(x) // 2], idx[len(x) // 2 :]
    xm, ym = x[a].mean(0), y[a].mean(0)
    w, *_ = np.linalg.lstsq(x[a] - xm, y[a] - ym, rcond=None)
    resid = y[b] - ((x[b] - xm) @ w + ym)
    return float(1 - (resid**2).sum() / ((y[b] - y[b].mean(0)) ** 2).sum())


def test_default_is_small_seeded_and_has_two_modalities():
    cfg = resolve_config()
    assert (cfg["n_users"], cfg["n_items"]) == (800, 500)
    a, b = generate_synthetic(), generate_synthetic()
    assert a.dataset.fingerprint == b.dataset.fingerprint
    assert generate_synthetic(seed=1).dataset.fingerprint != a.dataset.fingerprint
    assert a.dataset.modalities == ["image", "text"]
    assert a.dataset.features["image"].shape == (a.dataset.n_items, 128)
    assert a.dataset.features["text"].shape == (a.dataset.n_items, 64)
    assert 15_000 < len(a.raw_interactions) < 25_000


def test_dataset_is_a_k_core_with_all_splits_and_no_duplicates():
    syn = generate_synthetic(**SMALL, k_core=5)
    ds = syn.dataset
    rows = np.vstack([ds.train, ds.valid, ds.test])
    assert np.bincount(rows[:, 0], minlength=ds.n_users).min() >= 5
    assert np.bincount(rows[:, 1], minlength=ds.n_items).min() >= 5
    assert len(np.unique(rows, axis=0)) == len(rows)
    assert min(len(ds.train), len(ds.valid), len(ds.test)) > 0


def test_latents_are_exposed_by_raw_item_id():
    syn = generate_synthetic(**SMALL, r_shared=4, r_specific=3)
    assert syn.item_shared.shape == (120, 4)
    assert {m: s.shape for m, s in syn.item_specific.items()} == {"image": (120, 3), "text": (120, 3)}
    raw = syn.raw_interactions
    assert raw.user.max() < 200 and raw.item.max() < 120
    assert len(raw.rating) == len(raw) and set(np.unique(raw.rating)) <= {1, 2, 3, 4, 5}
    assert (np.diff(raw.timestamp) != 0).any()
    # Dataset item j is raw item item_ids[j]: its rows come from raw rows of that item.
    j = int(syn.dataset.train[0, 1])
    u = int(syn.dataset.train[0, 0])
    assert ((raw.user == syn.user_ids[u]) & (raw.item == syn.item_ids[j])).any()


def test_item_popularity_is_heavy_tailed():
    ds = generate_synthetic().dataset
    counts = np.sort(np.bincount(np.vstack([ds.train, ds.valid, ds.test])[:, 1]))[::-1]
    top_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.2  # a uniform catalogue would give 0.1


def test_redundancy_knob_controls_how_much_one_modality_predicts_the_other():
    shape = {"n_items": 2000, "n_users": 400, "n_interactions": 16_000,
             "modalities": {"image": 32, "text": 16}}
    r2 = []
    for redundancy in (0.0, 0.5, 0.9):
        f = generate_synthetic(**shape, redundancy=redundancy).dataset.features
        r2.append(_out_of_sample_r2(f["image"], f["text"]))
    assert r2[0] < 0.1 < r2[1] < r2[2]
    assert r2[2] > 0.6


def test_features_carry_preference_signal_and_modalities_complement_each_other():
    ds = generate_synthetic().dataset

    def recall_at_20(features):
        f = features - features.mean(0)
        profile = np.zeros((ds.n_users, f.shape[1]))
        np.add.at(profile, ds.train[:, 0], f[ds.train[:, 1]])
        scores = profile @ f.T
        scores[ds.train[:, 0], ds.train[:, 1]] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :20]
        relevant = np.bincount(ds.test[:, 0], minlength=ds.n_users)
        is_test = np.zeros((ds.n_users, ds.n_items), dtype=bool)
        is_test[ds.test[:, 0], ds.test[:, 1]] = True
        hits = is_test[np.arange(ds.n_users)[:, None], top].sum(1)
        users = relevant > 0
        return float((hits[users] / relevant[users]).mean())

    image = recall_at_20(ds.features["image"])
    text = recall_at_20(ds.features["text"])
    both = recall_at_20(np.hstack([ds.features["image"], ds.features["text"]]))
    chance = 20 / ds.n_items
    assert min(image, text) > 3 * chance
    assert both > max(image, text)


def test_unknown_setting_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match="bogus: unknown field; known fields: .*redundancy"):
        generate_synthetic(bogus=1)


def test_out_of_range_settings_are_reported_together():
    with pytest.raises(ConfigError) as err:
        generate_synthetic(redundancy=1.5, n_users=0, split="temporal")
    msg = str(err.value)
    assert "redundancy" in msg and "n_users" in msg and "split" in msg


def test_write_synthetic_is_an_mmrec_folder_with_the_same_content(tmp_path):
    syn = write_synthetic(tmp_path / "syn", **SMALL)
    assert (tmp_path / "syn" / ".complete").read_text().strip() == syn.dataset.fingerprint
    header = (tmp_path / "syn" / "synthetic.inter").read_text().splitlines()[0]
    assert header.split("\t") == ["userID", "itemID", "rating", "timestamp", "x_label"]
    ds = load_dataset(tmp_path / "syn")
    assert ds.fingerprint == syn.dataset.fingerprint
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["syn"]


def test_mmrec_split_option_uses_the_timestamps():
    ds = generate_synthetic(**SMALL, split="mmrec").dataset
    rows = np.vstack([ds.train, ds.valid, ds.test])
    per_user = np.bincount(rows[:, 0])
    small_users = np.flatnonzero(per_user < 10)
    assert len(small_users) and (np.bincount(ds.test[:, 0], minlength=ds.n_users)[small_users] == 1).all()


def test_modality_pair_must_name_two_generated_modalities():
    assert resolve_config()["modality_pair"] == ["image", "text"]
    with pytest.raises(ConfigError, match="modality_pair"):
        generate_synthetic(modality_pair=["image", "audio"])
    with pytest.raises(ConfigError, match="modality_pair"):
        generate_synthetic(modality_pair=["image", "image"])
