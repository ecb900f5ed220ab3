"""Helpers for the data-layer tests: tiny MMRec folders written on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    return Path(os.environ.get("CLEARREC_SHARED", REPO.parent / "shared")) / "data"


def require_shared(name: str) -> Path:
    folder = shared_data_dir() / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} not present (set CLEARREC_SHARED to the shared folder)")
    return folder


def write_inter(folder: Path, rows, *, header="userID\titemID\tx_label", name=None) -> Path:
    """Write ``rows`` (tuples or raw strings) under ``header``; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or folder.name}.inter"
    lines = [header] + ["\t".join(map(str, r)) if not isinstance(r, str) else r for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def small_rows(n_users: int = 6, n_items: int = 8, per_user: int = 5):
    """User ``u`` gets items ``u, u+1, ... (mod n_items)``: 3 train, 1 valid, 1 test each."""
    rows = []
    for u in range(n_users):
        labels = [0] * (per_user - 2) + [1, 2]
        rows.extend((u, (u + j) % n_items, lab) for j, lab in enumerate(labels))
    return rows


@pytest.fixture
def mmrec_folder(tmp_path: Path) -> Path:
    """A valid 6-user, 8-item folder with float16 image and float32 text features."""
    folder = tmp_path / "toy"
    write_inter(folder, small_rows())
    rng = np.random.default_rng(1)
    np.save(folder / "text_feat.npy", rng.standard_normal((8, 4)).astype(np.float32))
    np.save(folder / "image_feat.npy", rng.standard_normal((8, 6)).astype(np.float16))
    return folder


@pytest.fixture
def inter_file():
    """``inter_file(folder, rows, header=..., name=...)`` writes a ``.inter`` file."""
    return write_inter


@pytest.fixture
def toy_rows():
    return small_rows


@pytest.fixture
def shared_folder():
    """``shared_folder("baby")``: the real dataset folder, or skip with the reason."""
    return require_shared
