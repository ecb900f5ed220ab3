"""Item metadata for extraction: text assembly, image references, and damaged files."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clear_core.data import text_content
from clear_core.data.text_content import image_reference, item_text, read_catalogue
from clear_core.errors import DataError


def test_text_is_title_brand_categories_description_with_whitespace_collapsed():
    record = {
        "title": "  Soft\tBlanket ",
        "brand": "Acme",
        "categories": [["Baby", "Bedding"], ["Baby", "Nursery"]],
        "description": ["Warm.", "Machine\nwashable."],
        "price": 12.5,
    }
    assert item_text(record) == "Soft Blanket Acme Baby Bedding Nursery Warm. Machine washable."
    assert item_text({"title": 42, "brand": None, "categories": [[]]}) == ""


def test_image_reference_prefers_a_local_path_then_the_url_file_name():
    assert image_reference({"image_path": "a/b.jpg", "imUrl": "http://x/c.jpg"}) == "a/b.jpg"
    assert image_reference({"imUrl": "http://ecx.images-amazon.com/images/I/41X.jpg?v=1#f"}) == "41X.jpg"
    assert image_reference({"imUrl": "   "}) is None
    assert image_reference({}) is None


def test_a_truncated_gzip_keeps_the_records_read_before_the_break(tmp_path):
    lines = "".join(json.dumps({"asin": f"A{i}", "title": "x" * 50}) + "\n" for i in range(400))
    data = gzip.compress(lines.encode())
    path = tmp_path / "meta.json.gz"
    path.write_bytes(data[: len(data) // 2])
    catalogue = read_catalogue(path)
    assert 0 < len(catalogue.items) < 400
    assert catalogue.counts["bad_lines"] == 1
    assert "stream ended early" in catalogue.examples[-1]


def test_an_over_long_line_is_skipped_unparsed(tmp_path, monkeypatch):
    monkeypatch.setattr(text_content, "MAX_LINE_BYTES", 100)
    path = tmp_path / "meta.json"
    path.write_text(
        json.dumps({"asin": "LONG", "title": "y" * 500}) + "\n" + json.dumps({"asin": "OK", "title": "fine"}) + "\n"
    )
    catalogue = read_catalogue(path)
    assert [it.asin for it in catalogue.items] == ["OK"]
    assert catalogue.counts["bad_lines"] == 1 and catalogue.items[0].line == 2


def test_a_file_without_any_usable_record_is_a_data_error(tmp_path):
    path = tmp_path / "meta.json"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="file is empty"):
        read_catalogue(path)
    path.write_text("[1]\nnope\n")
    with pytest.raises(DataError, match="line 1: expected an object"):
        read_catalogue(path)



_line = st.one_of(
    st.binary(max_size=80),
    st.dictionaries(st.sampled_from(["asin", "title", "brand", "categories", "imUrl"]), st.recursive(
        st.one_of(st.none(), st.integers(), st.text(max_size=12)), lambda inner: st.lists(inner, max_size=3), max_leaves=6
    )).map(lambda d: (repr(d) if len(d) % 2 else str(d).replace("'", '"')).encode("utf-8", "surrogatepass")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, max_size=8))
def test_any_bytes_give_a_catalogue_or_a_data_error_never_a_crash(tmp_path, lines):
    path = tmp_path / "meta.json"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
    try:
        catalogue = read_catalogue(path)
    except DataError:
        return
    asins = [it.asin for it in catalogue.items]
    assert len(asins) == len(set(asins))
    assert all(a and not any(c.isspace() for c in a) for a in asins)
