"""Does the model need the heads SAV picked? Its own answers with them ablated, against random heads.

    report = ablation_study(loaded, queries, classes, clf.selected_heads, mode="mean", support=support)
    report.baseline.accuracy, report.ablated.accuracy, report.random_accuracy

A drop when the selected heads are ablated says little alone: ablating any heads of those layers
might hurt as much. So the same number of random heads from the same layers are ablated too, in
a few draws, and the accuracies are set side by side, each with its 95 % interval.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .answers import ZeroShotReport, report_of, zero_shot
from .data import Example
from .errors import DataError
from .heads import Head
from .interventions import ablated_heads, check_heads, random_heads, support_means
from .models import LoadedModel


@dataclass
class AblationReport:
    """The model's own answers with nothing ablated, with the heads ablated, and with random heads ablated."""

    heads: list[Head]
    mode: str
    baseline: ZeroShotReport
    ablated: ZeroShotReport
    random: list[ZeroShotReport]  # one per draw of random heads
    random_heads: list[list[Head]]

    @property
    def random_accuracies(self) -> list[float]:
        return [report.accuracy for report in self.random]

    @property
    def random_accuracy(self) -> float | None:
        return sum(self.random_accuracies) / len(self.random) if self.random else None

    @property
    def random_spread(self) -> float | None:
        """The standard deviation of the random draws' accuracies."""
        if len(self.random) < 2:
            return None
        mean = self.random_accuracy
        return (sum((a - mean) ** 2 for a in self.random_accuracies) / (len(self.random) - 1)) ** 0.5

    def to_json(self) -> dict:
        return {
            "n": self.baseline.n,
            "heads": [list(h) for h in self.heads],
            "mode": self.mode,
            "method": self.baseline.method,
            "baseline_accuracy": self.baseline.accuracy,
            "baseline_interval": list(self.baseline.interval),
            "ablated_accuracy": self.ablated.accuracy,
            "ablated_interval": list(self.ablated.interval),
            "random_accuracy": self.random_accuracy,
            "random_accuracies": self.random_accuracies,
            "random_spread": self.random_spread,
            "random_heads": [[list(h) for h in heads] for heads in self.random_heads],
        }


def ablation_study(
    loaded: LoadedModel,
    queries: Sequence[Example],
    classes: Sequence[str],
    heads: Sequence[Head],
    *,
    mode: str = "mean",
    support: Sequence[Example] | None = None,
    n_random: int = 5,
    seed: int = 0,
    method: str = "generate",
    question: str | None = None,
    batch_size: int = 8,
    on_run: Callable[[str], None] | None = None,
    max_image_tokens: int | None = None,
) -> AblationReport:
    """Does the model need these heads? Its accuracy on the queries without them, beside the same
    number of random heads from the same layers (`n_random` draws; none when those layers have too
    few other heads). Mean ablation averages over `support` (the heads and the random heads in one pass).
    `on_run(what)` is told before each run over the queries."""
    heads, draws = ablation_plan(loaded.layout, heads, n_random, seed, mode, support)
    means = None
    if mode == "mean":
        means = support_means(loaded, support, every_head(heads, draws), question=question, max_image_tokens=max_image_tokens)

    def answers(ablate: Sequence[Head], what: str) -> ZeroShotReport:
        if on_run is not None:
            on_run(what)
        with ablated_heads(loaded, ablate, mode=mode, means=means):
            return zero_shot(
                loaded, queries, classes, method=method, question=question, batch_size=batch_size, max_image_tokens=max_image_tokens
            )

    baseline, ablated = answers([], "nothing ablated"), answers(heads, "the heads ablated")
    controls = [answers(d, f"random heads ablated, draw {i + 1} of {len(draws)}") for i, d in enumerate(draws)]
    return AblationReport(heads, mode, baseline, ablated, controls, draws)


def ablation_plan(layout, heads: Sequence[Head], n_random: int, seed: int, mode: str, support) -> tuple[list[Head], list[list[Head]]]:
    """The heads to ablate, checked, and the random draws beside them (none when their layers have
    too few other heads), the same wherever the answers are read."""
    heads = list(dict.fromkeys(heads))
    if not heads:
        raise DataError("choose at least one head to ablate")
    check_heads(layout, heads)
    if mode == "mean" and not support:
        raise DataError("mean ablation needs the support set (--support) to average the heads over")
    rng = random.Random(seed)
    try:
        return heads, [random_heads(layout, heads, rng) for _ in range(n_random)]
    except DataError:
        return heads, []  # too few other heads in those layers to draw a control


def every_head(heads: Sequence[Head], draws: Sequence[Sequence[Head]]) -> list[Head]:
    """The heads whose means one support pass must average: the chosen ones and every draw's."""
    return list(dict.fromkeys([*heads, *(h for d in draws for h in d)]))


class AblationTask:
    """In a Ray actor: the answers to a batch of queries under every condition (nothing, the heads, each
    draw ablated); the means come from the support set, run once per actor."""

    def __init__(self, classes, conditions, mode, support_rows, question, method, max_image_tokens):
        self.classes, self.conditions, self.mode, self.support_rows = list(classes), conditions, mode, support_rows
        self.question, self.method, self.max_image_tokens = question, method, max_image_tokens

    def setup(self, loaded: LoadedModel) -> None:
        from .distributed import as_batch, examples_from_rows

        self.means = None
        if self.mode == "mean":
            chosen = every_head(self.conditions[1], self.conditions[2:])  # as a local run averages them
            with tempfile.TemporaryDirectory() as folder:
                support = examples_from_rows(as_batch(self.support_rows), Path(folder))
                self.means = support_means(loaded, support, chosen, question=self.question, max_image_tokens=self.max_image_tokens)

    def __call__(self, loaded: LoadedModel, queries: list[Example]) -> dict:
        runs = []
        for condition in self.conditions:
            with ablated_heads(loaded, condition, mode=self.mode, means=self.means):
                runs.append(
                    zero_shot(
                        loaded, queries, self.classes, method=self.method, batch_size=len(queries), max_image_tokens=self.max_image_tokens
                    )
                )
        per_row = [json.dumps([[run.answers[i], run.predicted[i]] for run in runs]) for i in range(len(queries))]
        return {"answers": np.asarray(per_row, dtype=object)}

    def empty(self, n: int) -> dict:
        return {"answers": np.asarray([""] * n, dtype=object)}


def ablation_on_ray(
    options,
    spec,
    layout,
    queries: Sequence[Example],
    classes,
    heads,
    *,
    mode="mean",
    support=None,
    n_random=5,
    seed=0,
    method="generate",
    question=None,
    batch_size=8,
    max_image_tokens=None,
) -> tuple[AblationReport, dict, set[int]]:
    """`ablation_study` with the answers read in Ray actors (`distributed`); `layout` is the model's
    (a saved classifier's), so that the draws equal a local run's. Returns the report, the model's
    description (`distributed.run_on_ray`) and the worker pids."""
    from .distributed import example_row, run_on_ray

    heads, draws = ablation_plan(layout, heads, n_random, seed, mode, support)
    if any(q.label is None for q in queries):
        raise DataError("every query needs a label to score the model's own answers")
    support_rows = [example_row(i, e, question) for i, e in enumerate(support or [])] if mode == "mean" else []
    conditions = [[], heads, *draws]
    task = AblationTask(classes, conditions, mode, support_rows, question, method, max_image_tokens)
    rows = [example_row(i, q, question) for i, q in enumerate(queries)]
    out, description, pids = run_on_ray(options, spec, task, rows, batch_size)
    per_row = [json.loads(row["answers"]) for row in out]
    reports = [report_of(method, queries, [r[c][0] for r in per_row], [r[c][1] for r in per_row]) for c in range(len(conditions))]
    return AblationReport(heads, mode, reports[0], reports[1], reports[2:], draws), description, pids
