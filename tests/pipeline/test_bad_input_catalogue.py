"""The catalogue of bad inputs (issue 22): one row per case, run through the real `clearrec` entry
point. A row says what the user gives, the exit status expected, and the words the message must
hold. Together the rows specify how clearrec meets bad input: a clear message naming the file,
line or field and what was expected, exit 2 for the user's errors (1 for a full disk), no
traceback, nothing half-written, and no work started before an error that could be seen first.

Most rows run in this process (``pipeline.cli.main``). Three kinds need another process:
* unreadable files and folders: root reads anything while it holds CAP_DAC_OVERRIDE, so as root
  the command runs with that capability dropped from its bounding set (``setpriv``); where
  that does not really deny a read, the rows skip and say why;
* a full disk: a 64 KiB tmpfs mounted in a private user + mount namespace (``unshare -rm``) and
  filled; where no tmpfs can be mounted, ENOSPC is raised at the write call instead (the
  ``simulated`` rows) and the skip reason of the real rows says so.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clear_core.data.synthetic import write_synthetic
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    """``build(ctx)`` writes the inputs under ``ctx.tmp`` and returns the clearrec arguments."""

    id: str
    build: Callable[[Ctx], list[str]]
    exit: int
    words: tuple[str, ...] = ()
    #: words expected on stdout (e.g. the summary printed before a result file is written)
    out_words: tuple[str, ...] = ()
    #: "module.attr" callables that must not be reached: the error comes before that work
    not_reached: tuple[str, ...] = ()
    #: paths (relative to ctx.tmp) that must not exist afterwards: nothing half-written
    absent: tuple[str, ...] = ()
    #: "in-process", "no-dac" (unreadable files) or "tmpfs" (full disk)
    runner: str = "in-process"


@dataclass
class Ctx:
    tmp: Path
    base: Path  # a valid MMRec folder (read-only: copy it before changing anything)
    other: Path  # another valid dataset (a different fingerprint)

    def copy(self, name: str = "data") -> Path:
        dest = self.tmp / name
        shutil.copytree(self.base, dest)
        return dest


# --- building blocks ---------------------------------------------------------------------------

HEADER = "userID\titemID\tx_label"
TRAIN_WORK = ("pipeline.commands.train.load_dataset", "pipeline.commands.train.fit")
SWEEP_WORK = ("pipeline.ray_runtime.init_ray", "pipeline.stages.dataset_stages")


def inter_rows(n_users: int = 6, n_items: int = 8) -> list[str]:
    """User u: items u..u+4 (mod n_items), labelled 0 0 0 1 2."""
    rows = []
    for u in range(n_users):
        for j, lab in enumerate((0, 0, 0, 1, 2)):
            rows.append(f"{u}\t{(u + j) % n_items}\t{lab}")
    return rows


def mmrec(ctx: Ctx, rows: list[str] | None = None, *, header: str = HEADER, text: str | None = None,
          features: dict[str, np.ndarray] | None = None, name: str = "toy") -> Path:
    """A small MMRec folder; ``text`` replaces the whole .inter file when given."""
    folder = ctx.tmp / name
    folder.mkdir()
    body = text if text is not None else "\n".join([header, *(rows if rows is not None else inter_rows())]) + "\n"
    (folder / f"{name}.inter").write_text(body, encoding="utf-8")
    rng = np.random.default_rng(0)
    feats = features if features is not None else {"text": rng.standard_normal((8, 4)).astype(np.float32)}
    for modality, arr in feats.items():
        np.save(folder / f"{modality}_feat.npy", arr, allow_pickle=arr.dtype.hasobject)
    return folder


def stats(folder: Path) -> list[str]:
    return ["data", "stats", str(folder)]


def with_feature(arr: np.ndarray) -> Callable[[Ctx], list[str]]:
    return lambda ctx: stats(mmrec(ctx, features={"text": arr}))


def with_row(row: str, index: int = 3, header: str = HEADER) -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        rows = inter_rows()
        rows[index] = row
        return stats(mmrec(ctx, rows, header=header))
    return build


def with_ratings(value: str) -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        rows = [f"{r}\t4.0" for r in inter_rows()]
        rows[2] = rows[2].rsplit("\t", 1)[0] + f"\t{value}"
        return stats(mmrec(ctx, rows, header=HEADER + "\trating"))
    return build


def train(ctx: Ctx, *extra: str, model: str = "mf", data: Path | None = None) -> list[str]:
    return ["train", str(data or ctx.base), "--model", model, "--max-epochs", "1", "--device", "cpu",
            "--no-progress", *extra]


def knn_k_on_150_items(ctx: Ctx) -> list[str]:
    rng = np.random.default_rng(0)
    feats = {m: rng.standard_normal((150, d)).astype(np.float32) for m, d in (("image", 6), ("text", 4))}
    folder = mmrec(ctx, inter_rows(150, 150), features=feats)
    return train(ctx, "--set", "knn_k=100000", model="freedom", data=folder)


def feature_with_huge_row(ctx: Ctx) -> list[str]:
    feat = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    feat[5] = 3e38  # finite in float32; its squared norm is not
    return stats(mmrec(ctx, features={"text": feat}))


def truncated_npy(cut: Callable[[bytes], bytes]) -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        folder = mmrec(ctx)
        path = folder / "text_feat.npy"
        path.write_bytes(cut(path.read_bytes()))
        return stats(folder)
    return build


def out_is_an_existing_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "results").write_text("a file")
    return train(ctx, "--out", str(ctx.tmp / "results"))


def out_is_an_old_style_json_file(ctx: Ctx) -> list[str]:
    return train(ctx, "--out", str(ctx.tmp / "r.json"))


def out_under_a_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "notes").write_text("a file")
    return train(ctx, "--out", str(ctx.tmp / "notes" / "run"))


def checkpoint_dir_is_a_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "ckpt").write_text("a file")
    return train(ctx, "--checkpoint-dir", str(ctx.tmp / "ckpt"))


def analyze_out_is_a_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "an").write_text("a file")
    return ["analyze", str(ctx.base), "--out", str(ctx.tmp / "an")]


def analyze_checkpoint_of_another_dataset(ctx: Ctx) -> list[str]:
    ckpt = ctx.tmp / "ckpt"
    assert main(train(ctx, "--checkpoint-dir", str(ckpt), "--set", "embedding_size=8", model="vbpr",
                      data=ctx.other)) == 0
    return ["analyze", str(ctx.base), "--checkpoint", str(ckpt), "--out", str(ctx.tmp / "an")]


def evaluate_out_is_an_existing_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "metrics").write_text("a file")
    return ["evaluate", str(ctx.tmp / "best.pt"), "--dataset", str(ctx.base), "--model", "mf", "--no-track",
            "--out", str(ctx.tmp / "metrics")]


def evaluate_out_is_an_old_style_json_file(ctx: Ctx) -> list[str]:
    return ["evaluate", str(ctx.tmp / "best.pt"), "--dataset", str(ctx.base), "--model", "mf", "--no-track",
            "--out", str(ctx.tmp / "eval.json")]


def extract_out_is_a_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "meta.json").write_text(json.dumps({"asin": "B1", "title": "a toy"}) + "\n")
    (ctx.tmp / "features").write_text("a file")
    return ["extract", str(ctx.tmp / "meta.json"), "--out", str(ctx.tmp / "features"), "--no-progress"]


def sweep(ctx: Ctx, *extra: str) -> list[str]:
    return ["sweep", "--dataset", str(ctx.base), "--model", "mf", "--in-process", "--no-progress",
            "--tracking-uri", f"sqlite:///{ctx.tmp / 'mlruns.db'}", *extra]


def sweep_runs_dir_is_a_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "runs").write_text("a file")
    return sweep(ctx, "--runs-dir", str(ctx.tmp / "runs"))


def sweep_store_not_a_database(ctx: Ctx) -> list[str]:
    args = sweep(ctx, "--runs-dir", str(ctx.tmp / "runs"))
    (ctx.tmp / "mlruns.db").write_text("these are my notes, not a database\n")
    return args


def reviews_line_of_brackets(ctx: Ctx) -> list[str]:
    reviews = ctx.tmp / "reviews.json"
    good = json.dumps({"reviewerID": "U1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1})
    reviews.write_text(good + "\n" + "[" * 100_000 + "\n")
    return ["data", "prepare", str(reviews), str(ctx.tmp / "prepared")]


# Unreadable inputs (run with DAC override dropped; see the module docstring).
def unreadable_inter(ctx: Ctx) -> list[str]:
    folder = ctx.copy()
    (folder / "synthetic.inter").chmod(0)
    return stats(folder)


def unreadable_folder(ctx: Ctx) -> list[str]:
    folder = ctx.copy("locked")
    folder.chmod(0)
    return stats(folder)


def unreadable_parquet(ctx: Ctx) -> list[str]:
    canonical = ctx.tmp / "canonical"
    assert main(["data", "canonical", str(ctx.base), str(canonical)]) == 0
    (canonical / "interactions.parquet").chmod(0)
    return stats(canonical)


# A full disk (run on a filled tmpfs; see the module docstring). "{full}" is the tmpfs.
def checkpoint_on_full_disk(ctx: Ctx) -> list[str]:
    return train(ctx, "--checkpoint-dir", "{full}/ckpt")


def out_on_full_disk(ctx: Ctx) -> list[str]:
    return train(ctx, "--out", "{full}")


CASES = [
    # --- good already: keep ---------------------------------------------------------------------
    Case("empty-inter-file", lambda ctx: stats(mmrec(ctx, text="")), 2, ("toy.inter:1", "empty file")),
    Case("header-only-inter-file", lambda ctx: stats(mmrec(ctx, text=HEADER + "\n")), 2,
         ("toy.inter", "no interaction rows after the header")),
    Case("missing-column", lambda ctx: stats(mmrec(ctx, ["0\t1"], header="userID\titemID")), 2,
         ("toy.inter:1", "missing column(s) 'x_label'")),
    Case("non-integer-id", with_row("0\tabc\t0"), 2, ("toy.inter:5", "'itemID'", "non-integer value 'abc'")),
    Case("negative-id", with_row("-1\t3\t0"), 2, ("toy.inter:5", "negative id '-1'")),
    Case("label-outside-0-1-2", with_row("0\t3\t7"), 2, ("toy.inter:5", "value 7 outside 0/1/2")),
    Case("duplicate-across-splits", with_row("0\t0\t1"), 2, ("toy.inter", "duplicate (user, item)", "(0, 0) at lines 2 and 5")),
    Case("nan-feature", with_feature(np.where(np.eye(8, 4) > 0, np.nan, 1.0).astype(np.float32)), 2,
         ("text_feat.npy", "NaN or Inf in 4 row(s)")),
    Case("feature-row-count-mismatch", with_feature(np.ones((7, 4), np.float32)), 2,
         ("text_feat.npy", "7 feature rows but the dataset has 8 items")),
    Case("pickled-npy", with_feature(np.empty((8, 4), dtype=object)), 2,
         ("text_feat.npy", "refusing to load pickled or object data")),
    Case("truncated-npy-header", truncated_npy(lambda b: b[:30]), 2, ("text_feat.npy", "header is truncated")),
    Case("set-unknown-key-and-wrong-type", lambda ctx: train(ctx, "--set", "n_layer=2", "--set", "reg_weight=lots"), 2,
         ("n_layer: unknown key", "reg_weight: expected float, got str 'lots'"), not_reached=TRAIN_WORK),
    Case("set-without-equals", lambda ctx: train(ctx, "--set", "reg_weight"), 2,
         ("--set 'reg_weight': expected key=value",), not_reached=TRAIN_WORK),
    Case("rating-abc", with_ratings("abc"), 2, ("toy.inter:4", "'rating': 'abc' is not a number")),

    # --- results lost after the work was done: checked before any work now --------------------
    Case("train-out-is-an-existing-file", out_is_an_existing_file, 2,
         ("--out", "results: is an existing file; expected a folder"), not_reached=TRAIN_WORK),
    Case("train-out-is-an-old-style-json-file", out_is_an_old_style_json_file, 2,
         ("--out", "r.json: --out now names a folder and result.json is written inside it", "r/result.json"),
         not_reached=TRAIN_WORK, absent=("r.json", "r")),
    Case("train-out-under-an-existing-file", out_under_a_file, 2,
         ("--out", "notes is a file, not a folder"), not_reached=TRAIN_WORK, absent=("notes/run",)),
    Case("train-checkpoint-dir-is-a-file", checkpoint_dir_is_a_file, 2,
         ("--checkpoint-dir", "ckpt: is an existing file; expected a folder"), not_reached=TRAIN_WORK),
    Case("analyze-out-is-a-file", analyze_out_is_a_file, 2,
         ("--out", "an: is an existing file; expected a folder"),
         not_reached=("clear_core.data.loading.load_dataset",)),
    Case("evaluate-out-is-an-existing-file", evaluate_out_is_an_existing_file, 2,
         ("--out", "metrics: is an existing file; expected a folder"),
         not_reached=("pipeline.checkpoint_evaluation.evaluate_checkpoint",)),
    Case("evaluate-out-is-an-old-style-json-file", evaluate_out_is_an_old_style_json_file, 2,
         ("--out", "eval.json: --out now names a folder and metrics.json is written inside it", "eval/metrics.json"),
         not_reached=("pipeline.checkpoint_evaluation.evaluate_checkpoint",), absent=("eval.json", "eval")),
    Case("extract-out-is-a-file", extract_out_is_a_file, 2,
         ("--out", "features: is an existing file; expected a folder"),
         not_reached=("clear_core.extraction.extract_features",)),
    Case("sweep-runs-dir-is-a-file", sweep_runs_dir_is_a_file, 2,
         ("--runs-dir", "runs: is an existing file; expected a folder"),
         not_reached=("pipeline.run.run_pipeline",)),

    # --- data that would silently erase a modality: stopped, saying what was found ---------------
    Case("feature-of-zero-width", with_feature(np.zeros((8, 0), np.float32)), 2,
         ("text_feat.npy", "zero feature columns")),
    Case("feature-row-overflowing-float32-statistics", feature_with_huge_row, 2,
         ("text_feat.npy", "too large for float32 arithmetic", "item rows: 5")),
    Case("all-zero-modality", with_feature(np.zeros((8, 4), np.float32)), 2,
         ("text_feat.npy", "every row is all zero", "carries no information")),
    Case("constant-modality", with_feature(np.full((8, 4), 0.25, np.float32)), 2,
         ("text_feat.npy", "every row is the same for every item")),

    # --- vague or uncaught errors, now clear ------------------------------------------------------
    Case("truncated-npy-body", truncated_npy(lambda b: b[:-10]), 2,
         ("text_feat.npy", "truncated: the header says shape (8, 4) float32 (128 data bytes) but the file holds 118")),
    Case("id-above-2-to-the-63", with_row("18446744073709551616\t3\t0"), 2,
         ("toy.inter:5", "id 18446744073709551616 is larger than the largest supported id")),
    Case("mf-embedding-size-0", lambda ctx: train(ctx, "--set", "embedding_size=0"), 2,
         ("embedding_size: expected an integer >= 1, got 0",), not_reached=TRAIN_WORK),
    Case("lightgcn-embedding-size-0", lambda ctx: train(ctx, "--set", "embedding_size=0", model="lightgcn"), 2,
         ("embedding_size: expected an integer >= 1, got 0",), not_reached=TRAIN_WORK),
    Case("clear-refresh-every-0-same-words", lambda ctx: train(ctx, "--set", "refresh_every=0", model="clear"), 2,
         ("refresh_every (tau): expected an integer >= 1, got 0",), not_reached=TRAIN_WORK),
    Case("analyze-redundancy-rank-0-same-words", lambda ctx: ["analyze", str(ctx.base), "--set", "redundancy_rank=0",
                                                             "--out", str(ctx.tmp / "an")], 2,
         ("redundancy_rank (k): expected an integer >= 1, got 0",), absent=("an",)),
    Case("train-redundancy-rank-0-same-words", lambda ctx: train(ctx, "--set", "redundancy_rank=0", model="clear"), 2,
         ("redundancy_rank (k): expected an integer >= 1, got 0",), not_reached=TRAIN_WORK),
    Case("knn-k-above-the-item-count", knn_k_on_150_items, 2,
         ("knn_k: expected <= 150, the number of items", "got 100000")),
    Case("set-reg-weight-1e-4-is-a-number", lambda ctx: train(ctx, "--set", "reg_weight=1e-4", "--set", "learning_rate=1E-3",
                                                              "--out", str(ctx.tmp / "r")), 0,
         out_words=('"best_epoch": 1',)),
    Case("set-reg-weight-nan", lambda ctx: train(ctx, "--set", "reg_weight=.nan"), 2,
         ("reg_weight: expected a finite number >= 0, got nan",), not_reached=TRAIN_WORK),
    Case("rating-nan", with_ratings("nan"), 2, ("toy.inter:4", "'rating': 'nan' is not a finite number")),
    Case("utf8-bom-before-the-header", lambda ctx: stats(mmrec(ctx, text="\ufeff" + HEADER + "\n" + "\n".join(inter_rows()) + "\n")),
         0, out_words=("users         6", "items         8")),
    Case("sweep-mlflow-store-not-a-database", sweep_store_not_a_database, 2,
         ("mlruns.db is not a SQLite database",), not_reached=SWEEP_WORK, absent=("runs",)),
    Case("prepare-line-of-100000-brackets", reviews_line_of_brackets, 2,
         ("reviews.json:2", "nested too deeply to parse"), absent=("prepared",)),
    Case("analyze-checkpoint-of-another-dataset", analyze_checkpoint_of_another_dataset, 2,
         ("checkpoint", "trained on another dataset"), absent=("an",)),
    Case("unreadable-inter-file", unreadable_inter, 2, ("synthetic.inter", "permission denied"), runner="no-dac"),
    Case("unreadable-dataset-folder", unreadable_folder, 2, ("locked: permission denied",), runner="no-dac"),
    Case("unreadable-parquet-file", unreadable_parquet, 2, ("interactions.parquet", "permission denied"),
         runner="no-dac"),
    Case("disk-full-writing-a-checkpoint", checkpoint_on_full_disk, 1, ("no space left on", "/full/ckpt/", ".pt:"),
         runner="tmpfs"),
    Case("disk-full-writing-out", out_on_full_disk, 1, ("no space left on", "result.json"),
         out_words=('"best_epoch": 1', '"test"'), runner="tmpfs"),
]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("catalogue")
    base, other = root / "synthetic", root / "other"
    write_synthetic(base, n_users=80, n_items=150, n_interactions=1500, seed=3,
                    modalities={"image": 12, "text": 8})
    write_synthetic(other, n_users=70, n_items=150, n_interactions=1400, seed=4,
                    modalities={"image": 12, "text": 8})
    return base, other


def _tripwire(target: str):
    def tripped(*args, **kwargs):
        raise AssertionError(f"{target} was reached: the error should have come before this work")
    return tripped


def _check(case: Case, code: int, out: str, err: str, ctx: Ctx) -> None:
    assert code == case.exit, f"exit {code}, expected {case.exit}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    for words in case.words:
        assert words in err, f"{words!r} not in stderr:\n{err}"
    for words in case.out_words:
        assert words in out, f"{words!r} not in stdout:\n{out}"
    for rel in case.absent:
        assert not (ctx.tmp / rel).exists(), f"{rel} was written"


@pytest.mark.parametrize("case", [c for c in CASES if c.runner == "in-process"], ids=lambda c: c.id)
def test_catalogue(case: Case, datasets, tmp_path, monkeypatch, capsys):
    ctx = Ctx(tmp_path, *datasets)
    monkeypatch.chdir(tmp_path)
    argv = case.build(ctx)
    capsys.readouterr()
    for target in case.not_reached:
        module, attr = target.rsplit(".", 1)
        monkeypatch.setattr(f"{module}.{attr}", _tripwire(target))
    code = main(argv)
    captured = capsys.readouterr()
    _check(case, code, captured.out, captured.err, ctx)


# --- rows run in another process ------------------------------------------------------------------

def _clearrec(prefix: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([*prefix, sys.executable, "-m", "pipeline", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _without_dac_override() -> tuple[list[str] | None, str]:
    """A command prefix under which a mode-000 file really cannot be read, or None and why."""
    if os.geteuid() != 0:
        return [], ""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None, "running as root with DAC override and no setpriv to drop it"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"], ""


@pytest.fixture(scope="module")
def no_dac(tmp_path_factory) -> list[str]:
    prefix, why = _without_dac_override()
    if prefix is None:
        pytest.skip(why)
    probe = tmp_path_factory.mktemp("probe") / "secret"
    probe.write_text("x")
    probe.chmod(0)
    denied = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe)!r}).read()"],
                            capture_output=True).returncode != 0
    if not denied:
        pytest.skip("this process reads mode-000 files even with DAC override dropped (no way to deny here)")
    return prefix


@pytest.mark.parametrize("case", [c for c in CASES if c.runner == "no-dac"], ids=lambda c: c.id)
def test_catalogue_unreadable(case: Case, datasets, tmp_path, no_dac):
    ctx = Ctx(tmp_path, *datasets)
    tmp_path.chmod(0o755)
    argv = case.build(ctx)
    try:
        result = _clearrec(no_dac, argv, tmp_path)
    finally:
        for path in tmp_path.rglob("*"):  # let pytest clean up
            path.chmod(0o755)
    _check(case, result.returncode, result.stdout, result.stderr, ctx)


def _tmpfs_prefix(mount: Path) -> list[str] | None:
    """``unshare -rm sh -c 'mount a 64 KiB tmpfs on MOUNT, fill it, exec "$@"'``, if that works here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    script = (f'mount -t tmpfs -o size=64k tmpfs "{mount}" && '
              f'(head -c 1048576 /dev/zero > "{mount}/filler" 2>/dev/null; true) && exec "$@"')
    prefix = [unshare, "-rm", "sh", "-c", script, "sh"]
    probe = subprocess.run([*prefix, "sh", "-c", f'! touch "{mount}/x" 2>/dev/null || ! head -c 4096 /dev/zero > "{mount}/y"'],
                           capture_output=True)
    return prefix if probe.returncode == 0 else None


@pytest.mark.parametrize("case", [c for c in CASES if c.runner == "tmpfs"], ids=lambda c: c.id)
def test_catalogue_disk_full(case: Case, datasets, tmp_path):
    ctx = Ctx(tmp_path, *datasets)
    full = tmp_path / "full"
    full.mkdir()
    prefix = _tmpfs_prefix(full)
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here (unshare -rm); test_catalogue_disk_full_simulated raises ENOSPC at the write call instead")
    argv = [a.replace("{full}", str(full)) for a in case.build(ctx)]
    result = _clearrec(prefix, argv, tmp_path)
    _check(case, result.returncode, result.stdout, result.stderr, ctx)
    assert result.stderr.count("no space left on") == 1, result.stderr


class _FullDisk:
    """A file handle whose writes fail as on a full disk (ENOSPC), as the OS would."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


@pytest.mark.parametrize("case", [c for c in CASES if c.runner == "tmpfs"], ids=lambda c: c.id)
def test_catalogue_disk_full_simulated(case: Case, datasets, tmp_path, monkeypatch, capsys):
    """The same rows with ENOSPC raised at the write call (runs everywhere, also without a tmpfs)."""
    import clear_core.atomic_io as atomic_io

    ctx = Ctx(tmp_path, *datasets)
    full = tmp_path / "full"
    argv = [a.replace("{full}", str(full)) for a in case.build(ctx)]
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        return _FullDisk(handle) if str(full) in os.readlink(f"/proc/self/fd/{fd}") else handle

    monkeypatch.setattr(atomic_io.os, "fdopen", fdopen)
    code = main(argv)
    captured = capsys.readouterr()
    _check(case, code, captured.out, captured.err, ctx)
    assert captured.err.count("no space left on") == 1
    assert not any(p.name.endswith(".tmp") for p in full.rglob("*")), "a temporary file was left behind"
