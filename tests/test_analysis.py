"""Analyses: Wilson intervals, rank correlation, and comparing two tasks' heads."""

from __future__ import annotations

import pytest
import torch

from sav_explorer import HeadActivations, HeadLayout, LayerBlock, SAVClassifier, evaluate
from sav_explorer.analysis import Z_95, average_ranks, compare_tasks, spearman, wilson_interval
from sav_explorer.errors import DataError


def test_the_wilson_interval_has_its_closed_forms_at_the_edges_and_holds_the_estimate():
    assert wilson_interval(60, 60) == pytest.approx((60 / (60 + Z_95**2), 1.0))  # all right: the lower bound is n / (n + z^2)
    assert wilson_interval(0, 20) == pytest.approx((0.0, Z_95**2 / (20 + Z_95**2)))
    low, high = wilson_interval(54, 60)
    assert low < 0.9 < high and high - low < wilson_interval(9, 10)[1] - wilson_interval(9, 10)[0]  # more queries, narrower
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_evaluation_reports_carry_their_intervals():
    report = evaluate(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert report.interval == wilson_interval(3, 4)
    assert report.per_class_interval() == {"a": wilson_interval(1, 1), "b": wilson_interval(2, 3)}
    assert report.to_json()["accuracy_interval"] == list(wilson_interval(3, 4))


def test_spearman_is_one_minus_six_sum_d_squared_without_ties_and_uses_mean_ranks_for_ties():
    a = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.05])
    b = torch.tensor([0.2, 0.1, 0.5, 0.9, 0.3])
    d = average_ranks(a) - average_ranks(b)
    n = len(a)
    assert spearman(a, b) == pytest.approx(1 - 6 * float((d**2).sum()) / (n * (n * n - 1)))
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert average_ranks(torch.tensor([0.5, 0.5, 0.1])).tolist() == [2.5, 2.5, 1.0]


def fitted(seed: int, good_heads: list[int]) -> SAVClassifier:
    """Two classes over one layer of 6 heads; the listed heads separate them, the others are noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = ["x"] * 5 + ["y"] * 5
    acts = torch.randn(10, 6, 4, generator=generator)
    for head in good_heads:
        acts[:5, head] += 6
        acts[5:, head] -= 6
    return SAVClassifier(k=2).fit(HeadActivations(HeadLayout((LayerBlock(0, 6, 4),)), [acts]), labels)


def test_comparing_two_tasks_counts_shared_top_heads_and_their_jaccard():
    a, b = fitted(0, [0, 1]), fitted(1, [1, 2])
    comparison = compare_tasks(a, b, 2)
    top_a, top_b = set(a.selected_heads), set(b.selected_heads)
    assert (comparison.shared, comparison.jaccard) == (len(top_a & top_b), len(top_a & top_b) / len(top_a | top_b))
    assert comparison.shared == 1 and comparison.jaccard == pytest.approx(1 / 3)
    assert compare_tasks(a, a, 2).spearman == pytest.approx(1.0)
    other = SAVClassifier(k=1).fit(HeadActivations(HeadLayout((LayerBlock(0, 5, 4),)), [torch.randn(4, 5, 4)]), ["x", "x", "y", "y"])
    with pytest.raises(DataError, match="different heads"):
        compare_tasks(a, other, 1)
