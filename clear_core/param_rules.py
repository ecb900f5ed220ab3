"""The one home of the range rules of model and analysis parameters.

Types are checked by :func:`clear_core.config.validate_fields`; this module says which VALUES a
parameter may take, once, so that every entry point (``clearrec train``, ``analyze``, the sweep
config, a model built in code) refuses the same values with the same words, as one
:class:`~clear_core.errors.ConfigError` (exit 2 from the CLI). Rules that need the data
(k no larger than a dimension, knn_k no larger than the item count) are functions here too.

Paper symbols: ``redundancy_rank`` is k, ``projection_strength`` is lambda, ``refresh_every`` is tau.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clear_core.errors import ConfigError


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class Rule:
    """``expected`` completes "expected ..."; ``ok`` says whether a value satisfies it."""

    expected: str
    ok: Callable[[Any], bool]


def at_least(low: int) -> Rule:
    return Rule(f"an integer >= {low}", lambda x: _integer(x) and x >= low)


def number_in(low: float, high: float, *, closed_low: bool = True, closed_high: bool = True) -> Rule:
    text = f"a number in {'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
    return Rule(text, lambda x: _number(x) and (x >= low if closed_low else x > low)
                and (x <= high if closed_high else x < high))


NON_NEGATIVE = Rule("a finite number >= 0", lambda x: _number(x) and x >= 0)

#: How MRdIB estimates the overlap of two modalities (clear_core/mrdib.py, which reads it from here).
MRDIB_REDUNDANCY_ESTIMATORS = ("mine", "correlation")

RULES: dict[str, Rule] = {
    "embedding_size": at_least(1),
    "encoder_layers": Rule("1 or 2", lambda x: _integer(x) and x in (1, 2)),
    "n_layers": at_least(0),
    "item_graph_layers": at_least(0),
    "knn_k": at_least(1),
    "knn_chunk_size": at_least(1),
    "edge_dropout": number_in(0.0, 1.0, closed_high=False),
    "reg_weight": NON_NEGATIVE,
    "redundancy_rank": at_least(1),
    "projection_strength": number_in(0.0, 1.0),
    "refresh_every": at_least(1),
    "energy_ratio": number_in(0.0, 1.0, closed_low=False),
    # MRdIB's weights: alpha_1 (KL), alpha_3 (unique), alpha_2 (redundancy), alpha_s (clear_core/mrdib.py).
    "mrdib_kl_weight": NON_NEGATIVE,
    "mrdib_unique_weight": NON_NEGATIVE,
    "mrdib_redundancy_weight": NON_NEGATIVE,
    "mrdib_redundancy_estimator": Rule(" or ".join(map(repr, MRDIB_REDUNDANCY_ESTIMATORS)),
                                       lambda x: x in MRDIB_REDUNDANCY_ESTIMATORS),
    "mrdib_synergy_weight": NON_NEGATIVE,
    "neighbours": at_least(1),
    "chunk_size": at_least(1),
    # issue-19 baselines (models-a)
    "user_graph_k": at_least(1),
    "latent_size": at_least(1),
    "original_graph_weight": number_in(0.0, 1.0),
    "temperature": Rule("a finite number > 0", lambda x: _number(x) and x > 0),
    "ssl_temperature": Rule("a finite number > 0", lambda x: _number(x) and x > 0),
    "ssl_weight": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
}

#: How a parameter is named in messages: with its paper symbol where it has one.
LABELS = {
    "redundancy_rank": "redundancy_rank (k)",
    "projection_strength": "projection_strength (lambda)",
    "refresh_every": "refresh_every (tau)",
}


def label(name: str) -> str:
    return LABELS.get(name, name)


def value_problem(name: str, value: Any) -> str | None:
    """The problem with ``value`` for parameter ``name``, or None (also for names without a rule)."""
    rule = RULES.get(name)
    if rule is None or rule.ok(value):
        return None
    return f"{label(name)}: expected {rule.expected}, got {value!r}"


def range_problems(values: Mapping[str, Any], *, prefix: str = "") -> list[str]:
    """Every ruled parameter of ``values`` that breaks its rule (``prefix`` goes before its name)."""
    return [prefix + p for name, value in values.items() if (p := value_problem(name, value))]


def check_ranges(values: Mapping[str, Any], *, source: str) -> None:
    """Raise one ConfigError listing :func:`range_problems` of ``values``, if any."""
    problems = range_problems(values)
    if problems:
        raise ConfigError(problems, source=source)


def rank_problem(k: Any, limit: int, limit_name: str, detail: str = "") -> str | None:
    """k must fit the dimension it is taken from: ``1 <= k <= limit`` (``limit_name`` says
    which dimension, ``detail`` where it comes from)."""
    if _integer(k) and 1 <= k <= limit:
        return None
    where = f"{limit_name} = {limit}" + (f", {detail}" if detail else "")
    return f"{label('redundancy_rank')}: expected an integer in 1..{limit} ({where}), got {k!r}"


def knn_problem(k: Any, n_items: int, dataset: str) -> str | None:
    """A kNN item graph takes at most every item (the item itself included) as a neighbour."""
    if _integer(k) and k > n_items:
        return (
            f"knn_k: expected <= {n_items}, the number of items of dataset {dataset!r} (the "
            f"neighbours include the item itself), got {k}"
        )
    return None
