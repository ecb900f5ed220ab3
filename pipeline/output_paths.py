"""Output locations, checked before any work starts.

A run that trains for an hour and then cannot write its result (``--out`` names a file, or a
path under a file) loses the hour. Every command checks each place it will write, before it
reads the data, and reports every bad one together in one
:class:`~clear_core.errors.ConfigError` (exit 2).

What is checked: the path itself has the right kind (a file path is not an existing folder, a
folder path is not an existing file), and the nearest existing folder above it is a folder this
process may write into, so the missing folders can be created. Nothing is created here.
"""

from __future__ import annotations

import os
from pathlib import Path

from clear_core.errors import ConfigError


def _creatable_problems(option: str, target: Path, above: Path) -> list[str]:
    """Problems creating ``target`` whose missing folders start at ``above``: the nearest
    existing path there or higher must be a writable folder."""
    above = above.absolute()
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        return [f"{option} {target}: {above} is a file, not a folder, so {target} cannot be created"]
    if not os.access(above, os.W_OK | os.X_OK):
        return [f"{option} {target}: the folder {above} is not writable"]
    return []


def output_file_problems(option: str, path: str | Path | None) -> list[str]:
    """Problems with ``path`` as a file to write (replaced if it is a file already)."""
    if path is None:
        return []
    path = Path(path)
    if path.is_dir():
        return [
            f"{option} {path}: is an existing folder; expected a file name "
            f"(e.g. {path / 'result.json'})"
        ]
    if path.exists():
        return [] if os.access(path.parent, os.W_OK | os.X_OK) else [
            f"{option} {path}: the folder {path.absolute().parent} is not writable"
        ]
    return _creatable_problems(option, path, path.parent)


def output_dir_problems(option: str, path: str | Path | None, *, writes: str | None = None) -> list[str]:
    """Problems with ``path`` as a folder to write into (created if missing).

    ``writes`` names the file the command puts in the folder (``result.json``). ``--out`` of
    ``train`` and ``evaluate`` once named that file itself, so a path ending like it (``.json``)
    that is not a folder already is the old form: refused with the new one, rather than made
    into a folder called ``x.json``.
    """
    if path is None:
        return []
    path = Path(path)
    if path.is_dir():
        return [] if os.access(path, os.W_OK | os.X_OK) else [f"{option} {path}: the folder is not writable"]
    if writes is not None and path.suffix.lower() == Path(writes).suffix.lower():
        folder = path.with_suffix("")
        return [
            f"{option} {path}: {option} now names a folder and {writes} is written inside it "
            f"(e.g. {option} {folder} writes {folder / writes})"
        ]
    if path.exists():
        return [f"{option} {path}: is an existing file; expected a folder"]
    return _creatable_problems(option, path, path)


def check_outputs(*problem_lists: list[str], source: str | None = None) -> None:
    """Raise one ConfigError listing every problem found by the ``*_problems`` functions."""
    problems = [p for found in problem_lists for p in found]
    if problems:
        raise ConfigError(problems, source=source)
