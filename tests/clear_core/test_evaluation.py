"""Full-ranking evaluation: masking rules, users evaluated, batching, and a cross-check against
a slow per-user reference written straight from the MMRec protocol."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from clear_core.data.dataset import Dataset
from clear_core.evaluation import Evaluator, evaluate
from clear_core.models.base import Recommender


class FixedScores(Recommender):
    """A model whose scores are a given matrix (not registered: test-only)."""

    name: ClassVar[str] = "fixed-scores"
    params: ClassVar[dict[str, Any]] = {}

    def __init__(self, dataset: Dataset, scores: np.ndarray) -> None:
        super().__init__(dataset)
        self.register_buffer("table", torch.as_tensor(scores, dtype=torch.float32))
        self.prepared = 0

    def prepare_scoring(self) -> None:
        self.prepared += 1

    def score(self, users):
        return self.table[users]


def make_dataset(n_users, n_items, train, valid, test) -> Dataset:
    arr = lambda rows: np.array(rows, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    return Dataset("toy", n_users, n_items, arr(train), arr(valid), arr(test))


def reference_metrics(scores, dataset, split, topk):
    """Per-user loops, no vectorisation: the protocol read literally."""
    train = {}
    for u, i in dataset.train:
        train.setdefault(int(u), set()).add(int(i))
    relevant = {}
    for u, i in dataset.split(split):
        relevant.setdefault(int(u), set()).add(int(i))
    totals = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "precision", "map") for k in topk}
    for u, rel in relevant.items():
        candidates = [i for i in range(dataset.n_items) if i not in train.get(u, set())]
        ranked = sorted(candidates, key=lambda i: (-scores[u, i], i))
        for k in topk:
            top = ranked[:k]
            hit_ranks = [r + 1 for r, i in enumerate(top) if i in rel]
            totals[f"recall@{k}"] += len(hit_ranks) / len(rel)
            totals[f"precision@{k}"] += len(hit_ranks) / k
            ideal = sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
            totals[f"ndcg@{k}"] += sum(1 / math.log2(r + 1) for r in hit_ranks) / ideal
            ap = sum((n + 1) / r for n, r in enumerate(hit_ranks))
            totals[f"map@{k}"] += ap / min(len(rel), k)
    return {key: v / len(relevant) for key, v in totals.items()}


def test_training_items_are_masked_and_valid_items_are_not_masked_at_test_time():
    # user 0: train item 0 (top score), valid item 1 (second), test item 2 (third)
    ds = make_dataset(1, 5, [(0, 0)], [(0, 1)], [(0, 2)])
    model = FixedScores(ds, np.array([[9.0, 8.0, 7.0, 1.0, 0.0]]))
    m = evaluate(model, ds, topk=[1, 2])
    assert m["valid"]["recall@1"] == 1.0  # train item 0 is not ranked
    assert m["test"]["recall@1"] == 0.0  # valid item 1 still occupies rank 1
    assert m["test"]["recall@2"] == 1.0
    assert m["test"]["ndcg@2"] == pytest.approx(1 / math.log2(3))


def test_every_user_of_a_split_is_evaluated_even_without_hits():
    ds = make_dataset(3, 4, [(0, 0), (1, 0), (2, 0)], [(0, 1), (1, 2)], [(2, 3)])
    scores = np.array([[0, 5, 1, 0], [0, 5, 1, 0], [0, 0, 0, 5]], dtype=np.float32)
    evaluator = Evaluator(ds, topk=[1])
    assert evaluator.n_users == {"valid": 2, "test": 1}
    m = evaluator.evaluate(FixedScores(ds, scores))
    assert m["valid"]["recall@1"] == pytest.approx(0.5)  # user 1 misses, still counted
    assert m["test"]["recall@1"] == 1.0


def test_each_user_is_scored_once_per_round_and_model_mode_is_restored():
    ds = make_dataset(2, 3, [(0, 0), (1, 1)], [(0, 1)], [(1, 2)])
    model = FixedScores(ds, np.zeros((2, 3)))
    model.train()
    evaluate(model, ds, topk=[1])
    assert model.prepared == 1 and model.training


@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_matches_slow_reference_on_random_data_with_ties(batch_size):
    rng = np.random.default_rng(11)
    n_users, n_items = 40, 30
    pairs = np.array([(u, i) for u in range(n_users) for i in rng.choice(n_items, 9, replace=False)])
    labels = rng.choice(3, len(pairs), p=[0.6, 0.2, 0.2])
    train = pairs[labels == 0]
    # valid/test rows of users without training rows would be dropped by the loader
    keep = lambda rows: rows[np.isin(rows[:, 0], train[:, 0])]  # noqa: E731
    ds = make_dataset(n_users, n_items, train, keep(pairs[labels == 1]), keep(pairs[labels == 2]))
    scores = rng.integers(0, 4, (n_users, n_items)).astype(np.float32)  # many ties
    got = evaluate(FixedScores(ds, scores), ds, topk=[1, 5, 10], batch_size=batch_size)
    for split in ("valid", "test"):
        expected = reference_metrics(scores, ds, split, [1, 5, 10])
        assert got[split].keys() == expected.keys()
        for key in expected:
            assert got[split][key] == pytest.approx(expected[key], abs=1e-12), (split, key)


def test_cutoff_larger_than_catalogue_pads_with_misses():
    ds = make_dataset(1, 3, [(0, 0)], [(0, 1)], [(0, 2)])
    m = evaluate(FixedScores(ds, np.array([[0.0, 2.0, 1.0]])), ds, topk=[50])
    assert m["valid"]["recall@50"] == 1.0 and m["valid"]["precision@50"] == pytest.approx(1 / 50)
