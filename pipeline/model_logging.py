"""The sweep's best model as an MLflow model (PyTorch flavour) on the parent run, and, when
asked, a version of it in the model registry.

The model is the trained ``nn.Module`` with the weights of its best-validation epoch, built on
the sweep's dataset (its graphs are part of it, so it scores without the dataset folder).
``extra_files/model_config.json`` beside it holds the model name, its parameters, the train config, the
epoch and the dataset's name and fingerprint; the same figures are the MLmodel's metadata.

Loading it back and scoring users::

    import mlflow.pytorch, torch
    model = mlflow.pytorch.load_model("models:/clear-synthetic/1")   # or runs:/<parent>/model
    model.eval()
    with torch.no_grad():
        model.prepare_scoring()
        scores = model.score(torch.tensor([0, 1, 2]))   # (3, n_items): higher = recommend first
    top20 = scores.topk(20).indices

(Items a user interacted with in training are not masked here; ``clear_core.evaluation`` does.)
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ARTIFACT_PATH = "model"


def model_card(final: Mapping[str, Any], train: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": final["model"], "model_params": dict(final["model_params"]), "train": dict(train),
        "epoch": final["epoch"], "dataset": final["dataset"], "dataset_fingerprint": final["dataset_fingerprint"],
    }


def log_best_model(client: Any, run_id: str, *, dataset_path: str, checkpoint: str | Path,
                   final: Mapping[str, Any], train: Mapping[str, Any], register: str | None = None) -> dict[str, Any]:
    """Save the best checkpoint's model with MLflow's PyTorch flavour, log it under ``model/``
    of ``run_id``, and register it as ``register`` when given. Returns where it went."""
    import mlflow.pytorch
    import torch

    from clear_core.checkpoints import load_trained_model
    from clear_core.data.loading import load_dataset

    dataset = load_dataset(dataset_path)
    net, epoch, _ = load_trained_model(dataset, checkpoint, model=final["model"],
                                       model_params=final["model_params"], device=torch.device("cpu"))
    card = model_card({**final, "epoch": epoch}, train)
    work = Path(tempfile.mkdtemp(prefix="clearrec-model-"))
    try:
        card_file = work / "model_config.json"
        card_file.write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        mlflow.pytorch.save_model(
            net, str(work / ARTIFACT_PATH),
            extra_files=[str(card_file)],
            # The whole module, graphs included: CLEAR scores through its own score(), not a traced forward.
            serialization_format="pickle",
            # Given, so that MLflow does not load the model in a subprocess to infer them.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "clearrec"],
            metadata={"dataset": card["dataset"], "dataset_fingerprint": card["dataset_fingerprint"],
                      "model": card["model"], "epoch": epoch},
        )
        client.log_artifacts(run_id, str(work / ARTIFACT_PATH), ARTIFACT_PATH)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"model_uri": f"runs:/{run_id}/{ARTIFACT_PATH}"}
    if register:
        out.update(register_model(client, run_id, register, card))
    return out


def register_model(client: Any, run_id: str, name: str, card: Mapping[str, Any]) -> dict[str, Any]:
    """A new version of registered model ``name`` (created on first use) from the run's model."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="CLEAR recommenders selected by clearrec sweeps")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}"
    version = client.create_model_version(
        name, source, run_id=run_id,
        tags={"dataset": card["dataset"], "dataset_fingerprint": card["dataset_fingerprint"], "model": card["model"]},
        description=f"{card['model']} on {card['dataset']} ({card['dataset_fingerprint'][:12]}), epoch {card['epoch']}",
    )
    log.info("registered model %s version %s", name, version.version)
    return {"registered_model": name, "model_version": str(version.version),
            "registered_uri": f"models:/{name}/{version.version}"}
