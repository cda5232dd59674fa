"""Analyses over fitted classifiers: honest intervals on accuracies, and how two tasks' heads relate.

    low, high = wilson_interval(54, 60)                     # 95 % interval of 54 right out of 60
    comparison = compare_tasks(colour, shape, k=10)         # shared top-k heads, Jaccard, Spearman
    curve = accuracy_curve(clf, activations)                # accuracy against k, without the model

With 20 to 60 queries a few points of accuracy are noise; every accuracy the tools report carries
its Wilson interval, which stays inside [0, 1] and behaves at 0 % and 100 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .checks import check_k
from .classifier import SAVClassifier
from .errors import DataError
from .method import class_means, cosine_to_means, head_margins, head_scores, leave_one_out_cosine, select_heads, vote

Z_95 = 1.959964  # the normal quantile of a two-sided 95 % interval


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks from 1, ties sharing the mean of the ranks they span (as Spearman's correlation wants)."""
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    for value in torch.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two score vectors (0 when either is constant)."""
    ra, rb = average_ranks(a.double()), average_ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 0.0


@dataclass(frozen=True)
class TaskComparison:
    k: int
    shared: int  # heads in both tasks' top k
    jaccard: float  # shared / heads in either top k
    spearman: float  # rank correlation of the two tasks' head scores, over every head

    def to_json(self) -> dict:
        return {"k": self.k, "shared": self.shared, "jaccard": self.jaccard, "spearman": self.spearman}


def top_heads(clf: SAVClassifier, k: int) -> list[tuple[int, int]]:
    """The k best (layer, head) by the classifier's own ranking: what `compare_tasks` compares."""
    check_k(k, clf.layout_.n_heads)
    return [clf.heads_[i] for i in clf.ranking()[:k].tolist()]


def compare_tasks(a: SAVClassifier, b: SAVClassifier, k: int) -> TaskComparison:
    """How two tasks fitted on the same model relate: their top-k heads (by each one's ranking scores) and
    the rank correlation of their scores."""
    if a.layout_ != b.layout_:
        raise DataError("the two classifiers were fitted on models with different heads; compare tasks of one model")
    check_k(k, a.layout_.n_heads)
    top_a, top_b = set(top_heads(a, k)), set(top_heads(b, k))
    shared = len(top_a & top_b)
    return TaskComparison(k, shared, shared / len(top_a | top_b), spearman(a.head_scores_, b.head_scores_))


@dataclass(frozen=True)
class AccuracyCurve:
    """Accuracy against k, for k = 1 .. number of heads."""

    k: list[int]
    loo: list[float]  # support set, each example left out of its class mean; heads chosen on all (optimistic)
    nested_loo: list[float] | None  # heads re-chosen without the left-out example too (needs the activations)
    test: list[float] | None  # a held-out test set, captured once and re-scored for each k
    n_support: int = 0  # examples behind `loo` and `nested_loo`
    n_test: int = 0
    nested_skipped: str = ""  # why `nested_loo` is None, in words

    def intervals(self, name: str) -> list[tuple[float, float]] | None:
        """The 95 % Wilson interval of each accuracy of one series ("loo", "nested_loo" or "test")."""
        values, n = getattr(self, name), self.n_test if name == "test" else self.n_support
        return None if values is None else [wilson_interval(round(v * n), n) for v in values]

    def best_k(self) -> tuple[int, str]:
        """The k of the highest accuracy by the most honest series there is, and that series in words:
        the test set, else the nested estimate, else leave-one-out (optimistic)."""
        name, values = next(
            (name, values)
            for name, values in (("test set", self.test), ("nested estimate", self.nested_loo), ("optimistic estimate", self.loo))
            if values
        )
        return self.k[max(range(len(self.k)), key=lambda i: values[i])], name

    def to_json(self) -> dict:
        series = ("loo", "nested_loo", "test")
        intervals = {f"{name}_interval": (None if (i := self.intervals(name)) is None else [list(x) for x in i]) for name in series}
        return {"k": self.k, "loo": self.loo, "nested_loo": self.nested_loo, "test": self.test, **intervals}


def class_indices(clf: SAVClassifier, labels) -> torch.Tensor:
    """Test labels as indices into the classifier's classes; -1 for a class it does not know (never right)."""
    return torch.tensor([clf.classes_.index(label) if label in clf.classes_ else -1 for label in labels])


NESTED_LOO_MAX_EXAMPLES = 200  # one refit per example: beyond this the curve waits too long


def accuracy_curve(
    clf: SAVClassifier, activations=None, test_similarities: torch.Tensor | None = None, test_labels: torch.Tensor | None = None
) -> AccuracyCurve:
    """Accuracy for every k from cached similarities: no model call. `activations` (the support set's,
    every layer) adds the nested estimate, where n <= NESTED_LOO_MAX_EXAMPLES; `test_similarities` (n, heads, classes) with
    `test_labels` (class indices) adds held-out accuracy."""
    n_heads = clf.layout_.n_heads
    ks = list(range(1, n_heads + 1))
    order = clf.ranking()  # ranking once; the top k are its first k
    labels = clf.support_labels_

    def accuracy(sims: torch.Tensor, truth: torch.Tensor, ranking: torch.Tensor, k: int) -> float:
        predicted, _ = vote(sims, ranking[:k], clf.tie_break)
        return float((predicted == truth).float().mean())

    loo = [accuracy(clf.loo_similarities_, labels, order, k) for k in ks]
    test = None
    if test_similarities is not None:
        test = [accuracy(test_similarities, test_labels, order, k) for k in ks]
    nested, skipped = None, ""
    if activations is None:
        skipped = "nested leave-one-out needs the support set's activations, which a restored classifier does not keep"
    elif activations.n_examples > NESTED_LOO_MAX_EXAMPLES:
        skipped = (
            f"nested leave-one-out refits once per example: skipped for {activations.n_examples} examples "
            f"(at most {NESTED_LOO_MAX_EXAMPLES})"
        )
    else:
        nested = _nested_loo(clf, activations, ks)
    return AccuracyCurve(ks, loo, nested, test, len(labels), 0 if test_labels is None else len(test_labels), skipped)


def _nested_loo(clf: SAVClassifier, activations, ks: list[int]) -> list[float]:
    """Each example left out of the class means *and* of the head scoring; the rest refitted with the
    classifier's own settings (its scoring ranks the heads), and the heads re-chosen for each. A class
    left with no example has no mean: it can be nobody's nearest class, as in the leave-one-out."""
    labels = clf.support_labels_
    n, n_classes = len(labels), len(clf.classes_)
    right = torch.zeros(len(ks))
    for i in range(n):
        keep = torch.arange(n) != i
        kept = labels[keep]
        absent = torch.bincount(kept, minlength=n_classes) == 0  # (classes,)
        sims = torch.cat(
            [cosine_to_means(block, class_means(block[keep], kept, n_classes)) for block in activations.blocks], 1
        ).masked_fill(absent, float("-inf"))  # (n, heads, classes): every example against the means without example i
        if clf.scoring == "loo":
            inner = torch.cat([leave_one_out_cosine(block[keep], kept, n_classes) for block in activations.blocks], 1)
            inner = inner.masked_fill(absent, float("-inf"))
        else:
            inner = sims[keep]
        ranking = select_heads(head_scores(inner, kept), inner.shape[1], clf.head_order, head_margins(inner, kept))
        for j, k in enumerate(ks):
            predicted, _ = vote(sims[i : i + 1], ranking[:k], clf.tie_break)
            right[j] += float(predicted[0] == labels[i])
    return (right / n).tolist()
