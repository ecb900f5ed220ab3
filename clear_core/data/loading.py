"""Read a dataset folder, MMRec layout or canonical layout, into a validated :class:`Dataset`.

MMRec layout: ``<name>.inter`` (tab-separated, header, columns ``userID itemID x_label`` and
optionally ``rating``/``timestamp``) plus one ``<modality>_feat.npy`` per modality.
Canonical layout: ``interactions.parquet`` + ``*_feat.npy`` + ``manifest.json`` (see
``canonical.py``).

Every problem is a :class:`~clear_core.errors.DataError` naming the file and, where it
applies, the line (1-based, the header is line 1) or column, and what was expected.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from clear_core.data.dataset import SPLITS, Dataset
from clear_core.data.fingerprint import fingerprinted
from clear_core.errors import DataError

log = logging.getLogger(__name__)

USER_COL, ITEM_COL, LABEL_COL = "userID", "itemID", "x_label"
REQUIRED_COLUMNS = (USER_COL, ITEM_COL, LABEL_COL)
OPTIONAL_COLUMNS = ("rating", "timestamp")
FEATURE_SUFFIX = "_feat.npy"
CANONICAL_INTERACTIONS = "interactions.parquet"
# How many offending lines/rows an error message lists before summarising.
MAX_LISTED = 10
INT64_MAX = 2**63 - 1
# Above this row L2 norm, the squared norms and covariances computed from a float32 feature
# overflow float32 (sqrt of its largest value, ~1.8e19): unit scaling, cosine kNN and the
# projection would see inf and zero or NaN the modality.
MAX_ROW_NORM = float(np.sqrt(np.finfo(np.float32).max))


@dataclass(frozen=True)
class InterTable:
    """The columns of a ``.inter`` file as numpy arrays (row ``i`` is file line ``i + 2``)."""

    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    rating: np.ndarray | None = None
    timestamp: np.ndarray | None = None


def _listed(values) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:MAX_LISTED])
    more = f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else ""
    return shown + more


def _int_column(path: Path, table: pa.Table, column: str, header: list[str]) -> np.ndarray:
    """A string column checked to hold non-negative integers only, as int64."""
    stripped = pc.utf8_trim_whitespace(table.column(column))
    ok = pc.match_substring_regex(stripped, r"^\+?[0-9]+$")
    bad = np.flatnonzero(~np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool))
    if len(bad):
        row = int(bad[0])
        value = stripped[row].as_py()
        kind = (
            "empty field (blank line?)" if not value
            else "negative id" if value.startswith("-")
            else "non-integer value"
        )
        raise DataError(
            path,
            f"column {column!r} (column {header.index(column) + 1}): {kind} {value!r}; expected a "
            f"non-negative integer (bad lines: {_listed(int(b) + 2 for b in bad)})",
            line=row + 2,
        )
    try:
        ids = pc.cast(stripped, pa.int64())
    except pa.ArrowInvalid:
        # Digits only, yet not an int64: the value overflows. Find it (error path only).
        big = [i for i, v in enumerate(stripped.to_pylist()) if int(v) > INT64_MAX]
        if not big:
            raise
        raise DataError(
            path,
            f"column {column!r} (column {header.index(column) + 1}): id {stripped[big[0]].as_py()} is "
            f"larger than the largest supported id {INT64_MAX} (2^63 - 1); re-index the ids, e.g. with "
            f"`clearrec data prepare` (bad lines: {_listed(b + 2 for b in big)})",
            line=big[0] + 2,
        ) from None
    return np.asarray(ids.to_numpy(zero_copy_only=False), dtype=np.int64)


def _float_column(path: Path, table: pa.Table, column: str) -> np.ndarray:
    """A string column of finite numbers as float64; ``nan``/``inf`` are refused like ``abc``."""
    col = pc.utf8_trim_whitespace(table.column(column))
    try:
        values = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        vals = col.to_pylist()
        for i, v in enumerate(vals):
            try:
                float(v)
            except (TypeError, ValueError):
                raise DataError(
                    path, f"column {column!r}: {v!r} is not a number", line=i + 2
                ) from None
        raise
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataError(
            path,
            f"column {column!r}: {col[int(bad[0])].as_py()!r} is not a finite number (bad lines: "
            f"{_listed(int(b) + 2 for b in bad)})",
            line=int(bad[0]) + 2,
        )
    return values


def read_header(path: Path) -> list[str]:
    try:
        # utf-8-sig: spreadsheet exports put a byte-order mark before the header (pyarrow's
        # reader skips it too).
        with open(path, encoding="utf-8-sig") as fh:
            first = fh.readline()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except UnicodeDecodeError:
        raise DataError(path, "not a UTF-8 text file; expected a tab-separated .inter file", line=1) from None
    if not first.strip():
        raise DataError(path, "empty file; expected a header line 'userID<TAB>itemID<TAB>x_label'", line=1)
    return [c.strip() for c in first.rstrip("\r\n").split("\t")]


def _first_ragged_line(path: Path, n_fields: int) -> int | None:
    """The first line whose field count differs from the header's (only on the error path)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if line.rstrip("\r\n").count("\t") + 1 != n_fields:
                return number
    return None


def read_inter(path: str | Path) -> InterTable:
    """Read and validate the columns of a ``.inter`` file (not yet the split logic)."""
    path = Path(path)
    header = read_header(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing and len(header) == 1 and ("," in header[0] or " " in header[0]):
        raise DataError(
            path,
            f"the header {header[0]!r} has no tab; expected tab-separated columns "
            f"{list(REQUIRED_COLUMNS)} (optional {list(OPTIONAL_COLUMNS)})",
            line=1,
        )
    if missing:
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, header, n=1, cutoff=0.5)
            close = close or [h for h in header if h.lower() == c.lower()]
            hints.append(f"{c!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise DataError(
            path,
            f"missing column(s) {', '.join(hints)}; the header has {header}; expected tab-separated "
            f"columns {list(REQUIRED_COLUMNS)} (optional {list(OPTIONAL_COLUMNS)})",
            line=1,
        )
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(path, f"column(s) {dupes} appear more than once in the header", line=1)
    wanted = [c for c in header if c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter="\t", ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in wanted},
                include_columns=wanted,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        line = _first_ragged_line(path, len(header))
        raise DataError(
            path,
            f"expected {len(header)} tab-separated fields on every line, as in the header"
            + (f" ({exc})" if line is None else ""),
            line=line,
        ) from None
    user = _int_column(path, table, USER_COL, header)
    item = _int_column(path, table, ITEM_COL, header)
    label = _int_column(path, table, LABEL_COL, header)
    bad = np.flatnonzero(label > 2)
    if len(bad):
        raise DataError(
            path,
            f"column 'x_label': value {int(label[bad[0]])} outside 0/1/2 (0 train, 1 valid, "
            f"2 test); bad lines: {_listed(int(b) + 2 for b in bad)}",
            line=int(bad[0]) + 2,
        )
    rating = _float_column(path, table, "rating") if "rating" in wanted else None
    timestamp = _float_column(path, table, "timestamp") if "timestamp" in wanted else None
    return InterTable(user, item, label, rating, timestamp)


def check_duplicates(path: Path, user: np.ndarray, item: np.ndarray, *, line_offset: int = 2) -> None:
    """Raise if a ``(user, item)`` pair occurs twice; the message gives the line numbers."""
    if len(user) == 0:
        return
    key = user.astype(np.int64) * (int(item.max()) + 1) + item
    order = np.argsort(key, kind="stable")
    sk = key[order]
    same = np.flatnonzero(sk[1:] == sk[:-1])
    if not len(same):
        return
    pairs = []
    for j in same[:MAX_LISTED]:
        a, b = int(order[j]), int(order[j + 1])
        pairs.append(f"({int(user[a])}, {int(item[a])}) at lines {a + line_offset} and {b + line_offset}")
    more = f" and {len(same) - MAX_LISTED} more" if len(same) > MAX_LISTED else ""
    raise DataError(
        path,
        f"{len(same)} duplicate (user, item) row(s): {'; '.join(pairs)}{more}; each pair must "
        "appear once",
        line=int(max(order[same[0]], order[same[0] + 1])) + line_offset,
    )


def check_contiguous(path: Path, ids: np.ndarray, column: str) -> int:
    """``max id + 1``, after checking the ids are (close to) 0-based contiguous.

    A few unused ids are tolerated with a warning (MMRec counts max id + 1); ids far sparser
    than that are raw ids that need re-indexing, and would make every per-user array huge.
    """
    n = int(ids.max()) + 1
    distinct = int(np.unique(ids).size)
    if n > 2 * distinct + 1000:
        raise DataError(
            path,
            f"column {column!r}: {distinct} distinct ids but the largest is {n - 1}; expected "
            "0-based contiguous ids (re-index first, e.g. with `clearrec data prepare`)",
        )
    if distinct < n:
        log.warning("%s: %d of the ids 0..%d in %r never occur", path, n - distinct, n - 1, column)
    return n


def _npy_header_problem(path: Path) -> str | None:
    """What is wrong with a ``.npy`` file's header or length, read without loading it, or None.

    ``np.load`` reports a truncated body as a ValueError, the same type as a pickled array,
    so the header is read here first: the message then says which of the two it is.
    """
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            if fh.read(4) == b"PK\x03\x04":
                return None  # an .npz archive: refused below with its own message
            fh.seek(0)
            version = fmt.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                return None  # a newer format: np.load judges it
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fh)
            offset = fh.tell()
    except (ValueError, EOFError) as exc:
        return f"not a .npy array file or its header is truncated ({exc}); expected a float16/float32 array saved with np.save"
    if dtype.hasobject:
        return ("refusing to load pickled or object data; expected a plain float16/float32 numpy "
                "array saved with np.save")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        return (
            f"truncated: the header says shape {tuple(shape)} {dtype} ({expected - offset:,} data bytes) "
            f"but the file holds {max(size - offset, 0):,}; the file was not fully written or copied"
        )
    return None


def check_feature_values(path: Path, arr: np.ndarray) -> None:
    """Refuse a float32 feature matrix that cannot carry information or breaks the arithmetic.

    Stops on: zero width or zero rows; NaN/Inf; a row so large that float32 statistics of it
    (squared norms, covariances) overflow; every row identical (all zero included): such a
    modality says nothing about any item, yet training would report metrics as if it did.
    Warns on some all-zero rows (often items without content, which the user may intend).
    """
    if arr.shape[1] == 0:
        raise DataError(path, f"shape {arr.shape}: zero feature columns; a modality needs at least one")
    if arr.shape[0] == 0:
        raise DataError(path, f"shape {arr.shape}: zero rows; expected one row per item")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(
            path, f"NaN or Inf in {len(bad)} row(s) (0-based item rows: {_listed(bad.tolist())})"
        )
    # Cheap bound first: max |x| * sqrt(d) bounds every row norm; exact norms only when it fails.
    if float(np.abs(arr).max()) * np.sqrt(arr.shape[1]) > MAX_ROW_NORM:
        norms = np.sqrt(np.einsum("ij,ij->i", arr, arr, dtype=np.float64))
        bad = np.flatnonzero(norms > MAX_ROW_NORM)
        if len(bad):
            raise DataError(
                path,
                f"{len(bad)} row(s) too large for float32 arithmetic (0-based item rows: "
                f"{_listed(bad.tolist())}; largest row L2 norm {norms.max():.3g}, limit "
                f"{MAX_ROW_NORM:.3g}): squared norms and covariances would overflow to inf; "
                "rescale the features",
            )
    if (arr == arr[0]).all():
        what = "all zero" if not arr[0].any() else "the same for every item"
        raise DataError(
            path,
            f"every row is {what}: this modality carries no information about any item; remove "
            "the file to train without it, or fix the features",
        )
    zero_rows = int((~arr.any(axis=1)).sum())
    if zero_rows:
        log.warning(
            "%s: %d of %d items have an all-zero feature row (items without content?); they "
            "get no signal from this modality", path, zero_rows, arr.shape[0],
        )


def load_feature(path: str | Path, n_items: int | None = None) -> np.ndarray:
    """One ``<modality>_feat.npy`` as float32 ``(n_items, d)``, never unpickling anything, and
    checked by :func:`check_feature_values`."""
    path = Path(path)
    try:
        problem = _npy_header_problem(path)
        if problem:
            raise DataError(path, problem)
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as exc:
        raise DataError(
            path,
            f"refusing to load pickled or object data ({exc}); expected a plain float16/float32 "
            "numpy array saved with np.save",
        ) from None
    except (OSError, EOFError) as exc:
        raise DataError(path, f"not a readable .npy file ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(path, "expected a single .npy array, found an archive")
    if arr.dtype.kind not in "fiu":
        raise DataError(path, f"dtype {arr.dtype} is not numeric; expected float16 or float32")
    if arr.ndim != 2:
        raise DataError(path, f"expected a 2-D (n_items, dim) array, got shape {arr.shape}")
    if n_items is not None and arr.shape[0] != n_items:
        raise DataError(
            path,
            f"{arr.shape[0]} feature rows but the dataset has {n_items} items (max itemID + 1); "
            "row i must be item i",
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    check_feature_values(path, arr)
    return arr


def feature_files(folder: Path) -> dict[str, Path]:
    """``{modality: path}`` for every ``<modality>_feat.npy`` in ``folder``, sorted by name."""
    found = {p.name[: -len(FEATURE_SUFFIX)]: p for p in folder.glob(f"*{FEATURE_SUFFIX}")}
    return {m: found[m] for m in sorted(found) if m}


def load_features(folder: Path, n_items: int) -> dict[str, np.ndarray]:
    return {m: load_feature(p, n_items) for m, p in feature_files(folder).items()}


def split_rows(
    path: Path, user: np.ndarray, item: np.ndarray, label: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Rows per split, with valid/test rows of users absent from train dropped and counted."""
    rows = {s: np.stack([user[label == i], item[label == i]], axis=1) for i, s in enumerate(SPLITS)}
    for s in SPLITS:
        if len(rows[s]) == 0:
            raise DataError(
                path, f"the {s} split is empty (no rows with x_label={SPLITS.index(s)})"
            )
    n_users = int(user.max()) + 1
    in_train = np.zeros(n_users, dtype=bool)
    in_train[rows["train"][:, 0]] = True
    dropped = {}
    for s in ("valid", "test"):
        keep = in_train[rows[s][:, 0]]
        dropped[s] = int((~keep).sum())
        rows[s] = rows[s][keep]
        if len(rows[s]) == 0:
            raise DataError(path, f"the {s} split is empty once rows of users with no training row are dropped")
    return rows, dropped


def _find_inter(folder: Path) -> Path:
    inters = sorted(folder.glob("*.inter"))
    if not inters:
        raise DataError(
            folder,
            f"no dataset here: expected '{folder.name}.inter' (+ '<modality>_feat.npy') or "
            f"'{CANONICAL_INTERACTIONS}' + 'manifest.json'",
        )
    if len(inters) > 1:
        named = folder / f"{folder.name}.inter"
        if named in inters:
            return named
        raise DataError(
            folder, f"several .inter files ({', '.join(p.name for p in inters)}); expected one"
        )
    return inters[0]


def load_mmrec(folder: str | Path, *, name: str | None = None) -> Dataset:
    """Read an MMRec dataset folder (``<name>.inter`` + ``*_feat.npy``)."""
    folder = Path(folder)
    inter = folder if folder.is_file() else _find_inter(folder)
    folder = inter.parent
    table = read_inter(inter)
    if len(table.user) == 0:
        raise DataError(inter, "no interaction rows after the header")
    check_duplicates(inter, table.user, table.item)
    n_users = check_contiguous(inter, table.user, USER_COL)
    n_items = check_contiguous(inter, table.item, ITEM_COL)
    rows, dropped = split_rows(inter, table.user, table.item, table.label)
    features = load_features(folder, n_items)
    if any(dropped.values()):
        log.info("%s: dropped valid/test rows of users with no training row: %s", inter, dropped)
    return fingerprinted(name or inter.stem, n_users, n_items, rows, features, dropped)


def permission_denied(path: str | Path) -> DataError:
    """The error for a dataset file or folder this process may not read."""
    return DataError(
        path,
        "permission denied: this user cannot read it; check the permissions of the file and of "
        "the folders above it",
    )


def resolve_dataset_path(path_or_name: str | Path) -> Path:
    """A folder as given, or, for a bare name like ``baby`` that is not a folder here, the
    ``path`` of ``configs/datasets/<name>.yaml`` (relative to the repository root)."""
    path = Path(path_or_name)
    if path.exists() or len(path.parts) != 1:
        return path
    from clear_core.config import config_dir, load_yaml

    cfg_file = config_dir() / "datasets" / f"{path.name}.yaml"
    if not cfg_file.exists():
        return path
    target = load_yaml(cfg_file).get("path")
    if not target:
        raise DataError(
            cfg_file, f"dataset {path.name!r} has no 'path'; generate it (e.g. `clearrec data synth DIR`) and pass DIR"
        )
    target = Path(target)
    return target if target.is_absolute() else (config_dir().parent / target).resolve()


def load_dataset(path: str | Path, *, name: str | None = None) -> Dataset:
    """Load a dataset folder in either layout (canonical if ``interactions.parquet`` is there).

    A bare name (``baby``) that is not a folder here is looked up in ``configs/datasets``.
    A file or folder this process may not read is a DataError naming it, in either layout.
    """
    try:
        path = resolve_dataset_path(path)
        if not path.exists():
            raise DataError(path, "dataset folder not found")
        if path.is_dir():
            # An unlistable folder would look empty to glob ("no dataset here"): say why.
            os.listdir(path)
        if path.is_dir() and (path / CANONICAL_INTERACTIONS).exists():
            from clear_core.data.canonical import read_canonical

            return read_canonical(path, name=name)
        return load_mmrec(path, name=name)
    except PermissionError as exc:
        raise permission_denied(exc.filename or path) from None


def with_fingerprint(dataset: Dataset, features: Mapping[str, np.ndarray] | None = None) -> Dataset:
    """A copy of ``dataset`` (optionally with other features) with its fingerprint recomputed."""
    feats = dict(dataset.features if features is None else features)
    splits = {s: dataset.split(s) for s in SPLITS}
    return fingerprinted(dataset.name, dataset.n_users, dataset.n_items, splits, feats, dataset.dropped)
