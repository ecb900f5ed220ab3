"""Errors raised on bad input. Each names the file, line or field and what was expected."""

from __future__ import annotations


class ClearrecError(Exception):
    """Base class: the CLI turns these into a one-paragraph message and a non-zero exit."""

    #: The CLI's exit status: 2 for bad input (the user can fix the command or the files).
    exit_code = 2


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


class DiskFullError(ClearrecError):
    """No space left where a result or checkpoint was being written. Not bad input, so the CLI
    exits 1; nothing half-written is left behind (the write was atomic)."""

    exit_code = 1

    def __init__(self, path: object) -> None:
        self.path = str(path)
        super().__init__(
            f"no space left on {self.path}: free space (or choose another location) and run the "
            "command again; a checkpointed run resumes from its last complete checkpoint"
        )
