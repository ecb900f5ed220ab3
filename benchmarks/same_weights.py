"""What the same-weights checks (``slmrec_same_weights.py``, ``mmgcn_same_weights.py``) share: the
TikTok data and MMRec's model built in float64 beside it, then one batch through both models with
the loss, every mapped gradient and the scores of 512 users printed side by side.

Each check copies MMRec's weights into ours in its own way; any difference printed is then the
two models' code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_reference import REFERENCE_CLASSES, build_reference, import_reference, reference_inputs  # noqa: E402

from clear_core.data.dataset import Dataset  # noqa: E402
from clear_core.data.loading import load_dataset  # noqa: E402


def tiktok_and_reference(description: str, argv: list[str] | None) -> tuple[argparse.Namespace, Dataset, Callable]:
    """The command line of a check, its dataset (TikTok's image and audio) and MMRec's class loader."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--reference-src", type=Path, required=True, help="a checkout of MMRec's src/")
    ap.add_argument("--reference-site", type=Path, default=None, help="extra import directory (torch_geometric)")
    ap.add_argument("--batch-size", type=int, default=2048)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    dataset = load_dataset(args.data)
    if set(dataset.features) != {"image", "audio"}:
        ap.error(f"{args.data}: expected image and audio features (TikTok), found {sorted(dataset.features)}")
    return args, dataset, import_reference(args.reference_src, args.reference_site)


def reference_model(load: Callable, reference_src: str, dataset: Dataset, name: str,
                    config_set: dict[str, Any]) -> torch.nn.Module:
    """MMRec's implementation of our model ``name`` on ``dataset`` (its image as visual, its audio
    as textual features), in float64; its plain tensor attributes are left for the caller to convert."""
    with reference_inputs(name, dataset, reference_src, {**config_set, "learning_rate": 1e-3, "seed": 0}) as config:
        return build_reference(name, load(REFERENCE_CLASSES[name]), config, dataset).double()


def compare(ours, ref, dataset: Dataset, batch_size: int, reference_tensors: dict[str, torch.Tensor],
            reference_scores: Callable[[torch.Tensor], torch.Tensor] = lambda scores: scores) -> None:
    """Print the loss of one random batch, the gradient of each of our parameters named in
    ``reference_tensors`` against that reference tensor's, and the scores of the batch's first
    512 users (MMRec's through ``reference_scores``, which undoes any output transform)."""
    g = torch.Generator().manual_seed(1)
    users, pos, neg = (torch.randint(0, n, (batch_size,), generator=g)
                       for n in (dataset.n_users, dataset.n_items, dataset.n_items))
    ours_loss = ours.loss(users, pos, neg)
    ours_loss.backward()
    ref_loss = ref.calculate_loss(torch.stack((users, pos, neg)))
    ref_loss.backward()
    print(f"loss: ours {ours_loss.item():.12f}  MMRec {ref_loss.item():.12f}")
    for name, param in ours.named_parameters():
        if name in reference_tensors:
            grad = reference_tensors[name].grad
            print(f"gradient {name:28s} max |ours - MMRec| {(param.grad - grad).abs().max().item():.2e}"
                  f"  (max |MMRec| {grad.abs().max().item():.2e})")
    with torch.no_grad():
        ours.prepare_scoring()
        mine = ours.score(users[:512])
        ours.finish_scoring()
        theirs = reference_scores(ref.full_sort_predict([users[:512], None]))
    print(f"scores max |ours - MMRec| {(mine - theirs).abs().max().item():.2e}"
          f"  (max |MMRec| {theirs.abs().max().item():.2e})")
