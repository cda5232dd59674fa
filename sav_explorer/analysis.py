"""Analyses over fitted classifiers: honest intervals on accuracies, and how two tasks' heads relate.

    low, high = wilson_interval(54, 60)                     # 95 % interval of 54 right out of 60
    comparison = compare_tasks(colour, shape, k=10)         # shared top-k heads, Jaccard, Spearman

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
from .method import select_heads

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


def compare_tasks(a: SAVClassifier, b: SAVClassifier, k: int) -> TaskComparison:
    """How two tasks fitted on the same model relate: their top-k heads (by each one's ranking scores) and
    the rank correlation of their scores."""
    if a.layout_ != b.layout_:
        raise DataError("the two classifiers were fitted on models with different heads; compare tasks of one model")
    check_k(k, a.layout_.n_heads)
    top_a = {a.heads_[i] for i in select_heads(a.head_scores_, k).tolist()}
    top_b = {b.heads_[i] for i in select_heads(b.head_scores_, k).tolist()}
    shared = len(top_a & top_b)
    return TaskComparison(k, shared, shared / len(top_a | top_b), spearman(a.head_scores_, b.head_scores_))
