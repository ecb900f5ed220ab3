"""How hard an auxiliary loss pulls on each parameter against the rest of the training loss, at initialisation.

Builds ``--model`` on ``--data`` (seed ``--seed``; ``--param KEY=VALUE`` overrides its YAML, e.g.
``mrdib=true``), draws one training batch as the trainer does (``--batch-size`` pairs, uniform
negatives), and splits the training loss of that batch in two by one auxiliary weight (``--aux``:
an attribute of the model, e.g. ``cl_weight``, or of a plug-in, e.g. ``mrdib.unique_weight``): the
loss with the weight set to 0 and the difference (the weighted auxiliary term). For each trained
parameter it prints the gradient norm of both parts ("rest" is the backbone's loss and any other
auxiliary term) and their ratio. A ratio far above 1 means that Adam moves that table mostly to
serve the auxiliary objective in the first epochs, which is what explains a model whose
validation figure rises slowly; a ratio far below 1, a weight too small to matter.

    .venv/bin/python benchmarks/gradient_balance.py --model lgmrec --aux cl_weight --data ../shared/data/tiktok
    .venv/bin/python benchmarks/gradient_balance.py --model vbpr --param mrdib=true --aux mrdib.unique_weight \
        --data ../shared/data/tiktok
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import torch

    from clear_core.config import parse_overrides
    from clear_core.data.loading import load_dataset
    from clear_core.errors import ConfigError
    from clear_core.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--aux", required=True,
                    help="the attribute weighting the auxiliary loss: NAME on the model, or PART.NAME on a part of it")
    ap.add_argument("--set", "--param", dest="set", action="append", default=[], metavar="KEY=VALUE",
                    help="a model parameter, as clearrec's --set (repeatable)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--batch-size", type=int, default=2048)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    torch.manual_seed(args.seed)
    try:
        params = parse_overrides(args.set)
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    model = build_model(args.model, ds, params)
    *path, attribute = args.aux.split(".")
    owner = model
    for part in path:
        owner = getattr(owner, part, None)
    if owner is None or not hasattr(owner, attribute):
        raise SystemExit(f"--aux {args.aux!r}: {args.model} has no such attribute (with {params or 'its defaults'})")
    weight = getattr(owner, attribute)
    pairs = torch.as_tensor(ds.train)
    gen = torch.Generator().manual_seed(args.seed)
    batch = pairs[torch.randperm(len(pairs), generator=gen)[: args.batch_size]]
    users, pos = batch[:, 0].long(), batch[:, 1].long()
    neg = torch.randint(ds.n_items, (len(batch),), generator=gen)
    model.train()

    def loss_with(w: float) -> torch.Tensor:
        # The same draw of any training noise for both parts.
        setattr(owner, attribute, w)
        torch.manual_seed(args.seed)
        return model.training_loss(users, pos, neg)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    full, ranking = loss_with(weight), loss_with(0.0)
    setattr(owner, attribute, weight)
    g_full = torch.autograd.grad(full, [p for _, p in named], allow_unused=True)
    g_rank = torch.autograd.grad(ranking, [p for _, p in named], allow_unused=True)
    print(f"# {args.model} on {args.data.name}, seed {args.seed}, batch {len(batch)}: "
          f"loss {full.item():.4f} = rest {ranking.item():.4f} + auxiliary {(full - ranking).item():.4f} "
          f"(weighted by {args.aux} {weight:g})")
    print(f"{'parameter':40s} {'|grad| rest':>15s} {'|grad| aux':>12s} {'aux / rest':>14s}")
    for (name, _), gf, gr in zip(named, g_full, g_rank, strict=True):
        rank = 0.0 if gr is None else float(gr.norm())
        aux = float((gf if gr is None else gf - gr).norm()) if gf is not None else 0.0
        ratio = f"{aux / rank:14.3g}" if rank > 0 else f"{'inf' if aux else '-':>14s}"
        print(f"{name:40s} {rank:15.3e} {aux:12.3e} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
