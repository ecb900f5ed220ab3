"""Is a SQLite store file usable? Checked before Ray starts and before any stage runs.

SQLAlchemy's error for a file that is not a database ("file is not a database") names no
file and comes only once a run is being created, after minutes of work. Reading the 16-byte
header says the same at once, naming the file.
"""

from __future__ import annotations

from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot serve as a SQLite database, or None (a missing or empty file is
    fine: SQLite creates the database there)."""
    path = Path(path).absolute()
    if path.is_dir():
        return f"{path} is a folder, not a SQLite database file"
    if not path.exists():
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    if head and head != SQLITE_HEADER:
        return (
            f"{path} is not a SQLite database (it starts with {head[:16]!r}); name another file, "
            "or move this one away"
        )
    return None
