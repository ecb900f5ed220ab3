"""Errors raised on bad input. Each names the file, line or field and what was expected."""

from __future__ import annotations


class ClearrecError(Exception):
    """Base class: the CLI turns these into a one-paragraph message and a non-zero exit."""


class DataError(ClearrecError):
    """A dataset file is malformed. ``path`` (and ``line`` when known) say where."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(ClearrecError):
    """One or more configuration fields are invalid; every bad field is listed at once."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))
