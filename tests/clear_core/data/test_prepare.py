"""The filter-and-split stage from raw reviews to a canonical folder."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from clear_core.data.k_core import read_id_map
from clear_core.data.loading import load_dataset
from clear_core.data.prepare import prepare_dataset
from clear_core.data.synthetic import generate_synthetic
from clear_core.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Reviews from the synthetic generator, plus a features folder missing a few items."""
    root = tmp_path_factory.mktemp("raw")
    syn = generate_synthetic(n_users=150, n_items=80, n_interactions=2400, seed=3)
    r = syn.raw_interactions
    with gzip.open(root / "reviews_Toy_5.json.gz", "wt") as fh:
        for u, i, rating, t in zip(r.user.tolist(), r.item.tolist(), r.rating.tolist(), r.timestamp.tolist(), strict=True):
            fh.write(json.dumps({"reviewerID": f"U{u}", "asin": f"B{i:03d}", "overall": rating, "unixReviewTime": t}) + "\n")
    feats = root / "features"
    feats.mkdir()
    asins = [f"B{i:03d}" for i in range(80) if i % 10 != 0]  # items 0, 10, 20... have no row
    (feats / "items.txt").write_text("\n".join(asins) + "\n")
    rows = np.arange(len(asins), dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    np.save(feats / "text_feat.npy", rows)
    (feats / "features.json").write_text(json.dumps({"text_encoder": "minilm"}))
    return root


def test_prepare_filters_splits_and_writes_canonical(raw, tmp_path):
    summary = prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "out", k=5, seed=1)
    ds = load_dataset(tmp_path / "out")
    assert ds.fingerprint == summary["fingerprint"]
    assert (ds.n_users, ds.n_items) == (summary["users"], summary["items"])
    # k-core: every user and item keeps at least 5 rows over all splits.
    everything = np.vstack([ds.train, ds.valid, ds.test])
    assert np.bincount(everything[:, 0]).min() >= 5 and np.bincount(everything[:, 1]).min() >= 5
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["provenance"]["k"] == 5 and manifest["provenance"]["split"] == "random"
    users = read_id_map(tmp_path / "out" / manifest["id_maps"]["users"])
    assert len(users) == ds.n_users and all(u.startswith("U") for u in users)


def test_same_seed_same_fingerprint_other_seed_or_split_differs(raw, tmp_path):
    a = prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "a", seed=1)["fingerprint"]
    b = prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "b", seed=1)["fingerprint"]
    c = prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "c", seed=2)["fingerprint"]
    d = prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "d", seed=1, split="mmrec")["fingerprint"]
    assert a == b and len({a, c, d}) == 3


def test_features_are_reordered_to_new_ids_and_gaps_get_the_mean(raw, tmp_path):
    summary = prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "f", features_dir=raw / "features")
    ds = load_dataset(tmp_path / "f")
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    items = read_id_map(tmp_path / "f" / manifest["id_maps"]["items"])
    asins = (raw / "features" / "items.txt").read_text().split()
    source = np.load(raw / "features" / "text_feat.npy")
    missing = 0
    for new_id, asin in enumerate(items):
        if asin in asins:
            np.testing.assert_array_equal(ds.features["text"][new_id], source[asins.index(asin)])
        else:
            missing += 1
            np.testing.assert_allclose(ds.features["text"][new_id], source.mean(axis=0))
    assert missing > 0 and summary["items_missing_features"] == {"text": missing}
    assert manifest["provenance"]["features"] == {"text_encoder": "minilm"}


def test_bad_settings_are_listed_together_and_nothing_is_written(raw, tmp_path):
    with pytest.raises(ConfigError) as err:
        prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "x", k=0, split="temporal")
    assert "k:" in str(err.value) and "split:" in str(err.value)
    assert not (tmp_path / "x").exists()


def test_feature_rows_not_matching_items_txt_leave_no_output(raw, tmp_path):
    bad = tmp_path / "feats"
    bad.mkdir()
    (bad / "items.txt").write_text("B001\nB002\n")
    np.save(bad / "text_feat.npy", np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match="3 feature rows"):
        prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "y", features_dir=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats"]


def test_repeated_item_in_items_txt_names_the_line(raw, tmp_path):
    bad = tmp_path / "feats"
    bad.mkdir()
    (bad / "items.txt").write_text("B001\nB002\nB001\n")
    np.save(bad / "text_feat.npy", np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match="repeats line 1") as err:
        prepare_dataset(raw / "reviews_Toy_5.json.gz", tmp_path / "y", features_dir=bad)
    assert err.value.line == 3
