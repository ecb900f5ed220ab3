"""How many trial checkpoints a sweep leaves on disk (``storage.keep_checkpoints`` while it runs,
``storage.keep_after_sweep`` once it has ended).

Each trial checkpoint holds the trainer's ``last.pt`` and ``best.pt`` (about 16 MB together on
the default data, where the item features are trained). Every trial keeping a few means hundreds
of MB after a 12-trial sweep; once the sweep has ended and its best checkpoint has been copied
and evaluated, only the best trial's are still needed (``clearrec evaluate`` and the logged
model use the copy in the sweep's output folder).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def prune_trial_checkpoints(trials: Sequence[Any], best_trial_id: str, storage: Any, keep: str = "best") -> int:
    """Delete the ``checkpoint_*`` folders of every trial but ``best_trial_id`` when ``keep`` is
    ``best``; returns how many folders were deleted. ``storage`` is the sweep's resolved storage
    (local folder or S3); trial paths are Tune's, on that storage."""
    if keep == "all":
        return 0
    import pyarrow.fs as pafs

    fs = storage.filesystem or pafs.LocalFileSystem()
    deleted = 0
    for trial in trials:
        if trial.trial_id == best_trial_id or not trial.path:
            continue
        selector = pafs.FileSelector(trial.path, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"):
                fs.delete_dir(info.path)
                deleted += 1
    if deleted:
        log.info("deleted %d checkpoint folder(s) of trials other than the best (storage.keep_after_sweep=best)",
                 deleted)
    return deleted
