"""Analyses: Wilson intervals, rank correlation, and comparing two tasks' heads."""

from __future__ import annotations

import pytest
import torch

from sav_explorer import HeadActivations, HeadLayout, LayerBlock, SAVClassifier, evaluate
from sav_explorer.analysis import Z_95, accuracy_curve, average_ranks, compare_tasks, spearman, wilson_interval
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


def noisy_task(seed: int = 3, lonely: bool = False):
    """Three classes over two layers; heads of graded quality, so that accuracy moves with k.
    `lonely` adds a fourth class "w" of one example."""
    generator = torch.Generator().manual_seed(seed)
    labels = [c for c in ("x", "y", "z") for _ in range(4)] + (["w"] if lonely else [])
    index = torch.tensor([("x", "y", "z", "w").index(c) for c in labels])
    centres = torch.randn(4, 8, 4, generator=generator)
    noise = torch.linspace(0.2, 3.0, 8).view(1, 8, 1)
    acts = centres[index] + noise * torch.randn(len(labels), 8, 4, generator=generator)
    layout = HeadLayout((LayerBlock(0, 4, 4), LayerBlock(1, 4, 4)))
    return HeadActivations(layout, list(acts.split(4, dim=1))), labels, centres, noise


@pytest.mark.parametrize(("scoring", "lonely"), [("in-sample", False), ("loo", False), ("in-sample", True)])
def test_the_curve_equals_refitting_for_every_k_loo_nested_and_test(scoring, lonely):
    """The nested estimate refits without each example with the classifier's own settings: its scoring
    ranks the heads, and a class left with no example has no mean (it cannot be predicted)."""
    acts, labels, centres, noise = noisy_task(lonely=lonely)
    n = len(labels)
    clf = SAVClassifier(k=3, scoring=scoring).fit(acts, labels)
    generator = torch.Generator().manual_seed(9)
    test_index = torch.tensor([0, 1, 2] * 3 + ([3] if lonely else []))
    test_blocks = list((centres[test_index] + noise * torch.randn(len(test_index), 8, 4, generator=generator)).split(4, dim=1))
    test_acts = HeadActivations(acts.layout, test_blocks)
    truth = [("x", "y", "z", "w")[i] for i in test_index.tolist()]
    curve = accuracy_curve(clf, acts, clf.similarities(test_acts), torch.tensor([clf.classes_.index(t) for t in truth]))
    assert curve.k == list(range(1, 9))
    for k, loo, nested, test in zip(curve.k, curve.loo, curve.nested_loo, curve.test):
        clf.select(k=k)
        assert loo == pytest.approx(clf.leave_one_out_accuracy())
        assert test == pytest.approx(sum(p == t for p, t in zip(clf.predict(test_acts), truth)) / len(truth))
        right = 0
        for i in range(n):  # the nested estimate, brute force: refit without example i, choose k heads, classify it
            keep = [j for j in range(n) if j != i]
            others = HeadActivations(acts.layout, [b[keep] for b in acts.blocks])
            alone = HeadActivations(acts.layout, [b[i : i + 1] for b in acts.blocks])
            refit = SAVClassifier(k=k, scoring=scoring).fit(others, [labels[j] for j in keep])
            right += refit.predict(alone)[0] == labels[i]
        assert nested == pytest.approx(right / n)
    assert len(set(curve.loo)) > 1  # accuracy does move with k here


def test_a_class_left_with_no_example_cannot_win_the_nested_estimate():
    """Leaving out the only example of "c" leaves "c" no mean; a zero mean (cosine 0) would beat the
    other classes' negative cosines and count the example right."""
    acts = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [-1.0, -1.0]]).view(5, 1, 2)
    activations = HeadActivations(HeadLayout((LayerBlock(0, 1, 2),)), [acts])
    clf = SAVClassifier(k=1).fit(activations, ["a", "a", "b", "b", "c"])
    curve = accuracy_curve(clf, activations)
    assert curve.loo == pytest.approx([0.8]) and curve.nested_loo == pytest.approx([0.8])
