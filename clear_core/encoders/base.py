"""What every content encoder provides, and the errors an encoder can raise.

An encoder turns a batch of one modality's raw inputs (texts, or decoded RGB images) into a
float32 matrix, one row per input. It is loaded from files that lie on this machine (never
downloaded at run time) and names itself by a ``signature``: registered name, sha256 of the
weights file and every option that changes its output. The extraction stage keys its
content-hash cache on that signature, so a different encoder or option never reuses a cached
vector.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from clear_core.errors import ClearrecError, ConfigError

EXTRACT_EXTRA_HINT = 'pip install "clearrec[extract]"'


class EncoderUnavailableError(ClearrecError):
    """An encoder's package or weights file is missing; the message says what to install."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else is checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} requested but no CUDA device is visible; use auto or cpu")
        return device
    raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")


class Encoder(ABC):
    """Base class of registered encoders.

    Subclasses set ``name`` (the registry key), ``modality`` (``"text"`` or ``"image"``) and
    ``dim``, load their weights in ``__init__`` (raising :class:`EncoderUnavailableError` when
    a package or file is missing) and implement :meth:`encode`. Inputs are ``str`` for text
    encoders and ``PIL.Image.Image`` in RGB mode for image encoders.
    """

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    dim: ClassVar[int] = 0

    def __init__(self, device: str = "cpu", **options: Any) -> None:
        self.device = resolve_device(device)
        self.options = dict(options)

    @property
    @abstractmethod
    def weights_sha256(self) -> str:
        """sha256 of the weights file the encoder was loaded from."""

    @property
    def weights_path(self) -> str | None:
        return None

    @property
    def signature(self) -> str:
        """Name + weights checksum + output-changing options: the cache namespace."""
        return json.dumps(
            {"name": self.name, "weights_sha256": self.weights_sha256, "options": self.options},
            sort_keys=True,
        )

    def describe(self) -> dict[str, Any]:
        """What the features sidecar records about this encoder."""
        return {
            "name": self.name,
            "dim": self.dim,
            "weights_sha256": self.weights_sha256,
            "weights_file": Path(self.weights_path).name if self.weights_path else None,
            "options": self.options,
            "device": self.device,
        }

    @abstractmethod
    def encode(self, inputs: list[Any]) -> np.ndarray:
        """``(len(inputs), dim)`` float32; deterministic (eval mode, no sampling)."""
