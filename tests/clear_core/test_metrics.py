"""Ranking metrics: hand-computed examples from the MMRec protocol's definitions, and tie handling."""

from __future__ import annotations

import math

import pytest
import torch

from clear_core.metrics import deterministic_topk, metric_keys, ranking_metrics


def one_user(hits, n_relevant, topk):
    return ranking_metrics(torch.tensor([hits]), torch.tensor([n_relevant]), topk)


def test_hand_computed_user_with_two_hits_of_three_relevant():
    # ranks 1 and 3 are hits; 3 relevant items in all
    m = one_user([1, 0, 1, 0, 0], 3, [5])
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["precision@5"] == pytest.approx(2 / 5)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@5"] == pytest.approx(dcg / idcg)
    # precision@1 = 1, precision@3 = 2/3, divided by min(|R|, K) = 3
    assert m["map@5"] == pytest.approx((1 + 2 / 3) / 3)


def test_more_relevant_items_than_k_recall_is_not_capped_but_ndcg_and_map_are():
    m = one_user([1, 1, 1, 1, 1], 10, [5])
    assert m["recall@5"] == pytest.approx(0.5)
    assert m["precision@5"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx(1.0)  # ideal DCG over min(10, 5) places
    assert m["map@5"] == pytest.approx(1.0)


def test_single_relevant_item_at_rank_three():
    m = one_user([0, 0, 1, 0, 0], 1, [2, 5])
    assert m["recall@2"] == 0.0 and m["ndcg@2"] == 0.0 and m["map@2"] == 0.0
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(4))
    assert m["map@5"] == pytest.approx(1 / 3)
    assert m["precision@5"] == pytest.approx(1 / 5)


def test_metrics_average_over_users_including_users_without_hits():
    m = ranking_metrics(torch.tensor([[1, 0], [0, 0]]), torch.tensor([1, 1]), [1, 2])
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["precision@2"] == pytest.approx(0.25)


def test_cutoff_longer_than_ranking_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        one_user([1, 0], 1, [5])


def test_metric_keys_cover_every_metric_and_cutoff():
    keys = metric_keys([20, 5])
    assert keys[:2] == ["recall@5", "recall@20"]
    assert set(keys) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 20)}


def test_topk_orders_by_score_then_lower_item_id():
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.0, 2.0]])
    assert deterministic_topk(scores, 2).tolist() == [[1, 2]]
    assert deterministic_topk(scores, 3).tolist() == [[1, 2, 4]]
    assert deterministic_topk(scores, 4).tolist() == [[1, 2, 4, 0]]


def test_topk_with_all_scores_equal_takes_lowest_ids():
    scores = torch.zeros(3, 100)
    assert deterministic_topk(scores, 5).tolist() == [[0, 1, 2, 3, 4]] * 3


def test_topk_ties_across_the_cut_only_in_some_rows():
    scores = torch.tensor([[5.0, 3.0, 3.0, 3.0, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    assert deterministic_topk(scores, 2).tolist() == [[0, 1], [4, 3]]


def test_topk_with_masked_items_and_k_beyond_item_count():
    scores = torch.tensor([[0.5, -torch.inf, 0.7]])
    assert deterministic_topk(scores, 10).tolist() == [[2, 0, 1]]


def test_topk_matches_stable_full_sort_on_random_scores_with_ties():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 6, (64, 40), generator=gen).float()
    expected = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :10]
    assert torch.equal(deterministic_topk(scores, 10), expected)
