"""A seeded synthetic multimodal dataset whose cross-modal redundancy is real and tunable.

Generative story (defaults in ``configs/datasets/synthetic.yaml``):

* Items have a **shared** latent ``z_i`` (rank ``r_shared``) and one **specific** latent
  ``s_i^m`` per modality (rank ``r_specific``), all standard normal.
* Item popularity follows a power law (Zipf exponent ``popularity_exponent``) over a random
  permutation of the items.
* A user's preference is a dot product of a user factor with the item's latents; the share of
  preference variance carried by the shared latent is ``preference_shared``, the rest spread
  over the specific latents, so both the redundant and the modality-specific parts of the
  features carry signal. User ``u`` picks ``n_u`` distinct items (activity log-normal,
  scaled to ``n_interactions`` in total) with probability proportional to
  ``popularity_i * exp(affinity_ui / temperature)`` (Gumbel top-k, vectorised).
* Modality ``m`` of item ``i``: ``sqrt(redundancy) * z_i A_m + sqrt(1 - redundancy) * s_i^m B_m
  + noise * eps`` with random unit-variance maps ``A_m``/``B_m``: ``redundancy`` is the share
  of each modality's signal variance that the modalities share.
* Raw interactions get ratings (from affinity) and timestamps, then go through ``k``-core
  filtering, re-indexing and the ``split`` of ``splitting.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clear_core.config import load_defaults, validate_fields
from clear_core.data.dataset import SPLITS, Dataset
from clear_core.data.fingerprint import fingerprinted
from clear_core.data.k_core import filter_k_core
from clear_core.data.splitting import SPLIT_METHODS, split_labels
from clear_core.errors import ConfigError

log = logging.getLogger(__name__)

SYNTHETIC_SCHEMA: dict[str, Any] = {
    "name": str,
    "n_users": int,
    "n_items": int,
    "n_interactions": int,
    "r_shared": int,
    "r_specific": int,
    "modalities": dict,
    "modality_pair": list,
    "redundancy": float,
    "preference_shared": float,
    "noise": float,
    "popularity_exponent": float,
    "temperature": float,
    "activity_sigma": float,
    "k_core": int,
    "split": str,
    "seed": int,
    "timestamp_start": int,
    "timestamp_span_days": int,
}
# Users are processed in blocks of about this many (user, item) scores, so memory stays
# bounded (a few hundred MB) for large catalogues.
SCORES_PER_BLOCK = 1 << 23


@dataclass(frozen=True)
class RawInteractions:
    """Interactions before k-core and split, in raw ids (``0..n_users-1``, ``0..n_items-1``)."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class SyntheticData:
    """What the generator made.

    ``dataset`` is the filtered, re-indexed, split dataset; ``user_ids[j]``/``item_ids[j]``
    give the raw id of its user/item ``j``. The latents ``item_shared`` (``(n_items_raw,
    r_shared)``) and ``item_specific`` (``{modality: (n_items_raw, r_specific)}``) are indexed
    by RAW item id, like ``raw_interactions``.
    """

    dataset: Dataset
    raw_interactions: RawInteractions
    item_shared: np.ndarray
    item_specific: dict[str, np.ndarray]
    user_ids: np.ndarray
    item_ids: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)


def resolve_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults from ``configs/datasets/synthetic.yaml`` with ``overrides``, checked."""
    merged = {**load_defaults("datasets", "synthetic"), **dict(overrides or {})}
    merged.pop("path", None)
    cfg = validate_fields(merged, SYNTHETIC_SCHEMA, source="synthetic dataset")
    problems = []
    for key in ("n_users", "n_items", "n_interactions", "r_shared", "r_specific", "k_core"):
        if cfg[key] < 1:
            problems.append(f"{key}: expected >= 1, got {cfg[key]}")
    for key in ("redundancy", "preference_shared"):
        if not 0.0 <= cfg[key] <= 1.0:
            problems.append(f"{key}: expected a value in [0, 1], got {cfg[key]}")
    for key in ("noise", "popularity_exponent", "activity_sigma"):
        if cfg[key] < 0:
            problems.append(f"{key}: expected >= 0, got {cfg[key]}")
    if cfg["temperature"] <= 0:
        problems.append(f"temperature: expected > 0, got {cfg['temperature']}")
    if cfg["split"] not in SPLIT_METHODS:
        problems.append(f"split: expected one of {list(SPLIT_METHODS)}, got {cfg['split']!r}")
    mods = cfg["modalities"]
    if not mods or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
        for k, v in mods.items()
    ):
        problems.append(f"modalities: expected a mapping name -> dimension (int >= 1), got {mods!r}")
    pair = cfg["modality_pair"]
    if len(pair) != 2 or len(set(pair)) != 2 or not set(pair) <= set(mods or {}):
        problems.append(
            f"modality_pair: expected two different names from modalities {sorted(mods or {})}, got {pair!r}"
        )
    if cfg["n_interactions"] > cfg["n_users"] * cfg["n_items"] // 2:
        problems.append(
            f"n_interactions: {cfg['n_interactions']} is more than half of n_users x n_items"
        )
    if problems:
        raise ConfigError(problems, source="synthetic dataset")
    return cfg


def _activity(rng: np.random.Generator, cfg: Mapping[str, Any]) -> np.ndarray:
    """Interactions per user: log-normal, scaled to the total, at least ``k_core`` each."""
    n_users, n_items = cfg["n_users"], cfg["n_items"]
    raw = rng.lognormal(0.0, cfg["activity_sigma"], n_users)
    counts = np.maximum(cfg["k_core"], np.round(raw / raw.sum() * cfg["n_interactions"]))
    return np.minimum(counts, n_items // 2).astype(np.int64)


def generate_synthetic(**overrides: Any) -> SyntheticData:
    """Generate a dataset from the defaults with ``overrides`` (any field of the YAML)."""
    cfg = resolve_config(overrides)
    rng = np.random.default_rng(cfg["seed"])
    n_users, n_items = cfg["n_users"], cfg["n_items"]
    r_sh, r_sp = cfg["r_shared"], cfg["r_specific"]
    modalities = {m: cfg["modalities"][m] for m in sorted(cfg["modalities"])}

    item_shared = rng.standard_normal((n_items, r_sh))
    item_specific = {m: rng.standard_normal((n_items, r_sp)) for m in modalities}

    # Preference: unit-variance affinity split between the shared and the specific latents.
    w_sh = np.sqrt(cfg["preference_shared"] / r_sh)
    w_sp = np.sqrt((1.0 - cfg["preference_shared"]) / (r_sp * len(modalities)))
    item_pref = np.concatenate(
        [w_sh * item_shared] + [w_sp * item_specific[m] for m in modalities], axis=1
    )
    user_factors = rng.standard_normal((n_users, item_pref.shape[1]))

    ranks = rng.permutation(n_items) + 1
    log_pop = -cfg["popularity_exponent"] * np.log(ranks)
    counts = _activity(rng, cfg)

    users, items, affinities = [], [], []
    block_users = max(1, SCORES_PER_BLOCK // n_items)
    for start in range(0, n_users, block_users):
        block = slice(start, min(start + block_users, n_users))
        aff = user_factors[block] @ item_pref.T
        keys = log_pop + aff / cfg["temperature"] + rng.gumbel(size=aff.shape)
        c = counts[block]
        # Gumbel top-k: each user's c_u largest keys, found by a partial sort up to max(c).
        kmax = int(c.max())
        top = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax] if kmax < n_items else np.argsort(-keys, axis=1)
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
        take = np.arange(order.shape[1])[None, :] < c[:, None]
        u_idx = np.broadcast_to(np.arange(block.start, block.stop)[:, None], order.shape)[take]
        i_idx = order[take]
        users.append(u_idx)
        items.append(i_idx)
        affinities.append(aff[take.nonzero()[0], i_idx])
    user = np.concatenate(users).astype(np.int64)
    item = np.concatenate(items).astype(np.int64)
    aff = np.concatenate(affinities)
    z = (aff - aff.mean()) / (aff.std() + 1e-12)
    rating = np.clip(np.rint(3.6 + 1.1 * z + 0.6 * rng.standard_normal(len(z))), 1, 5).astype(
        np.float32
    )
    span = cfg["timestamp_span_days"] * 86400
    timestamp = cfg["timestamp_start"] + rng.integers(0, max(1, span), len(user))
    raw = RawInteractions(user, item, rating, timestamp.astype(np.int64))

    # Features from the latents (unit-variance random maps, so `redundancy` is a variance share).
    features_raw = {}
    for m, dim in modalities.items():
        a = rng.standard_normal((r_sh, dim)) / np.sqrt(r_sh)
        b = rng.standard_normal((r_sp, dim)) / np.sqrt(r_sp)
        x = (
            np.sqrt(cfg["redundancy"]) * item_shared @ a
            + np.sqrt(1.0 - cfg["redundancy"]) * item_specific[m] @ b
            + cfg["noise"] * rng.standard_normal((n_items, dim))
        )
        features_raw[m] = x.astype(np.float32)

    mask, kept = filter_k_core(user, item, cfg["k_core"])
    labels = split_labels(kept.user, cfg["split"], cfg["seed"], timestamp[mask])
    rows = {
        s: np.stack([kept.user[labels == i], kept.item[labels == i]], axis=1)
        for i, s in enumerate(SPLITS)
    }
    features = {m: np.ascontiguousarray(f[kept.item_ids]) for m, f in features_raw.items()}
    n_u, n_i = len(kept.user_ids), len(kept.item_ids)
    dataset = fingerprinted(cfg["name"], n_u, n_i, rows, features, dropped={"valid": 0, "test": 0})
    log.info(
        "synthetic: %d raw interactions -> %d after %d-core (%d users, %d items)",
        len(raw), dataset.n_interactions, cfg["k_core"], n_u, n_i,
    )
    return SyntheticData(
        dataset=dataset,
        raw_interactions=raw,
        item_shared=item_shared.astype(np.float32),
        item_specific={m: s.astype(np.float32) for m, s in item_specific.items()},
        user_ids=kept.user_ids,
        item_ids=kept.item_ids,
        config=cfg,
    )


def write_mmrec_into(folder: Path, synthetic: SyntheticData) -> None:
    """Write the MMRec layout (``<name>.inter`` with rating/timestamp + ``*_feat.npy``)."""
    ds = synthetic.dataset
    raw = synthetic.raw_interactions
    mask, _ = filter_k_core(raw.user, raw.item, synthetic.config["k_core"])
    # Ratings/timestamps of kept rows, looked up by (raw user, raw item).
    n_raw_items = int(raw.item.max()) + 1
    key_raw = raw.user[mask] * n_raw_items + raw.item[mask]
    order = np.argsort(key_raw)
    lines = ["userID\titemID\trating\ttimestamp\tx_label"]
    for label, s in enumerate(SPLITS):
        pairs = ds.split(s)
        key = synthetic.user_ids[pairs[:, 0]] * n_raw_items + synthetic.item_ids[pairs[:, 1]]
        pos = order[np.searchsorted(key_raw, key, sorter=order)]
        rating = raw.rating[mask][pos]
        ts = raw.timestamp[mask][pos]
        lines.extend(
            f"{u}\t{i}\t{int(r)}\t{t}\t{label}"
            for u, i, r, t in zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), rating.tolist(), ts.tolist(), strict=True)
        )
    (folder / f"{ds.name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for m, f in ds.features.items():
        np.save(folder / f"{m}_feat.npy", f, allow_pickle=False)


def write_synthetic(out_dir: str | Path, **overrides: Any) -> SyntheticData:
    """Generate and write the MMRec layout to ``out_dir`` atomically (with a ``.complete`` marker)."""
    from clear_core.data.canonical import COMPLETE_MARKER, atomic_output_dir

    synthetic = generate_synthetic(**overrides)
    with atomic_output_dir(out_dir) as tmp:
        write_mmrec_into(tmp, synthetic)
        (tmp / COMPLETE_MARKER).write_text(synthetic.dataset.fingerprint + "\n", encoding="utf-8")
    return synthetic
