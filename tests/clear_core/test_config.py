"""Where the YAML defaults are found: the configs shipped with the package, which in a checkout
are the repository's configs/ itself (one source), unless CLEARREC_CONFIG_DIR names another."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

import clear_core
from clear_core.config import CONFIG_DIR_ENV, config_dir

REPO = Path(__file__).resolve().parents[2]


def test_without_the_variable_the_package_configs_are_the_repository_folder(monkeypatch):
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    assert config_dir() == (REPO / "configs").resolve()
    # Relative dataset paths in configs/datasets/*.yaml are read against this parent.
    assert config_dir().parent == REPO.resolve()
    assert (Path(clear_core.__file__).parent / "configs").resolve() == (REPO / "configs").resolve()


def test_the_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    assert config_dir() == tmp_path


def test_every_config_file_is_declared_package_data():
    """A YAML file the package-data patterns miss would be absent from an installed wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["clear_core"]
    files = [f"configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*")
             if p.is_file()]
    assert files
    missed = [f for f in files if not any(fnmatch.fnmatchcase(f, pat) and f.count("/") == pat.count("/")
                                          for pat in patterns)]
    assert missed == []
