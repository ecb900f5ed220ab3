"""Canonical form: round trip, a content fingerprint, and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clear_core.data import canonical
from clear_core.data.canonical import read_canonical, write_canonical
from clear_core.data.dataset import Dataset
from clear_core.data.fingerprint import fingerprint_dataset
from clear_core.data.loading import load_dataset
from clear_core.errors import DataError


def _replace(ds: Dataset, **changes) -> Dataset:
    fields = {f: getattr(ds, f) for f in ds.__dataclass_fields__}
    fields.update(changes)
    return Dataset(**fields)


def test_round_trip_keeps_content_and_fingerprint(mmrec_folder, tmp_path):
    ds = load_dataset(mmrec_folder)
    fp = write_canonical(ds, tmp_path / "canon", provenance={"source": "toy"})
    assert fp == ds.fingerprint
    back = load_dataset(tmp_path / "canon")  # load_dataset recognises the canonical layout
    assert back.fingerprint == fp
    assert (back.n_users, back.n_items, back.name) == (ds.n_users, ds.n_items, ds.name)
    for s in ("train", "valid", "test"):
        assert sorted(map(tuple, back.split(s).tolist())) == sorted(map(tuple, ds.split(s).tolist()))
    for m in ds.modalities:
        np.testing.assert_array_equal(back.features[m], ds.features[m])
    manifest = json.loads((tmp_path / "canon" / "manifest.json").read_text())
    assert manifest["fingerprint"] == fp
    assert manifest["counts"] == {"train": 18, "valid": 6, "test": 6}
    assert manifest["provenance"] == {"source": "toy"}


def test_fingerprint_is_stable_across_rewrites_and_ignores_name_and_row_order(mmrec_folder, tmp_path):
    ds = load_dataset(mmrec_folder)
    a = write_canonical(ds, tmp_path / "a")
    b = write_canonical(read_canonical(tmp_path / "a"), tmp_path / "b")
    shuffled = _replace(ds, name="other", train=ds.train[::-1].copy())
    assert a == b == fingerprint_dataset(shuffled)


def test_fingerprint_changes_with_one_row_or_one_feature_value(mmrec_folder):
    ds = load_dataset(mmrec_folder)
    train = ds.train.copy()
    train[0, 1] = (train[0, 1] + 7) % ds.n_items
    assert fingerprint_dataset(_replace(ds, train=train)) != ds.fingerprint
    moved = _replace(ds, train=ds.train[1:], valid=np.vstack([ds.valid, ds.train[:1]]))
    assert fingerprint_dataset(moved) != ds.fingerprint  # same pairs, different split label
    feats = {m: f.copy() for m, f in ds.features.items()}
    feats["text"][3, 2] += 1e-3
    assert fingerprint_dataset(_replace(ds, features=feats)) != ds.fingerprint


def test_a_failure_while_writing_leaves_no_output(mmrec_folder, tmp_path, monkeypatch):
    ds = load_dataset(mmrec_folder)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(canonical, "write_json_atomic", fail)
    with pytest.raises(OSError, match="disk full"):
        write_canonical(ds, tmp_path / "outputs" / "out")
    # Neither the output nor a temporary folder is left.
    assert list((tmp_path / "outputs").iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_output(mmrec_folder, tmp_path, monkeypatch):
    ds = load_dataset(mmrec_folder)
    out = tmp_path / "outputs" / "out"
    fp = write_canonical(ds, out)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(canonical, "write_json_atomic", fail)
    with pytest.raises(OSError):
        write_canonical(ds, out)
    assert read_canonical(out).fingerprint == fp
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_refuses_to_replace_a_folder_it_did_not_write(mmrec_folder, tmp_path):
    ds = load_dataset(mmrec_folder)
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="does not look like a clearrec output"):
        write_canonical(ds, precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_edited_content_no_longer_matches_the_manifest(mmrec_folder, tmp_path):
    ds = load_dataset(mmrec_folder)
    write_canonical(ds, tmp_path / "c")
    feat = np.load(tmp_path / "c" / "text_feat.npy")
    feat[0, 0] += 1
    np.save(tmp_path / "c" / "text_feat.npy", feat)
    with pytest.raises(DataError, match="differs from the manifest"):
        read_canonical(tmp_path / "c")


def test_id_maps_are_persisted(mmrec_folder, tmp_path):
    from clear_core.data.k_core import read_id_map

    ds = load_dataset(mmrec_folder)
    users = np.array([f"u{i}" for i in range(ds.n_users)])
    items = np.array([f"B{i:04d}" for i in range(ds.n_items)])
    write_canonical(ds, tmp_path / "c", id_maps={"users": users, "items": items})
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    np.testing.assert_array_equal(read_id_map(tmp_path / "c" / manifest["id_maps"]["items"]), items)
    np.testing.assert_array_equal(read_id_map(tmp_path / "c" / manifest["id_maps"]["users"]), users)
