"""Raw Amazon 2014 files: JSON or Python-literal lines, gzip or plain, never eval."""

from __future__ import annotations

import gzip
import json

import pytest

from clear_core.data.amazon import iter_records, read_meta, read_reviews
from clear_core.errors import DataError

REVIEWS = [
    {"reviewerID": "A1", "asin": "B01", "overall": 5.0, "unixReviewTime": 1300000000},
    {"reviewerID": "A2", "asin": "B01", "overall": 3.0, "unixReviewTime": 1300000100},
    {"reviewerID": "A1", "asin": "B02", "overall": 4.0, "unixReviewTime": 1300000200},
]

# The 2014 metadata dumps are Python literals: single quotes, nested lists, no JSON quoting.
META_LINES = [
    "{'asin': 'B01', 'title': \"Baby's first spoon\", 'categories': [['Baby', 'Feeding']], 'price': 3.5}",
    '{"asin": "B02", "title": "Plain JSON line", "brand": "Acme"}',
]


def _write(path, lines, gz):
    data = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_reviews_json_lines_gzip_or_plain(tmp_path, gz):
    # The name says .gz either way: the reader goes by content, not by file name.
    path = _write(tmp_path / "reviews_Baby_5.json.gz", [json.dumps(r) for r in REVIEWS], gz)
    reviews = read_reviews(path)
    assert reviews.user.tolist() == ["A1", "A2", "A1"]
    assert reviews.item.tolist() == ["B01", "B01", "B02"]
    assert reviews.rating.tolist() == [5.0, 3.0, 4.0]
    assert reviews.timestamp.tolist() == [1300000000, 1300000100, 1300000200]
    assert reviews.has_timestamps


def test_meta_accepts_python_literal_and_json_lines(tmp_path):
    meta = read_meta(_write(tmp_path / "meta_Baby.json.gz", META_LINES, gz=True))
    assert meta["B01"]["title"] == "Baby's first spoon"
    assert meta["B01"]["categories"] == [["Baby", "Feeding"]]
    assert meta["B02"]["brand"] == "Acme"


def test_code_in_a_line_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    line = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    path = _write(tmp_path / "meta.json", [META_LINES[0], line], gz=False)
    with pytest.raises(DataError, match="neither JSON nor a Python literal") as err:
        read_meta(path)
    assert err.value.line == 2
    assert not marker.exists()


def test_bad_line_raises_with_its_number_or_is_skipped_and_counted(tmp_path):
    lines = [json.dumps(REVIEWS[0]), "{not valid", "", json.dumps(REVIEWS[1])]
    path = _write(tmp_path / "r.json", lines, gz=False)
    with pytest.raises(DataError) as err:
        read_reviews(path)
    assert err.value.line == 2 and str(err.value).startswith(f"{path}:2:")
    reviews = read_reviews(path, on_error="skip")
    assert len(reviews) == 2 and reviews.bad_lines == 1


def test_review_without_asin_names_the_line(tmp_path):
    path = _write(tmp_path / "r.json", [json.dumps(REVIEWS[0]), json.dumps({"reviewerID": "A9"})], gz=False)
    with pytest.raises(DataError, match="'asin'") as err:
        read_reviews(path)
    assert err.value.line == 2


def test_non_object_line_is_rejected(tmp_path):
    path = _write(tmp_path / "r.json", ["[1, 2, 3]"], gz=False)
    with pytest.raises(DataError, match="expected an object"):
        list(iter_records(path))


def test_repeated_review_pairs_keep_the_first(tmp_path):
    again = dict(REVIEWS[0], overall=1.0)
    path = _write(tmp_path / "r.json", [json.dumps(r) for r in REVIEWS + [again]], gz=False)
    reviews = read_reviews(path)
    assert len(reviews) == 3 and reviews.duplicates_dropped == 1
    assert reviews.rating[0] == 5.0


def test_corrupt_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "r.json.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="cannot read"):
        read_reviews(path)
