"""PNG plots of the redundancy diagnostics (matplotlib, headless): the cross-modal spectrum
before/after projection (paper Figure 5) and the neighbour overlap between modalities
(Figure 1). Inputs are the plain dicts of :mod:`clear_core.diagnostics`; files are written
atomically (temporary name, then rename)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

from clear_core.atomic_io import write_atomic

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    try:
        return write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_spectrum(spectrum: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Singular values of C before and after projection, log scale, the k suppressed marked."""
    before = spectrum["before"]["singular_values"]
    after = spectrum["after"]["singular_values"]
    k = spectrum["redundancy_rank"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    idx = range(1, len(before) + 1)
    floor = max(max(before) * 1e-8, 1e-12)
    ax.plot(idx, [max(v, floor) for v in before], "o-", ms=3, label="before projection")
    ax.plot(range(1, len(after) + 1), [max(v, floor) for v in after], "s-", ms=3,
            label=f"after (k={k}, λ={spectrum['projection_strength']:g})")
    ax.axvspan(0.5, k + 0.5, color="grey", alpha=0.15, label="suppressed directions")
    ax.set_yscale("log")
    ax.set_xlabel("singular value index i")
    ax.set_ylabel("σ_i of cross-modal covariance C")
    ax.set_title(title or "Cross-modal covariance spectrum (cf. paper Fig. 5)")
    eb, ea = spectrum["before"]["effective_rank"], spectrum["after"]["effective_rank"]
    ax.text(0.98, 0.98, f"effective rank {eb:.1f} → {ea:.1f}", transform=ax.transAxes,
            ha="right", va="top", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_neighbour_overlap(
    overlaps: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = ""
) -> Path:
    """Per-item overlap of top-K neighbour sets between two modalities, one bar series per
    labelled source (e.g. raw features, encoded, projected), with the random expectation."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    labels: Sequence[str] = list(overlaps)
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        o = overlaps[label]
        hist = o["histogram"]
        total = max(1, sum(hist))
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(hist))]
        left.bar(xs, [h / total for h in hist], width=width, label=label)
    left.set_xlabel("common neighbours among the top-K of both modalities")
    left.set_ylabel("share of items")
    left.legend(fontsize=8)
    means = [overlaps[label]["mean_overlap"] for label in labels]
    right.bar(range(len(labels)), means, color="tab:blue")
    expected = overlaps[labels[0]]["random_expectation"] if labels else 0.0
    right.axhline(expected, color="tab:red", ls="--", label=f"random {expected:.4f}")
    right.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
    right.set_ylabel("mean overlap share")
    right.legend(fontsize=8)
    k = overlaps[labels[0]]["neighbours"] if labels else 0
    fig.suptitle(title or f"Top-{k} neighbour overlap between modalities (cf. paper Fig. 1)")
    return _save(fig, path)
