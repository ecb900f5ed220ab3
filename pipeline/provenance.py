"""Which code produced a result: the git commit of the checkout.

Its own module, free of Ray and MLflow imports, so that commands which only record
provenance (``clearrec repro --update --no-track``, on a GPU machine without Ray) can use it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(repo: str | Path | None = None) -> str:
    """The checkout's commit (``+dirty`` when tracked files differ), or ``unknown`` outside git."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--"], cwd=cwd, capture_output=True, timeout=10
        ).returncode
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty == 1 else "")
