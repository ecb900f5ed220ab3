"""Reading MMRec folders: what is accepted, and the error for each kind of bad input."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from clear_core.data.loading import load_dataset, read_inter
from clear_core.errors import DataError


def test_reads_counts_splits_and_modalities(mmrec_folder):
    ds = load_dataset(mmrec_folder)
    assert (ds.name, ds.n_users, ds.n_items) == ("toy", 6, 8)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (18, 6, 6)
    assert ds.modalities == ["image", "text"]  # sorted file names, not discovery order
    assert ds.features["image"].dtype == np.float32  # float16 on disk is widened
    assert ds.features["image"].shape == (8, 6)
    assert ds.train.dtype == np.int64 and ds.train.shape[1] == 2
    assert len(ds.fingerprint) == 64
    assert ds.dropped == {"valid": 0, "test": 0}


def test_optional_rating_and_timestamp_columns_are_read(tmp_path, inter_file, toy_rows):
    rows = [(u, i, 4.5, 1000 + n, lab) for n, (u, i, lab) in enumerate(toy_rows())]
    path = inter_file(tmp_path / "t", rows, header="userID\titemID\trating\ttimestamp\tx_label")
    table = read_inter(path)
    assert table.rating is not None and float(table.rating[0]) == 4.5
    assert table.timestamp is not None and int(table.timestamp[-1]) == 1000 + len(rows) - 1


def test_misspelled_column_suggests_the_closest(tmp_path, inter_file, toy_rows):
    inter_file(tmp_path / "t", toy_rows(), header="userId\titemID\tx_label")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "t")
    msg = str(err.value)
    assert "'userID'" in msg and "did you mean 'userId'" in msg and "t.inter:1" in msg


def test_missing_column_is_named(tmp_path, inter_file):
    inter_file(tmp_path / "t", [(0, 0)], header="userID\titemID")
    with pytest.raises(DataError, match="missing column.*'x_label'"):
        load_dataset(tmp_path / "t")


def test_non_integer_id_names_the_line(tmp_path, inter_file, toy_rows):
    rows = toy_rows()
    rows[3] = (rows[3][0], "abc", rows[3][2])
    inter_file(tmp_path / "t", rows)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "t")
    assert err.value.line == 5  # header is line 1, row index 3 is line 5
    assert "non-integer" in str(err.value) and "'itemID'" in str(err.value)


def test_negative_id_is_rejected(tmp_path, inter_file, toy_rows):
    rows = toy_rows()
    rows[0] = (-1, rows[0][1], rows[0][2])
    inter_file(tmp_path / "t", rows)
    with pytest.raises(DataError, match="negative id") as err:
        load_dataset(tmp_path / "t")
    assert err.value.line == 2


def test_float_id_is_rejected(tmp_path, inter_file, toy_rows):
    rows = toy_rows()
    rows[1] = (rows[1][0], "2.5", rows[1][2])
    inter_file(tmp_path / "t", rows)
    with pytest.raises(DataError, match="non-integer") as err:
        load_dataset(tmp_path / "t")
    assert err.value.line == 3


def test_label_outside_0_1_2(tmp_path, inter_file, toy_rows):
    rows = toy_rows()
    rows[7] = (rows[7][0], rows[7][1], 3)
    inter_file(tmp_path / "t", rows)
    with pytest.raises(DataError, match="outside 0/1/2") as err:
        load_dataset(tmp_path / "t")
    assert err.value.line == 9


def test_duplicate_pairs_give_both_line_numbers(tmp_path, inter_file, toy_rows):
    rows = toy_rows()
    rows.append((rows[2][0], rows[2][1], 1))
    inter_file(tmp_path / "t", rows)
    with pytest.raises(DataError, match="duplicate") as err:
        load_dataset(tmp_path / "t")
    assert f"at lines 4 and {len(rows) + 1}" in str(err.value)


def test_feature_row_count_must_match_items(mmrec_folder):
    np.save(mmrec_folder / "text_feat.npy", np.zeros((7, 4), dtype=np.float32))
    with pytest.raises(DataError, match="7 feature rows but the dataset has 8 items") as err:
        load_dataset(mmrec_folder)
    assert err.value.path.endswith("text_feat.npy")


def test_nan_and_inf_rows_are_listed(mmrec_folder):
    feat = np.ones((8, 4), dtype=np.float32)
    feat[2, 1] = np.nan
    feat[5, 0] = np.inf
    np.save(mmrec_folder / "text_feat.npy", feat)
    with pytest.raises(DataError, match=r"NaN or Inf in 2 row\(s\) \(0-based item rows: 2, 5\)"):
        load_dataset(mmrec_folder)


def test_object_array_npy_is_refused(mmrec_folder):
    obj = np.empty((8, 4), dtype=object)
    np.save(mmrec_folder / "text_feat.npy", obj, allow_pickle=True)
    with pytest.raises(DataError, match="refusing to load pickled"):
        load_dataset(mmrec_folder)


def test_plain_pickle_named_npy_is_never_unpickled(mmrec_folder, tmp_path):
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (mmrec_folder / "text_feat.npy").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(DataError, match="text_feat.npy"):
        load_dataset(mmrec_folder)
    assert not marker.exists()


def test_one_dimensional_feature_is_refused(mmrec_folder):
    np.save(mmrec_folder / "text_feat.npy", np.zeros(8, dtype=np.float32))
    with pytest.raises(DataError, match="2-D"):
        load_dataset(mmrec_folder)


def test_empty_split_is_an_error(tmp_path, inter_file, toy_rows):
    rows = [(u, i, 0 if lab == 1 else lab) for u, i, lab in toy_rows()]  # no valid rows
    inter_file(tmp_path / "t", rows)
    with pytest.raises(DataError, match="valid split is empty"):
        load_dataset(tmp_path / "t")


def test_split_users_unknown_to_training_are_dropped_and_counted(tmp_path, inter_file, toy_rows):
    rows = toy_rows() + [(6, 0, 1), (6, 1, 2), (6, 2, 2)]  # user 6 has no training row
    inter_file(tmp_path / "t", rows)
    ds = load_dataset(tmp_path / "t")
    assert ds.dropped == {"valid": 1, "test": 2}
    assert 6 not in ds.valid[:, 0] and 6 not in ds.test[:, 0]
    assert ds.n_users == 7  # max id + 1 over the whole file, as MMRec counts
    stats = ds.stats()
    assert stats["interactions"] == len(rows)
    assert stats["splits"] == {"train": 18, "valid": 7, "test": 8}
    assert stats["used"] == {"train": 18, "valid": 6, "test": 6}


def test_missing_folder_and_folder_without_data(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset here"):
        load_dataset(tmp_path / "empty")


def test_reading_baby_sized_file_is_fast(tmp_path, inter_file):
    rng = np.random.default_rng(0)
    n_users, per_user = 16_000, 10
    users = np.repeat(np.arange(n_users), per_user)
    items = (users * 7 + np.tile(np.arange(per_user), n_users) * 13) % 7050
    labels = np.tile([0] * 8 + [1, 2], n_users)
    folder = tmp_path / "big"
    folder.mkdir()
    text = "userID\titemID\tx_label\n" + "\n".join(
        f"{u}\t{i}\t{lab}" for u, i, lab in zip(users.tolist(), items.tolist(), labels.tolist(), strict=True)
    )
    (folder / "big.inter").write_text(text + "\n")
    np.save(folder / "image_feat.npy", rng.standard_normal((int(items.max()) + 1, 16)).astype(np.float32))
    start = time.perf_counter()
    ds = load_dataset(folder)
    elapsed = time.perf_counter() - start
    assert ds.n_interactions == 160_000
    # "Well under a second" on an idle machine; the margin absorbs a busy shared CI box.
    assert elapsed < 1.5, f"reading 160k rows took {elapsed:.2f}s"


@pytest.mark.real_data
def test_baby_counts(shared_folder):
    ds = load_dataset(shared_folder("baby"))
    s = ds.stats()
    assert (s["users"], s["items"], s["interactions"]) == (19_445, 7_050, 160_792)
    assert s["splits"] == {"train": 119_674, "valid": 20_559, "test": 20_559}
    assert s["dropped"] == {"valid": 0, "test": 0}


@pytest.mark.real_data
def test_tiktok_counts_with_dropped_rows_reported_separately(shared_folder):
    ds = load_dataset(shared_folder("tiktok"))
    s = ds.stats()
    assert (s["users"], s["items"], s["interactions"]) == (9_308, 6_710, 68_722)
    assert s["splits"] == {"train": 59_541, "valid": 3_051, "test": 6_130}
    # Ten users have no training row (PROVENANCE.md); their valid/test rows are dropped.
    assert s["dropped"] == {"valid": 5, "test": 5}
    assert ds.modalities == ["audio", "image"]
    assert s["modalities"] == {"audio": [6_710, 128], "image": [6_710, 128]}


@pytest.mark.real_data
@pytest.mark.parametrize(
    "name,users,items,interactions",
    [("sports", 35_598, 18_357, 296_337), ("clothing", 39_387, 23_033, 278_677)],
)
def test_sports_and_clothing_counts(shared_folder, name, users, items, interactions):
    s = load_dataset(shared_folder(name)).stats()
    assert (s["users"], s["items"], s["interactions"]) == (users, items, interactions)


def test_a_bare_name_resolves_through_the_dataset_configs(tmp_path, monkeypatch, mmrec_folder):
    configs = tmp_path / "repo" / "configs"
    (configs / "datasets").mkdir(parents=True)
    (configs / "datasets" / "toyset.yaml").write_text(f"name: toyset\npath: ../{mmrec_folder.name}\n")
    (configs / "datasets" / "nopath.yaml").write_text("name: nopath\n")
    monkeypatch.setenv("CLEARREC_CONFIG_DIR", str(configs))
    monkeypatch.chdir(tmp_path / "repo")
    assert load_dataset("toyset").n_items == 8
    with pytest.raises(DataError, match="has no 'path'"):
        load_dataset("nopath")
    with pytest.raises(DataError, match="not found"):
        load_dataset("unknown")


def test_a_line_with_too_many_fields_is_named(tmp_path, inter_file, toy_rows):
    rows = toy_rows()
    rows[4] = f"{rows[4][0]}\t{rows[4][1]}\t{rows[4][2]}\t9"
    inter_file(tmp_path / "t", rows)
    with pytest.raises(DataError, match="expected 3 tab-separated fields") as err:
        load_dataset(tmp_path / "t")
    assert err.value.line == 6


def test_comma_separated_file_is_told_to_use_tabs(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "t.inter").write_text("userID,itemID,x_label\n0,0,0\n")
    with pytest.raises(DataError, match="has no tab"):
        load_dataset(tmp_path / "t")


def test_windows_line_endings_are_accepted(tmp_path, mmrec_folder):
    unix = load_dataset(mmrec_folder).fingerprint
    inter = mmrec_folder / "toy.inter"
    inter.write_bytes(inter.read_bytes().replace(b"\n", b"\r\n"))
    assert load_dataset(mmrec_folder).fingerprint == unix


def test_raw_sparse_ids_are_refused_before_allocating_per_id_arrays(tmp_path, inter_file, toy_rows):
    rows = toy_rows()
    rows[0] = (10**12, rows[0][1], rows[0][2])
    inter_file(tmp_path / "t", rows)
    with pytest.raises(DataError, match="expected 0-based contiguous ids"):
        load_dataset(tmp_path / "t")


def test_some_all_zero_feature_rows_are_accepted_with_a_warning(mmrec_folder, caplog):
    """Items without content often get a zero row; that may be meant, so it is only a warning
    (a modality where EVERY row is zero or the same is refused: tests/pipeline/test_bad_input_catalogue.py)."""
    feat = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    feat[[1, 6]] = 0.0
    np.save(mmrec_folder / "text_feat.npy", feat)
    with caplog.at_level("WARNING", logger="clear_core.data.loading"):
        ds = load_dataset(mmrec_folder)
    assert ds.features["text"].shape == (8, 4)
    assert "2 of 8 items have an all-zero feature row" in caplog.text
