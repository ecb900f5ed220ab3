"""CPU seconds of a training step and of scoring every user, ours against MMRec's same model.

Each of our models (built as ``bench_baseline_steps.py`` builds it: ``build_model(name, dataset,
{})``, the trainer's Adam, uniform negatives, ``on_epoch_start(1)`` first) is timed back to back
with the MMRec implementation of the same model (https://github.com/enoche/MMRec), interleaved,
in one process, on the same ``(users, positives, negatives)`` batches drawn from our training
split. A step is loss + backward + optimiser step; the reference takes MMRec's trainer's step
(``calculate_loss`` on a ``[3, batch]`` tensor, Adam over ``model.parameters()`` with the config's
weight decay; the learning rate is ``--learning-rate`` on both sides, since a step's work does not
depend on it and some first grid values, e.g. DualGNN's 0.1, drive the loss to NaN). Scoring is every user, in the evaluator's chunks, through our
``prepare_scoring`` / ``score`` / ``finish_scoring`` and MMRec's ``full_sort_predict``.

MMRec's code is not part of this repository: the user supplies a checkout of its ``src/``
directory, e.g. ``git clone https://github.com/enoche/MMRec`` and then ``--reference-src
MMRec/src``. Models importing ``torch_geometric`` (DualGNN, MMGCN) need it importable; pass the
directory it is installed in with ``--reference-site`` to keep it out of this environment
(``pip install --no-deps --target DIR torch_geometric xxhash psutil``). MMRec imports
``torch_scatter`` for a graph normalisation (MGCN) and at module level (SLMRec); when it is not
installed a pure-torch ``scatter_add`` / ``scatter`` stands in (construction only, never timed).

The reference's configuration is MMRec's ``overall.yaml`` + ``model/<Model>.yaml``, with the
first value of every searched hyper-parameter list (what MMRec's grid runs first),
``embedding_size`` 64 as ours, device CPU, plus :data:`REFERENCE_OVERRIDES` where the first grid
value would make the reference do a different amount of work from our default. Its dataset is a
temporary folder holding our image features as MMRec's vision features and our audio features as
its text features (``image_feat.npy`` / ``text_feat.npy``), and for DualGNN the user-user graph
that MMRec's ``preprocessing/dualgnn-gen-u-u-matrix.py`` would write, computed from our training
split as a sparse co-occurrence product with the script's per-row ``torch.topk``. While a reference
model is built, ``.cuda()`` (called unconditionally by LATTICE and MGCN) is a no-op and SciPy's
``dok_matrix._update``, which MMRec's adjacency builders call and SciPy >= 1.12 dropped, is the
plain dict update it was.

    python benchmarks/bench_reference.py ../shared/data/tiktok --reference-src MMRec/src \\
        --reference-site ref_site --models lightgcn freedom bm3
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_baseline_steps import REPO, load_average, training_batches  # noqa: E402

from clear_core.data.loading import load_dataset  # noqa: E402
from clear_core.models import build_model  # noqa: E402
from clear_core.trainer import adam_optimizer  # noqa: E402

log = logging.getLogger("bench_reference")

#: Our model name -> the class name of MMRec's implementation (its module is the name lowered).
REFERENCE_CLASSES = {
    "lightgcn": "LightGCN",
    "vbpr": "VBPR",
    "freedom": "FREEDOM",
    "bm3": "BM3",
    "layergcn": "LayerGCN",
    "lattice": "LATTICE",
    "mgcn": "MGCN",
    "lgmrec": "LGMRec",
    "slmrec": "SLMRec",
    "dualgnn": "DualGNN",
    "mmgcn": "MMGCN",
}

#: Reference config values set to our defaults where MMRec's first grid value (or a missing
#: file) would change how much work a step does; each is a value MMRec's own grid contains.
REFERENCE_OVERRIDES: dict[str, dict[str, Any]] = {
    # MMRec's tree has no configs/model/LightGCN.yaml: layers and reg as our lightgcn.yaml.
    "lightgcn": {"n_layers": 2, "reg_weight": 0.1},
    # MMRec's first dropout is 0.0 (no pruning): ours prunes 10% of the edges each epoch.
    "layergcn": {"dropout": 0.1},
}



def _result_embed_as_tensor(model) -> None:
    """DualGNN's ``nn.Parameter(...).to(device)``: on CUDA a plain tensor, which every forward
    replaces; on CPU ``.to`` returns the Parameter itself, registered, and the forward's
    assignment of a plain tensor raises. Make it what the CUDA build makes."""
    model.result_embed = model._parameters.pop("result_embed").detach()


#: Applied to a reference model right after it is built, to make it run on CPU as it does on CUDA.
REFERENCE_FIXUPS: dict[str, Callable[[Any], None]] = {"dualgnn": _result_embed_as_tensor}

# Users scored at once: the trainer's default eval_batch_size (clear_core/configs/train.yaml).
EVAL_CHUNK = 512
# Keys of MMRec's dataset yaml (configs/dataset/baby.yaml) the models read.
FEATURE_FILES = {"vision_feature_file": "image_feat.npy", "text_feature_file": "text_feat.npy",
                 "user_graph_dict_file": "user_graph_dict.npy"}
# YAML 1.1 floats, as MMRec's configurator reads them ("1e-04" is a float, not a string).
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _YamlLoader(yaml.SafeLoader):
    pass


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class ReferenceConfig(dict):
    """MMRec's ``Config`` as its models see it: item access, ``None`` for a missing key."""

    def __getitem__(self, key: str) -> Any:
        return self.get(key)


class _ReferenceDatasetInfo:
    def __init__(self, n_users: int, n_items: int) -> None:
        self.user_num, self.item_num = n_users, n_items

    def get_user_num(self) -> int:
        return self.user_num

    def get_item_num(self) -> int:
        return self.item_num


class ReferenceTrainData:
    """What MMRec's models read from the ``TrainDataLoader`` they are built with: ``dataset``'s
    user and item counts and ``inter_matrix`` of the training pairs (ones, float64)."""

    def __init__(self, dataset) -> None:
        self.dataset = _ReferenceDatasetInfo(dataset.n_users, dataset.n_items)
        self._pairs = np.asarray(dataset.train)

    def inter_matrix(self, form: str = "coo", value_field=None):
        users, items = self._pairs[:, 0], self._pairs[:, 1]
        shape = (self.dataset.user_num, self.dataset.item_num)
        mat = sp.coo_matrix((np.ones(len(users)), (users, items)), shape=shape)
        if form == "coo":
            return mat
        if form == "csr":
            return mat.tocsr()
        raise NotImplementedError(form)


def reference_config(src: Path, class_name: str, data_dir: Path, dataset_name: str,
                     overrides: dict[str, Any]) -> ReferenceConfig:
    """overall.yaml + model/<class_name>.yaml, each searched list cut to its first value."""
    config: dict[str, Any] = {}
    searched: list[str] = []
    for path in (src / "configs" / "overall.yaml", src / "configs" / "model" / f"{class_name}.yaml"):
        if path.is_file():
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader) or {}
            searched.extend(data.get("hyper_parameters") or [])
            config.update(data)
    for key in searched:
        if isinstance(config.get(key), list):
            config[key] = config[key][0]
    config.update(FEATURE_FILES)
    config.update(model=class_name, dataset=dataset_name, data_path=str(data_dir) + os.sep,
                  device=torch.device("cpu"), use_gpu=False, embedding_size=64)
    config.update(overrides)
    return ReferenceConfig(config)


def _scatter_add(src, index, dim=0, out=None, dim_size=None):
    if dim != 0 or index.dim() != 1:
        raise NotImplementedError("stand-in scatter_add: 1-D index along dim 0 only")
    size = dim_size if dim_size is not None else int(index.max()) + 1
    result = src.new_zeros((size, *src.shape[1:])) if out is None else out
    return result.index_add_(0, index, src)


def _scatter(src, index, dim=0, out=None, dim_size=None, reduce="sum"):
    if reduce not in ("sum", "add"):
        raise NotImplementedError(f"stand-in scatter: reduce={reduce!r}")
    return _scatter_add(src, index, dim, out, dim_size)


def import_reference(src: Path, site: Path | None) -> Callable[[str], type]:
    """Put MMRec's src/ (and ``site``) on the path and return a loader of its model classes."""
    for path in (site, src):
        if path is not None and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    try:
        importlib.import_module("torch_scatter")
    except ImportError:
        shim = types.ModuleType("torch_scatter")
        shim.scatter_add, shim.scatter = _scatter_add, _scatter
        sys.modules["torch_scatter"] = shim
        log.info("torch_scatter not installed: a pure-torch scatter_add stands in")
    common = importlib.import_module("common")
    if not str(Path(common.__file__).resolve()).startswith(str(src.resolve())):
        raise RuntimeError(f"'common' resolves to {common.__file__}, not under {src}")
    # LayerGCN's file imports models.common.*: the same modules as common.*.
    sys.modules.setdefault("models.common", common)
    for sub in ("abstract_recommender", "loss", "init"):
        sys.modules.setdefault(f"models.common.{sub}", importlib.import_module(f"common.{sub}"))

    def load(class_name: str) -> type:
        return getattr(importlib.import_module(f"models.{class_name.lower()}"), class_name)

    return load


@contextlib.contextmanager
def reference_build_compat() -> Iterator[None]:
    """While an MMRec model is built: ``tensor.cuda()`` (called unconditionally by LATTICE and
    MGCN) returns the tensor, and ``dok_matrix._update`` (the bulk insert MMRec's adjacency
    builders call, gone from SciPy >= 1.12) is back as the plain dict update it was."""
    cuda = torch.Tensor.cuda
    had_update = hasattr(sp.dok_matrix, "_update")
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    if not had_update:
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda
        if not had_update:
            del sp.dok_matrix._update


def write_user_graph(dataset, path: Path, max_neighbours: int = 200) -> None:
    """``user_graph_dict.npy`` as MMRec's ``preprocessing/dualgnn-gen-u-u-matrix.py`` writes it
    (user -> [neighbour ids, co-interaction counts], the 200 largest by ``torch.topk``), with the
    pairwise set intersections replaced by the same counts from ``R R^T``."""
    pairs = np.unique(np.asarray(dataset.train), axis=0)
    r = sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])),
                      shape=(dataset.n_users, dataset.n_items))
    counts = (r @ r.T).tolil()
    counts.setdiag(0)
    counts = counts.tocsr()
    counts.eliminate_zeros()
    graph = {}
    for user in range(dataset.n_users):
        row = torch.zeros(dataset.n_users)
        lo, hi = counts.indptr[user], counts.indptr[user + 1]
        row[torch.from_numpy(counts.indices[lo:hi].astype(np.int64))] = torch.from_numpy(
            counts.data[lo:hi].astype(np.float32))
        top = torch.topk(row, min(hi - lo, max_neighbours))
        graph[user] = [top.indices.numpy().tolist(), top.values.numpy().tolist()]
    np.save(path, graph, allow_pickle=True)


def prepare_reference_data(dataset, folder: Path, with_user_graph: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / FEATURE_FILES["vision_feature_file"], dataset.features["image"])
    np.save(folder / FEATURE_FILES["text_feature_file"], dataset.features["audio"])
    if with_user_graph:
        write_user_graph(dataset, folder / FEATURE_FILES["user_graph_dict_file"])


@contextlib.contextmanager
def reference_inputs(name: str, dataset, src: Path, overrides: dict[str, Any] | None = None) -> Iterator[ReferenceConfig]:
    """MMRec's configuration of our model ``name`` on ``dataset`` (:func:`reference_config` with
    :data:`REFERENCE_OVERRIDES`, then ``overrides``) and the files it reads, written to a temporary
    folder (:func:`prepare_reference_data`) that lives while the context is open."""
    with tempfile.TemporaryDirectory(prefix=f"mmrec_{name}_") as tmp:
        folder = Path(tmp)
        prepare_reference_data(dataset, folder / dataset.name, with_user_graph=(name == "dualgnn"))
        yield reference_config(src, REFERENCE_CLASSES[name], folder, dataset.name,
                               {**REFERENCE_OVERRIDES.get(name, {}), **(overrides or {})})


def build_reference(name: str, model_class: type, config: ReferenceConfig, dataset,
                    fixups: Iterable[Callable[[Any], None] | None] = ()) -> torch.nn.Module:
    """MMRec's ``model_class`` built as its trainer builds it (``model_class(config, train_data)``)
    under :func:`reference_build_compat`, then made to run on CPU as on CUDA
    (:data:`REFERENCE_FIXUPS` of our model ``name``) and changed by ``fixups`` (None is skipped)."""
    with reference_build_compat():
        model = model_class(config, ReferenceTrainData(dataset))
    for fixup in (REFERENCE_FIXUPS.get(name), *fixups):
        if fixup is not None:
            fixup(model)
    return model


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - t0


class Side:
    """One implementation under test: how it takes a step, starts an epoch and scores."""

    def __init__(self, model, optimizer, step_loss, epoch_start, score_all) -> None:
        self.model, self.optimizer = model, optimizer
        self._step_loss, self.epoch_start, self._score_all = step_loss, epoch_start, score_all
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.losses: list[float] = []

    def step(self, users, pos, neg) -> tuple[float, float]:
        def run() -> float:
            loss = self._step_loss(users, pos, neg)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return float(loss.detach())

        loss, cpu, wall = _timed(run)
        self.losses.append(loss)
        return cpu, wall

    def score(self, chunks) -> tuple[float, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                _, cpu, wall = _timed(lambda: self._score_all(chunks))
        finally:
            self.model.train(was_training)
        return cpu, wall


def our_side(name: str, dataset, learning_rate: float) -> Side:
    model = build_model(name, dataset, {})
    model.train()

    def score_all(chunks) -> None:
        model.prepare_scoring()
        try:
            for users in chunks:
                model.score(users)
        finally:
            model.finish_scoring()

    return Side(model, adam_optimizer(model, learning_rate), model.loss,
                lambda: model.on_epoch_start(1), score_all)


def reference_side(model: torch.nn.Module, config: ReferenceConfig, learning_rate: float) -> Side:
    model.train()
    weight_decay = config["weight_decay"] or 0.0
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=float(weight_decay))

    def step_loss(users, pos, neg):
        return model.calculate_loss(torch.stack((users, pos, neg)))  # fresh: DualGNN edits it

    def score_all(chunks) -> None:
        for users in chunks:
            model.full_sort_predict([users, None])

    return Side(model, optimizer, step_loss, model.pre_epoch_processing, score_all)


def compare(name: str, dataset, reference_src: Path, load_class: Callable[[str], type],
            steps: int, batch_size: int, seed: int, learning_rate: float) -> dict:
    class_name = REFERENCE_CLASSES[name]
    model_class = load_class(class_name)

    torch.manual_seed(seed)
    ours, ours_build, _ = _timed(lambda: our_side(name, dataset, learning_rate))
    with reference_inputs(name, dataset, reference_src) as config:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        ref, ref_build, _ = _timed(lambda: reference_side(build_reference(name, model_class, config, dataset),
                                                          config, learning_rate))

    batches = training_batches(dataset, steps + 1, batch_size, seed)

    # The epoch's first step, with the epoch-start hook (graph pruning, item-graph rebuild).
    first = {}
    for label, side in (("ours", ours), ("ref", ref)):
        def epoch_first(side: Side = side) -> None:
            side.epoch_start()
            side.step(*batches[0])

        first[label] = _timed(epoch_first)[1:]
    for i, batch in enumerate(batches[1:]):
        order = (ours, ref) if i % 2 == 0 else (ref, ours)
        for side in order:
            cpu, wall = side.step(*batch)
            side.cpu.append(cpu)
            side.wall.append(wall)

    users = torch.arange(dataset.n_users)
    chunks = [users[i:i + EVAL_CHUNK] for i in range(0, dataset.n_users, EVAL_CHUNK)]
    ours_score = ours.score(chunks)
    ref_score = ref.score(chunks)

    n_steps = math.ceil(len(dataset.train) / batch_size)
    result = {"name": name, "reference": class_name, "steps_per_epoch": n_steps,
              "build": (ours_build, ref_build)}
    for label, side, score in (("ours", ours, ours_score), ("ref", ref, ref_score)):
        cpu_step, wall_step = statistics.median(side.cpu), statistics.median(side.wall)
        result[label] = {
            "cpu_step": cpu_step, "wall_step": wall_step,
            "cpu_epoch": first[label][0] + (n_steps - 1) * cpu_step,
            "cpu_score": score[0], "wall_score": score[1],
            "loss_first": side.losses[0], "loss_last": side.losses[-1],
        }
        log.info("%s %s: CPU s/step %s, first step (with epoch start) %.2f, scoring %.2f, loss %.4f -> %.4f",
                 name, label, [round(c, 3) for c in side.cpu], first[label][0], score[0],
                 side.losses[0], side.losses[-1])
    return result


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def table(results: list[dict], failures: dict[str, str]) -> str:
    lines = [
        "| model (MMRec class) | ours CPU s/step | ref CPU s/step | ratio | ours CPU s/epoch (est.) "
        "| ref CPU s/epoch (est.) | ratio | ours scoring CPU s | ref scoring CPU s | ratio "
        "| ours / ref wall s/step | ours / ref wall s scoring |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o, f = r["ours"], r["ref"]
        lines.append(
            f"| {r['name']} ({r['reference']}) | {o['cpu_step']:.3f} | {f['cpu_step']:.3f} "
            f"| {_ratio(o['cpu_step'], f['cpu_step'])} | {o['cpu_epoch']:.1f} | {f['cpu_epoch']:.1f} "
            f"| {_ratio(o['cpu_epoch'], f['cpu_epoch'])} | {o['cpu_score']:.2f} | {f['cpu_score']:.2f} "
            f"| {_ratio(o['cpu_score'], f['cpu_score'])} | {o['wall_step']:.3f} / {f['wall_step']:.3f} "
            f"| {o['wall_score']:.2f} / {f['wall_score']:.2f} |"
        )
    for name, why in failures.items():
        lines.append(f"| {name} | not measured: {why} |||||||||||")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, nargs="?", default=REPO.parent / "shared" / "data" / "tiktok")
    parser.add_argument("--reference-src", type=Path, required=True,
                        help="a checkout of MMRec's src/ directory (git clone https://github.com/enoche/MMRec)")
    parser.add_argument("--reference-site", type=Path, default=None,
                        help="extra import directory for the reference only (torch_geometric)")
    parser.add_argument("--models", nargs="+", default=list(REFERENCE_CLASSES), choices=list(REFERENCE_CLASSES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=999)
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="Adam's, both sides (1e-3 is in every MMRec grid; its first values diverge for some)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    dataset = load_dataset(args.data)
    if not {"image", "audio"} <= set(dataset.features):
        raise SystemExit(f"{dataset.name}: needs image and audio features, has {dataset.modalities}")
    load_class = import_reference(args.reference_src.resolve(),
                                  args.reference_site.resolve() if args.reference_site else None)
    results, failures = [], {}
    for name in args.models:
        try:
            results.append(compare(name, dataset, args.reference_src.resolve(), load_class,
                                   args.steps, args.batch_size, args.seed, args.learning_rate))
        except Exception as exc:  # report the model as not measurable and go on
            log.exception("%s failed", name)
            failures[name] = f"{type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")[:300]
    load = load_average()
    print(f"# {dataset.name}: {dataset.n_users} users, {dataset.n_items} items, {len(dataset.train)} train "
          f"pairs, batch {args.batch_size}, median of {args.steps} steps after one, torch threads "
          f"{torch.get_num_threads()}, scoring in chunks of {EVAL_CHUNK} users, load {load}")
    print(table(results, failures))
    for r in results:
        print(f"# {r['name']}: build CPU s ours {r['build'][0]:.1f}, ref {r['build'][1]:.1f}; "
              f"loss first/last ours {r['ours']['loss_first']:.4f}/{r['ours']['loss_last']:.4f}, "
              f"ref {r['ref']['loss_first']:.4f}/{r['ref']['loss_last']:.4f}")


if __name__ == "__main__":
    main()
