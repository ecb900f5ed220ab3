"""The final evaluation of a trained model: a trainer checkpoint (local or on S3) scored on the
dataset's splits by full ranking, as ``clearrec evaluate`` and the end of a sweep do it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fetch_checkpoint(uri: str, dest: Path, endpoint_url: str | None) -> Path:
    """A trial checkpoint as a local folder (downloaded when it lies on S3)."""
    if not uri.startswith("s3://"):
        return Path(uri)
    import pyarrow.fs as pafs

    from pipeline.storage import s3_filesystem

    dest.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(uri[len("s3://"):], str(dest), source_filesystem=s3_filesystem(endpoint_url),
                    destination_filesystem=pafs.LocalFileSystem())
    return dest


def evaluate_checkpoint(
    dataset_path: str | Path,
    checkpoint: str | Path,
    *,
    model: str,
    model_params: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    splits: tuple[str, ...] = ("valid", "test"),
    spectrum: bool = False,
) -> dict[str, Any]:
    """Metrics of a trained model on ``splits``: the final evaluation of the chosen configuration.

    ``spectrum``: also the cross-modal covariance spectrum before/after projection of the
    trained model's encoded features (Figure 5), for models that project (CLEAR)."""
    from clear_core import checkpoints
    from clear_core.data.loading import load_dataset
    from clear_core.evaluation import evaluate
    from clear_core.models import resolve_params
    from clear_core.trainer import TrainConfig, resolve_device

    config = TrainConfig.resolve(dict(train or {}))
    device = resolve_device(config.device)
    checkpoints.find(checkpoint)  # a wrong path is reported before the dataset is read
    dataset = load_dataset(dataset_path)
    net, epoch, path = checkpoints.load_trained_model(dataset, checkpoint, model=model, model_params=model_params,
                                                      device=device)
    metrics = evaluate(net, dataset, splits=splits, topk=config.topk, batch_size=config.eval_batch_size)
    out: dict[str, Any] = {
        "checkpoint": str(path),
        "epoch": epoch,
        "model": model,
        "model_params": resolve_params(model, model_params),
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "device": str(device),
        **{s: metrics[s] for s in splits},
    }
    if spectrum and hasattr(net, "projection"):
        import torch

        from clear_core.diagnostics import model_diagnostics, to_jsonable
        from clear_core.errors import ClearrecError

        try:
            with torch.no_grad():
                diag = model_diagnostics(net, neighbours=min(10, dataset.n_items - 1))
            out["spectrum"] = to_jsonable(diag["spectrum"])
        except (ClearrecError, RuntimeError, AttributeError) as exc:
            # A figure must not sink an evaluation that has already succeeded.
            log.warning("no spectrum for %s: %s", model, exc)
    return out
