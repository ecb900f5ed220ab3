"""Feature extraction: aligned outputs, determinism, cache reuse, resume after a kill, and every
kind of bad input counted instead of crashing. Uses the small weight-free encoders of
tests/fixtures/simple_encoders.py (real encoders: tests/clear_core/test_encoders.py)."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clear_core.encoders.cache import EmbeddingCache
from clear_core.encoders.image_files import decode_image
from clear_core.errors import ConfigError, DataError
from clear_core.extraction import extract_features, read_sidecar

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def _load_simple_encoders():
    name = "clearrec_test_simple_encoders"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / "simple_encoders.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


enc = _load_simple_encoders()
TEXT, IMAGE = enc.HashingTextEncoder, enc.PixelStatsImageEncoder
ENCODERS = {"text_encoder": TEXT.name, "image_encoder": IMAGE.name, "device": "cpu"}


@pytest.fixture(autouse=True)
def _reset_calls():
    TEXT.calls.clear()
    IMAGE.calls.clear()


def png(path: Path, colour: tuple[int, int, int], size: int = 16) -> Path:
    Image.new("RGB", (size, size), colour).save(path, format="PNG")
    return path


def write_meta(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def catalogue(tmp_path: Path, n: int = 10) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i in range(n):
        asin = f"A{i:03d}"
        png(images / f"{asin}.png", (20 * i % 256, 255 - 20 * i % 256, 7 * i % 256))
        rec = {"asin": asin, "title": f"item {i} widget", "brand": "Brand", "categories": [["Toys", f"c{i % 3}"]],
               "description": f"number {i} of {n}", "imUrl": f"http://example.invalid/I/{asin}.png"}
        lines.append(repr(rec) if i % 2 else json.dumps(rec))
    return write_meta(tmp_path / "meta.json.gz", lines), images


def test_outputs_are_aligned_with_items_txt_in_first_seen_order(tmp_path):
    meta, images = catalogue(tmp_path, n=6)
    out = tmp_path / "out"
    summary = extract_features(meta, images, out, **ENCODERS)

    assert (out / "items.txt").read_text().split() == [f"A{i:03d}" for i in range(6)]
    text = np.load(out / "text_feat.npy", allow_pickle=False)
    image = np.load(out / "image_feat.npy", allow_pickle=False)
    assert text.dtype == image.dtype == np.float32
    assert text.shape == (6, TEXT.dim) and image.shape == (6, IMAGE.dim)
    # Row 3 is item A003: its own content, encoded alone, gives the same vector.
    own = TEXT().encode(["item 3 widget Brand Toys c0 number 3 of 6"])[0]
    np.testing.assert_array_equal(text[3], own)
    expected_rgb = np.array([60, 195, 21], dtype=np.float32) / 255.0
    np.testing.assert_allclose(image[3, -3:], expected_rgb, atol=1e-5)
    sidecar = read_sidecar(out)
    assert sidecar == summary
    assert sidecar["items"] == 6
    assert sidecar["modalities"]["text"]["encoder"]["name"] == TEXT.name
    assert sidecar["modalities"]["text"]["encoder"]["weights_sha256"] == TEXT().weights_sha256
    assert sidecar["modalities"]["image"]["dim"] == IMAGE.dim
    assert not any(sidecar["counts"].values())
    assert sidecar["device"] == "cpu"
    assert len(sidecar["input"]["fingerprint"]) == 64


def test_repeated_runs_give_identical_arrays_and_the_second_is_served_from_cache(tmp_path):
    meta, images = catalogue(tmp_path, n=9)
    first = extract_features(meta, images, tmp_path / "a", batch_size=4, **ENCODERS)
    calls_first = (list(TEXT.calls), list(IMAGE.calls))
    assert calls_first == ([4, 4, 1], [4, 4, 1])
    assert first["modalities"]["text"]["encoded"] == 9

    TEXT.calls.clear()
    IMAGE.calls.clear()
    second = extract_features(meta, images, tmp_path / "a", batch_size=4, **ENCODERS)
    assert TEXT.calls == [] and IMAGE.calls == []
    assert second["modalities"]["text"]["from_cache"] == 9
    assert second["modalities"]["image"]["encoded"] == 0

    # A separate output folder (its own empty cache) computes everything again: same bytes.
    extract_features(meta, images, tmp_path / "b", batch_size=4, **ENCODERS)
    for name in ("text_feat.npy", "image_feat.npy", "items.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first["input"]["fingerprint"] == second["input"]["fingerprint"]


def test_cache_is_keyed_by_content_so_changed_items_alone_are_encoded(tmp_path):
    meta, images = catalogue(tmp_path, n=5)
    cache = tmp_path / "shared-cache"
    extract_features(meta, images, tmp_path / "a", cache_dir=cache, **ENCODERS)
    png(images / "A002.png", (1, 2, 3))
    TEXT.calls.clear()
    IMAGE.calls.clear()
    summary = extract_features(meta, images, tmp_path / "b", cache_dir=cache, **ENCODERS)
    assert TEXT.calls == [] and IMAGE.calls == [1]
    assert summary["modalities"]["image"]["from_cache"] == 4
    assert not (tmp_path / "b" / ".cache").exists()


def test_identical_contents_are_encoded_once(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    png(images / "same.png", (9, 9, 9))
    meta = write_meta(tmp_path / "meta.json", [
        json.dumps({"asin": a, "title": "same words", "image_path": "same.png"}) for a in ("X", "Y", "Z")
    ])
    summary = extract_features(meta, images, tmp_path / "out", **ENCODERS)
    assert TEXT.calls == [1] and IMAGE.calls == [1]
    feats = np.load(tmp_path / "out" / "text_feat.npy")
    assert (feats == feats[0]).all()
    assert summary["modalities"]["text"]["unique_contents"] == 1


def test_items_without_text_or_image_get_the_modality_mean_and_are_counted(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    png(images / "A.png", (255, 0, 0))
    png(images / "B.png", (0, 0, 255))
    meta = write_meta(tmp_path / "meta.json", [
        json.dumps({"asin": "A", "title": "red thing"}),
        json.dumps({"asin": "B", "title": "blue thing"}),
        json.dumps({"asin": "C", "title": "   ", "description": [], "categories": [[]]}),
    ])
    summary = extract_features(meta, images, tmp_path / "out", **ENCODERS)
    text = np.load(tmp_path / "out" / "text_feat.npy")
    image = np.load(tmp_path / "out" / "image_feat.npy")
    np.testing.assert_allclose(text[2], text[:2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(image[2], image[:2].mean(axis=0), rtol=1e-6)
    assert summary["counts"]["missing_text"] == 1
    assert summary["counts"]["missing_image"] == 1
    assert summary["modalities"]["text"]["mean_filled"] == 1


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_bad_inputs_are_counted_never_crash_and_never_run_code(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    png(outside / "secret.png", (1, 1, 1))
    png(images / "good.png", (0, 128, 255))
    (images / "empty.png").write_bytes(b"")
    (images / "truncated.jpg").write_bytes(_jpeg_bytes()[:200])
    (images / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (images / "vector.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    (images / "notes.txt").write_text("not an image")
    (images / "link.png").symlink_to(outside / "secret.png")
    marker = tmp_path / "pwned"
    lines = [
        json.dumps({"asin": "ok", "title": "fine", "image_path": "good.png"}),
        json.dumps({"asin": "zero", "title": "t", "image_path": "empty.png"}),
        json.dumps({"asin": "trunc", "title": "t", "image_path": "truncated.jpg"}),
        json.dumps({"asin": "garb", "title": "t", "image_path": "garbage.png"}),
        json.dumps({"asin": "eps", "title": "t", "image_path": "vector.eps"}),
        json.dumps({"asin": "txt", "title": "t", "image_path": "notes.txt"}),
        json.dumps({"asin": "up", "title": "t", "image_path": "../outside/secret.png"}),
        json.dumps({"asin": "abs", "title": "t", "image_path": str(outside / "secret.png")}),
        json.dumps({"asin": "sym", "title": "t", "image_path": "link.png"}),
        json.dumps({"asin": "../outside/secret", "title": "asin used as a file name"}),
        json.dumps({"asin": "ok", "title": "duplicate: first record wins"}),
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        "{'asin': 'call', 'title': open('/etc/passwd').read()}",
        "[1, 2, 3]",
        json.dumps({"title": "no asin"}),
        json.dumps({"asin": "two\nlines", "title": "would break items.txt"}),
        "{not json, not python",
        "",
    ]
    raw = "".join(line + "\n" for line in lines).encode("utf-8")
    raw += b'{"asin": "latin1", "title": "caf\xe9 cr\xe8me"}\n'
    meta = tmp_path / "meta.json"
    meta.write_bytes(raw)

    summary = extract_features(meta, images, tmp_path / "out", **ENCODERS)
    counts = summary["counts"]
    assert not marker.exists()
    assert counts["bad_lines"] == 6
    assert counts["duplicate_asin"] == 1
    assert counts["non_utf8_lines"] == 1
    assert counts["zero_byte"] == 1
    assert counts["corrupt"] == 2
    assert counts["unsupported"] == 2
    assert counts["escaped_path"] == 4
    assert counts["missing_image"] == 1  # latin1 has no image reference and no <asin>.<ext>
    items = (tmp_path / "out" / "items.txt").read_text().splitlines()
    assert items == ["ok", "zero", "trunc", "garb", "eps", "txt", "up", "abs", "sym", "../outside/secret", "latin1"]
    image = np.load(tmp_path / "out" / "image_feat.npy")
    # Only "ok" had a usable image, so every other row is its vector (the mean of one).
    assert (image == image[0]).all()
    # "t" is shared by eight items: four distinct texts in all, each encoded once.
    assert summary["modalities"]["text"]["encoded"] == 4
    assert len(summary["bad_line_examples"]) == 6


def test_decode_image_refuses_oversized_images_from_the_header(tmp_path):
    path = png(tmp_path / "big.png", (5, 5, 5), size=200)
    image, reason = decode_image(path, max_pixels=200 * 200)
    assert reason is None and image.size == (200, 200)
    assert decode_image(path, max_pixels=200 * 200 - 1) == (None, "too_large")


def test_text_only_when_no_image_folder_or_image_encoder_none(tmp_path):
    meta, images = catalogue(tmp_path, n=3)
    summary = extract_features(meta, None, tmp_path / "out", **ENCODERS)
    assert set(summary["modalities"]) == {"text"}
    assert not (tmp_path / "out" / "image_feat.npy").exists()
    summary = extract_features(meta, images, tmp_path / "out2", **{**ENCODERS, "image_encoder": "none"})
    assert set(summary["modalities"]) == {"text"}


def test_bad_arguments_raise_errors_that_name_the_problem(tmp_path):
    meta, images = catalogue(tmp_path, n=2)
    with pytest.raises(DataError, match="image folder not found"):
        extract_features(meta, tmp_path / "nope", tmp_path / "o", **ENCODERS)
    with pytest.raises(DataError, match="metadata file not found"):
        extract_features(tmp_path / "missing.json", images, tmp_path / "o", **ENCODERS)
    empty = write_meta(tmp_path / "empty.json", ["", "garbage"])
    with pytest.raises(DataError, match="no usable metadata record"):
        extract_features(empty, images, tmp_path / "o", **ENCODERS)
    with pytest.raises(ConfigError, match="text_batch_size: expected >= 1"):
        extract_features(meta, images, tmp_path / "o", batch_size=0, **ENCODERS)
    with pytest.raises(ConfigError, match="unknown encoder 'clip-xl'"):
        extract_features(meta, images, tmp_path / "o", **{**ENCODERS, "image_encoder": "clip-xl"})
    with pytest.raises(ConfigError, match="device"):
        extract_features(meta, images, tmp_path / "o", **{**ENCODERS, "device": "tpu"})
    assert not (tmp_path / "o" / "features.json").exists()


def test_unreadable_cache_shards_are_ignored(tmp_path):
    meta, images = catalogue(tmp_path, n=3)
    out = tmp_path / "out"
    extract_features(meta, images, out, **ENCODERS)
    for folder in (out / ".cache").iterdir():
        (folder / "shard-zzzz.npz").write_bytes(b"not a zip file")
    TEXT.calls.clear()
    summary = extract_features(meta, images, out, **ENCODERS)
    assert TEXT.calls == []
    assert summary["modalities"]["text"]["from_cache"] == 3


def test_cache_shards_are_plain_arrays_and_compacted(tmp_path):
    cache = EmbeddingCache(tmp_path, json.dumps({"name": "x"}), dim=3)
    keys = [bytes([i]) * 32 for i in range(4)]
    cache.add(keys[:2], np.ones((2, 3), np.float32))
    cache.add(keys[2:], np.zeros((2, 3), np.float32))
    assert len(list(cache.dir.glob("shard-*.npz"))) == 2
    cache.compact()
    shards = list(cache.dir.glob("shard-*.npz"))
    assert len(shards) == 1
    with np.load(shards[0], allow_pickle=False) as npz:
        assert npz["keys"].shape == (4, 32) and npz["vectors"].dtype == np.float32
    reopened = EmbeddingCache(tmp_path, json.dumps({"name": "x"}), dim=3)
    np.testing.assert_array_equal(reopened.get(keys[0]), np.ones(3))
    assert EmbeddingCache(tmp_path, json.dumps({"name": "y"}), dim=3).get(keys[0]) is None


KILL_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("simple_encoders", {fixtures!r} + "/simple_encoders.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
from clear_core.extraction import extract_features
extract_features({meta!r}, {images!r}, {out!r}, text_encoder="test-hashing-text",
                 image_encoder="test-pixel-stats", device="cpu", batch_size=4)
"""


def test_a_killed_run_resumes_where_it_stopped_and_gives_the_same_result(tmp_path):
    meta, images = catalogue(tmp_path, n=24)
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(fixtures=str(FIXTURES), meta=str(meta), images=str(images), out=str(out))
    env = {**os.environ, "CLEARREC_TEST_ENCODE_DELAY": "0.4", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        shards: list[Path] = []
        while time.monotonic() < deadline and len(shards) < 2:
            shards = list(out.glob(".cache/*/shard-*.npz"))
            time.sleep(0.05)
        assert len(shards) >= 2, "the run did not flush two batches in time"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "features.json").exists()

    resumed = extract_features(meta, images, out, batch_size=4, **ENCODERS)
    text, image = resumed["modalities"]["text"], resumed["modalities"]["image"]
    assert text["from_cache"] >= 8 and text["from_cache"] + text["encoded"] == 24
    assert image["from_cache"] + image["encoded"] == 24
    # Resumed batches are the same fixed slices a fresh run makes.
    assert all(n == 4 for n in TEXT.calls)

    fresh = tmp_path / "fresh"
    extract_features(meta, images, fresh, batch_size=4, **ENCODERS)
    for name in ("text_feat.npy", "image_feat.npy", "items.txt"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()


def test_extract_features_is_a_plain_function_usable_as_a_ray_task(tmp_path):
    meta, images = catalogue(tmp_path, n=2)
    fn = pickle.loads(pickle.dumps(extract_features))
    summary = fn(str(meta), str(images), str(tmp_path / "out"), **ENCODERS)
    assert json.loads(json.dumps(summary)) == summary


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]),
    body=st.binary(max_size=300),
)
def test_decode_image_turns_any_bytes_into_an_image_or_a_reason(tmp_path_factory, prefix, body):
    path = tmp_path_factory.mktemp("img") / "x.bin"
    path.write_bytes(prefix + body)
    image, reason = decode_image(path, max_pixels=10_000_000)
    assert (image is None) != (reason is None)
    assert reason in (None, "zero_byte", "unsupported", "corrupt", "too_large")


def test_synthetic_raw_catalogue_extract_then_prepare_keeps_rows_with_their_items(tmp_path):
    """The contract with the filter-and-split stage: row j of items.txt/feature files follows
    its asin through k-core and re-indexing."""
    from clear_core.data.loading import load_dataset
    from clear_core.data.prepare import prepare_dataset
    from clear_core.data.synthetic import generate_synthetic
    from clear_core.data.synthetic_content import write_raw_catalogue

    synthetic = generate_synthetic(n_users=100, n_items=60, n_interactions=1500, seed=3)
    raw = tmp_path / "raw"
    write_raw_catalogue(raw, synthetic)
    feats = tmp_path / "features"
    extract_features(raw / "meta.json.gz", raw / "images", feats, **ENCODERS)
    prepare_dataset(raw / "reviews.json.gz", tmp_path / "prepared", features_dir=feats, k=synthetic.config["k_core"])
    dataset = load_dataset(tmp_path / "prepared")

    from clear_core.data.k_core import read_id_map

    asins = (feats / "items.txt").read_text().split()
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    item_asins = read_id_map(tmp_path / "prepared" / manifest["id_maps"]["items"])
    assert len(item_asins) == dataset.n_items
    for modality in ("text", "image"):
        extracted = np.load(feats / f"{modality}_feat.npy")
        rows = [asins.index(str(asin)) for asin in item_asins]
        np.testing.assert_array_equal(dataset.features[modality], extracted[rows])
