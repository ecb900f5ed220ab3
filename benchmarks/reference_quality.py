"""Quality against the reference implementations: ours and MMRec's same model, trained the same way.

Both sides go through clearrec's trainer (:func:`clear_core.trainer.fit`), so they share the
protocol of ``configs/train.yaml`` (Adam, batch 2,048, uniform negatives, full ranking with the
training items masked, early stopping on validation Recall@20 with patience 20, test read at the
best-validation epoch), the split, and the seeds. MMRec's model is wrapped in the model contract
(:class:`ReferenceModel`): its ``pre_epoch_processing`` at each epoch's start, its
``calculate_loss`` on the batch's ``[users; positives; negatives]`` (a tuple of losses summed, as
MMRec's trainer does), its ``full_sort_predict`` for the scores. A gap between the two sides is
then the models' code, not the trainer, sampler or evaluator around them.

The reference is built as ``benchmarks/bench_reference.py`` builds it (its ``--reference-src``
and ``--reference-site``, MMRec's ``overall.yaml`` + ``model/<Model>.yaml`` with the first value
of each searched list, the same data folder), then ``--reference-set KEY=VALUE`` sets MMRec config
keys (its names: ``reg_weight``, ``cl_weight``, ...); ``--ours-set`` sets our model's keyword
arguments. Give both the same point. A model whose MMRec config sets Adam's ``weight_decay``
(SLMRec: 1e-4) gets ``weight_decay / 2 * sum of squared parameters`` added to its loss instead,
since the trainer's Adam has none: Adam's coupled decay adds ``weight_decay * theta`` to each
gradient, exactly this term's gradient (our SLMRec does the same).

    nice -n 5 .venv/bin/python benchmarks/reference_quality.py dualgnn --reference-src MMRec/src \\
        --reference-site ref_site --seeds 7 42 123 --out runs/reference_quality.jsonl
    .venv/bin/python benchmarks/reference_quality.py dualgnn --out runs/reference_quality.jsonl --summarise

``--reference-variant NAME`` trains a named change of the reference (:data:`REFERENCE_VARIANTS`,
e.g. SLMRec's encoders with our zero biases), ``--ours-variant NAME`` one of ours
(:data:`OURS_VARIANTS`, e.g. SLMRec given TikTok's audio as MMRec's textual slot receives it), to
find which departure a gap between the sides comes from; their rows are labelled with it and
every ours-side label is compared with every reference-side label.

Each run is one JSON line in ``--out`` (with its validation and test curves of the early-stopping
metric, one value per epoch); a rerun skips the runs already there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_reference import REFERENCE_CLASSES, build_reference, import_reference, reference_inputs  # noqa: E402
from plugin_table import METRICS, done_rows, fmt_interval, mean_sd, paired  # noqa: E402

from clear_core.config import CONFIG_DIR_ENV, config_dir, parse_overrides  # noqa: E402

log = logging.getLogger("reference_quality")
SIDES = ("ours", "reference")


def _zero_biases(*names: str):
    def fixup(model) -> None:
        import torch

        with torch.no_grad():
            for name in names:
                getattr(model, name).bias.zero_()
    return fixup


def _mmgcn_text_through_latent(model) -> None:
    """MMRec's MMGCN feeds its textual features raw (no linear map, a preference of the feature
    width) and only the visual ones through the 256-d latent map; ours maps every modality."""
    gcn, text = type(model.v_gcn), model.t_gcn
    model.t_gcn = gcn(text.edge_index, text.batch_size, text.num_user, text.num_item, text.dim_feat, text.dim_id,
                      text.aggr_mode, text.concate, num_layer=text.num_layer, has_id=text.has_id,
                      dim_latent=model.v_gcn.dim_latent, device=text.device)


def _mmgcn_our_encoder_init(model) -> None:
    """Our encoder initialisation (Xavier-uniform weights, zero biases; every multimodal model
    here) on MMRec's MMGCN's visual map, which keeps nn.Linear's own draw."""
    import torch

    with torch.no_grad():
        torch.nn.init.xavier_uniform_(model.v_gcn.MLP.weight)
        model.v_gcn.MLP.bias.zero_()


#: Model -> variant name -> a change applied to the built reference model (after its own fixup):
#: one of our departures from it, to measure what that departure is worth.
REFERENCE_VARIANTS: dict[str, dict[str, Any]] = {
    # Our encoders start with zero biases (clear_core.models.multimodal); MMRec's SLMRec keeps
    # nn.Linear's uniform draw for v_dense / t_dense.
    "slmrec": {"zero_encoder_biases": _zero_biases("v_dense", "t_dense")},
    "mmgcn": {"text_through_latent": _mmgcn_text_through_latent, "our_encoder_init": _mmgcn_our_encoder_init},
}


def _renamed_modality(old: str, new: str):
    def transform(dataset, params):
        import dataclasses

        features = {new if m == old else m: f for m, f in dataset.features.items()}
        return dataclasses.replace(dataset, features=features), params
    return transform


def _with_params(**extra: Any):
    def transform(dataset, params):
        return dataset, {**params, **extra}
    return transform


#: Model -> variant name -> a change of what our model is trained on or with:
#: ``(dataset, keyword arguments) -> (dataset, keyword arguments)``.
OURS_VARIANTS: dict[str, dict[str, Any]] = {
    # MMRec's SLMRec has a visual and a textual slot: TikTok's audio goes into the textual one and
    # becomes its coarse (d/2) FAC stage; ours, told it is audio, aligns it at full width.
    "slmrec": {"audio_as_text": _renamed_modality("audio", "text")},
    # MMRec's MMGCN feeds its textual slot (TikTok's audio) raw; ours maps it to the latent.
    "mmgcn": {"raw_audio": _with_params(raw_modalities=["audio"])},
}
VARIANTS = {"ours": OURS_VARIANTS, "reference": REFERENCE_VARIANTS}


def reference_model_class(name: str, model_class: type, config: dict[str, Any], fixups: Sequence = ()) -> type:
    """A :class:`~clear_core.models.base.Recommender` named ``reference_<name>`` that holds
    MMRec's ``model_class`` built with ``config`` (:func:`bench_reference.build_reference`, with
    ``fixups``); ``config['weight_decay']`` (MMRec's Adam decay) becomes the equivalent
    squared-parameter term of the loss."""
    import torch

    from clear_core.models.base import Recommender
    from clear_core.models.losses import parameter_decay

    weight_decay = float(config.get("weight_decay") or 0.0)

    class ReferenceModel(Recommender):
        needs_features = True
        params: ClassVar[dict[str, Any]] = {}

        def __init__(self, dataset, **params: Any) -> None:
            super().__init__(dataset, **params)
            self.inner = build_reference(name, model_class, config, dataset, fixups)

        def on_epoch_start(self, epoch: int) -> None:
            hook = getattr(self.inner, "pre_epoch_processing", None)
            if hook is not None:
                hook()

        def loss(self, users, pos_items, neg_items):
            # A fresh tensor: some reference models edit the interaction they are given.
            out = self.inner.calculate_loss(torch.stack((users, pos_items, neg_items)))
            loss = sum(out) if isinstance(out, tuple) else out
            if weight_decay:
                loss = loss + weight_decay * parameter_decay(self.inner.parameters())
            return loss.reshape(())  # BM3 returns shape [1]; the trainer accumulates a scalar

        def score(self, users):
            return self.inner.full_sort_predict([users, None])

    ReferenceModel.name = f"reference_{name}"
    ReferenceModel.__qualname__ = ReferenceModel.__name__ = f"Reference{model_class.__name__}"
    return ReferenceModel


def _config_dir_with(model_name: str, into: Path) -> Path:
    """A copy of the config folder with an empty ``models/<model_name>.yaml`` (the adapter takes
    no keyword arguments), so that the trainer's model lookup finds it."""
    target = into / "configs"
    shutil.copytree(config_dir(), target)
    (target / "models" / f"{model_name}.yaml").write_text("{}\n", encoding="utf-8")
    return target


def run_one(job: dict) -> dict:
    """Train one side of ``job['model']`` on one seed; the row that goes to ``--out``."""
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from clear_core.data.loading import load_dataset
    from clear_core.models import register
    from clear_core.trainer import TrainConfig, fit

    random.seed(job["seed"])
    np.random.seed(job["seed"])  # MMRec's samplers draw from NumPy and random; ours does not
    dataset = load_dataset(job["data"])
    cfg = TrainConfig.resolve({**job["train"], "seed": job["seed"], "device": "cpu"})
    t0 = time.perf_counter()
    if job["side"] == "ours":
        params = dict(job["ours_set"])
        if job.get("ours_variant"):
            dataset, params = OURS_VARIANTS[job["model"]][job["ours_variant"]](dataset, params)
        result = fit(dataset, job["model"], params, cfg)
    else:
        src = Path(job["reference_src"])
        load = import_reference(src, Path(job["reference_site"]) if job["reference_site"] else None)
        fixups = [REFERENCE_VARIANTS.get(job["model"], {}).get(job.get("reference_variant"))]
        overrides = {**job["reference_set"], "learning_rate": cfg.learning_rate, "seed": job["seed"]}
        # The model is built inside fit, so its files and the trainer's config folder outlive it.
        with (reference_inputs(job["model"], dataset, src, overrides) as config,
              tempfile.TemporaryDirectory(prefix="reference_quality_") as tmp):
            cls = register(reference_model_class(job["model"], load(REFERENCE_CLASSES[job["model"]]), config, fixups))
            os.environ[CONFIG_DIR_ENV] = str(_config_dir_with(cls.name, Path(tmp)))
            try:
                result = fit(dataset, cls.name, {}, cfg)
            finally:
                os.environ.pop(CONFIG_DIR_ENV)
    return {
        **{k: job[k] for k in ("side", "model", "seed", "ours_set", "reference_set", "train")},
        **{f"{side}_variant": job[f"{side}_variant"] for side in SIDES if job.get(f"{side}_variant")},
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "valid": result.valid, "test": result.test,
        # The whole validation and test curves, so that two sides that stop at different epochs
        # can be compared epoch by epoch (is one slower, or did patience stop it on a noisy
        # dip?), and a long run also gives what any shorter patience would have selected.
        "valid_curve": [round(h["valid"][cfg.valid_metric], 6) for h in result.history],
        "test_curve": [round(h["test"][cfg.valid_metric], 6) for h in result.history],
        "median_train_seconds": result.median_train_seconds, "wall_seconds": time.perf_counter() - t0,
    }


def _key(row: dict) -> str:
    # A variant joins the key only when set, so that rows written before variants existed still match.
    variant = [row[f"{side}_variant"] for side in SIDES if row.get(f"{side}_variant")]
    return json.dumps([row["side"], row["model"], row["seed"], row["ours_set"], row["reference_set"],
                       row["train"], *variant], sort_keys=True)


def side_label(row: dict) -> str:
    """``ours`` or ``reference``, with ``: <variant>`` when its side ran a variant."""
    variant = row.get(f"{row['side']}_variant")
    return f"{row['side']}: {variant}" if variant else row["side"]


def summarise(rows: list[dict]) -> str:
    """Per model and point: each side's mean ± std over seeds, and each ours-side label minus each
    reference-side label (plain and variants) paired by seed (test; 95 % t interval)."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        point = json.dumps({"model": r["model"], "ours": r["ours_set"], "reference": r["reference_set"],
                            "train": r["train"]}, sort_keys=True)
        groups.setdefault(point, {}).setdefault(side_label(r), []).append(r)
    lines = ["| model | point | side | seeds | valid R@20 | test R@20 | test N@20 | best epoch (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    diffs = ["| model | difference | seeds | ΔR@20 [95 % CI] | ΔN@20 [95 % CI] | first ahead R@20 / N@20 |",
             "|---|---|---|---|---|---|"]
    for point, sides in groups.items():
        p = json.loads(point)
        labels = sorted(sides, key=lambda label: (label.split(":")[0] != "ours", ":" in label, label))
        for side in labels:
            rs = sorted(sides[side], key=lambda r: r["seed"])
            cells = [mean_sd(v) for v in (
                [r["valid"]["recall@20"] for r in rs], [r["test"]["recall@20"] for r in rs],
                [r["test"]["ndcg@20"] for r in rs])]
            lines.append(f"| {p['model']} | ours {json.dumps(p['ours'])}; ref {json.dumps(p['reference'])}; "
                         f"lr {p['train'].get('learning_rate')} | {side} "
                         f"| {len(rs)} | {' | '.join(cells)} | {statistics.mean(r['best_epoch'] for r in rs):.0f} |")
        for ours in (label for label in labels if label.startswith("ours")):
            for side in (label for label in labels if label.startswith("reference")):
                d = paired(sides[ours], sides[side])
                if d is None:
                    continue
                n = len(d["seeds"])
                diffs.append(f"| {p['model']} | {ours} − {side} | {n} | {fmt_interval(d[METRICS[0]]['interval'])} | "
                             f"{fmt_interval(d[METRICS[1]]['interval'])} | "
                             f"{d[METRICS[0]]['ahead']}/{n} / {d[METRICS[1]]['ahead']}/{n} |")
    return "\n".join([*lines, "", *diffs])


def main(argv: list[str] | None = None) -> int:
    from clear_core.trainer import TrainConfig

    protocol = TrainConfig.resolve()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(REFERENCE_CLASSES))
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/tiktok")
    ap.add_argument("--reference-src", type=Path, help="a checkout of MMRec's src/ directory")
    ap.add_argument("--reference-site", type=Path, default=None, help="extra import directory (torch_geometric)")
    ap.add_argument("--ours-set", nargs="*", default=[], metavar="KEY=VALUE", help="our model's keyword arguments")
    ap.add_argument("--reference-set", nargs="*", default=[], metavar="KEY=VALUE", help="MMRec config keys")
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    ap.add_argument("--reference-variant", default=None,
                    help="a named change of the reference side (REFERENCE_VARIANTS), e.g. zero_encoder_biases")
    ap.add_argument("--ours-variant", default=None,
                    help="a named change of our side (OURS_VARIANTS), e.g. audio_as_text")
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 42, 123])
    ap.add_argument("--max-epochs", type=int, default=protocol.max_epochs)
    ap.add_argument("--patience", type=int, default=protocol.patience)
    ap.add_argument("--learning-rate", type=float, default=protocol.learning_rate)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out", type=Path, default=Path("runs/reference_quality.jsonl"))
    ap.add_argument("--summarise", action="store_true", help="only print the table of what --out holds")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.summarise:
        print(summarise([r for r in done_rows(args.out) if r["model"] == args.model]))
        return 0
    if "reference" in args.sides and args.reference_src is None:
        ap.error("--reference-src is needed for the reference side")
    for side in SIDES:
        chosen, known = getattr(args, f"{side}_variant"), VARIANTS[side].get(args.model, {})
        if chosen is not None and chosen not in known:
            ap.error(f"--{side}-variant {chosen!r}: {args.model} has {', '.join(sorted(known)) or 'none'}")
    common = {
        "model": args.model, "data": str(args.data), "threads": args.threads,
        "ours_set": parse_overrides(args.ours_set), "reference_set": parse_overrides(args.reference_set),
        "train": {"max_epochs": args.max_epochs, "patience": args.patience, "learning_rate": args.learning_rate},
        "reference_src": str(args.reference_src.resolve()) if args.reference_src else None,
        "reference_site": str(args.reference_site.resolve()) if args.reference_site else None,
    }
    done = {_key(r) for r in done_rows(args.out)}
    # A side's variant changes that side only: the other runs (and is skipped when done) as without it.
    jobs = [{**common, "side": side, "seed": seed, f"{side}_variant": getattr(args, f"{side}_variant")}
            for seed in args.seeds for side in args.sides]
    jobs = [j for j in jobs if _key(j) not in done]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    failed = 0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        # Each run is written as it finishes; one that fails is reported and does not lose the others.
        futures = {pool.submit(run_one, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                row = future.result()
            except Exception:
                failed += 1
                log.exception("%s %s seed %d failed", job["model"], job["side"], job["seed"])
                continue
            with args.out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
            log.info("%s %s seed %d: valid R@20 %.4f test R@20 %.4f (best epoch %d of %d)", row["model"],
                     row["side"], row["seed"], row["valid"]["recall@20"], row["test"]["recall@20"],
                     row["best_epoch"], row["epochs_run"])
    print(summarise([r for r in done_rows(args.out) if r["model"] == args.model]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
