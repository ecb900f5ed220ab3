"""Optuna's own views of a sweep's study, as PNGs for the parent run: optimisation history,
parallel coordinates, parameter importances and intermediate values (the last shows the
pruned trials' curves, which is where ASHA's decisions are seen)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

PLOTS = ("optimization_history", "parallel_coordinate", "param_importances", "intermediate_values")


def write_study_plots(storage_url: str, study_name: str, out_dir: Path) -> list[Path]:
    """The plots that the study's trials allow (importances need two finished trials, say);
    a plot that cannot be drawn is logged and left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as views

    from clear_core.atomic_io import write_atomic

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                # The matplotlib backend is marked experimental; that is no news to a user.
                warnings.simplefilter("ignore")
                axes = getattr(views, f"plot_{name}")(study)
            ax = axes.flat[0] if hasattr(axes, "flat") else axes
            fig = ax.figure
            fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
            try:
                path = write_atomic(out_dir / f"optuna_{name}.png",
                                    lambda fh, fig=fig: fig.savefig(fh, format="png", dpi=100, bbox_inches="tight"))
            finally:
                plt.close(fig)
            written.append(path)
        except Exception as exc:  # noqa: BLE001 - e.g. too few finished trials for importances
            log.warning("no Optuna %s plot: %s", name.replace("_", " "), str(exc).splitlines()[0] if str(exc) else exc)
    return written
