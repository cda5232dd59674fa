"""Does the model need the heads SAV picked? Its own answers with them ablated, against random heads.

    report = ablation_study(loaded, queries, classes, clf.selected_heads, clf.encoding, mode="mean", support=support)
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
from .encoding import Encoding, RunOptions
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
    encoding: Encoding | None = None,
    run: RunOptions | None = None,
    *,
    mode: str = "mean",
    support: Sequence[Example] | None = None,
    n_random: int = 5,
    seed: int = 0,
    method: str = "generate",
    on_run: Callable[[str], None] | None = None,
) -> AblationReport:
    """Does the model need these heads? Its accuracy on the queries without them, beside the same
    number of random heads from the same layers (`n_random` draws; none when those layers have too
    few other heads). Mean ablation averages over `support` (the heads and the random heads in one
    pass); the support set and the queries are read as `encoding` says (the classifier's).
    `on_run(what)` is told before each run over the queries."""
    encoding = encoding or Encoding()
    plan = ablation_plan(loaded.layout, heads, n_random, seed, mode, support)
    means = support_means(loaded, support, plan.every_head(), encoding) if mode == "mean" else None

    def answers(condition: AblationCondition) -> ZeroShotReport:
        if on_run is not None:
            on_run(condition.description)
        with ablated_heads(loaded, condition.heads, mode=mode, means=means):
            return zero_shot(loaded, queries, classes, encoding, run, method=method)

    reports = [answers(condition) for condition in plan.conditions()]
    return AblationReport(plan.heads, mode, reports[0], reports[1], reports[2:], plan.draws)


@dataclass(frozen=True)
class AblationCondition:
    """One run over the queries: these heads ablated (none for the baseline)."""

    heads: tuple[Head, ...]
    description: str


@dataclass(frozen=True)
class AblationPlan:
    """The heads to ablate and the random draws beside them, the same wherever the answers are read."""

    heads: list[Head]
    draws: list[list[Head]]

    def conditions(self) -> list[AblationCondition]:
        """The runs in order: nothing ablated, the heads, then each draw."""
        return [
            AblationCondition((), "nothing ablated"),
            AblationCondition(tuple(self.heads), "the heads ablated"),
            *(AblationCondition(tuple(d), f"random heads ablated, draw {i + 1} of {len(self.draws)}") for i, d in enumerate(self.draws)),
        ]

    def every_head(self) -> list[Head]:
        """The heads whose means one support pass must average: the chosen ones and every draw's."""
        return list(dict.fromkeys([*self.heads, *(h for d in self.draws for h in d)]))


def ablation_plan(layout, heads: Sequence[Head], n_random: int, seed: int, mode: str, support) -> AblationPlan:
    """The heads to ablate, checked, and the random draws beside them (none when their layers have too
    few other heads)."""
    heads = list(dict.fromkeys(heads))
    if not heads:
        raise DataError("choose at least one head to ablate")
    check_heads(layout, heads)
    if mode == "mean" and not support:
        raise DataError("mean ablation needs the support set (--support) to average the heads over")
    rng = random.Random(seed)
    try:
        return AblationPlan(heads, [random_heads(layout, heads, rng) for _ in range(n_random)])
    except DataError:
        return AblationPlan(heads, [])  # too few other heads in those layers to draw a control


class AblationTask:
    """In a Ray actor: the answers to a batch of queries under every condition of the plan; the means
    come from the support set, run once per actor."""

    def __init__(self, classes, plan: AblationPlan, mode, support_rows, encoding: Encoding, method):
        self.classes, self.plan, self.mode, self.support_rows = list(classes), plan, mode, support_rows
        self.encoding, self.method = encoding, method

    def setup(self, loaded: LoadedModel) -> None:
        from .distributed import as_batch, examples_from_rows

        self.means = None
        if self.mode == "mean":
            with tempfile.TemporaryDirectory() as folder:
                support = examples_from_rows(as_batch(self.support_rows), Path(folder))
                self.means = support_means(loaded, support, self.plan.every_head(), self.encoding)  # as a local run averages them

    def __call__(self, loaded: LoadedModel, queries: list[Example]) -> dict:
        runs = []
        for condition in self.plan.conditions():
            with ablated_heads(loaded, condition.heads, mode=self.mode, means=self.means):
                run = RunOptions(batch_size=len(queries))
                runs.append(zero_shot(loaded, queries, self.classes, self.encoding, run, method=self.method))
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
    encoding: Encoding | None = None,
    *,
    mode="mean",
    support=None,
    n_random=5,
    seed=0,
    method="generate",
    batch_size=8,
) -> tuple[AblationReport, dict, set[int]]:
    """`ablation_study` with the answers read in Ray actors (`distributed`); `layout` is the model's
    (a saved classifier's), so that the draws equal a local run's. Returns the report, the model's
    description (`distributed.run_on_ray`) and the worker pids."""
    from .distributed import example_row, run_on_ray

    encoding = encoding or Encoding()
    plan = ablation_plan(layout, heads, n_random, seed, mode, support)
    if any(q.label is None for q in queries):
        raise DataError("every query needs a label to score the model's own answers")
    support_rows = [example_row(i, e, encoding.question) for i, e in enumerate(support or [])] if mode == "mean" else []
    task = AblationTask(classes, plan, mode, support_rows, encoding, method)
    rows = [example_row(i, q, encoding.question) for i, q in enumerate(queries)]
    out, description, pids = run_on_ray(options, spec, task, rows, batch_size)
    per_row = [json.loads(row["answers"]) for row in out]
    n_conditions = len(plan.conditions())
    reports = [report_of(method, queries, [r[c][0] for r in per_row], [r[c][1] for r in per_row]) for c in range(n_conditions)]
    return AblationReport(plan.heads, mode, reports[0], reports[1], reports[2:], plan.draws), description, pids
