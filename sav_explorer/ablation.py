"""Does the model need the heads SAV picked? Its own answers with them ablated, against random heads.

    report = ablation_study(loaded, queries, classes, clf.selected_heads, mode="mean", support=support)
    report.baseline.accuracy, report.ablated.accuracy, report.random_accuracy

A drop when the selected heads are ablated says little alone: ablating any heads of those layers
might hurt as much. So the same number of random heads from the same layers are ablated too, in
a few draws, and the accuracies are set side by side, each with its 95 % interval.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .answers import ZeroShotReport, zero_shot
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
    heads = list(dict.fromkeys(heads))
    if not heads:
        raise DataError("choose at least one head to ablate")
    check_heads(loaded.layout, heads)
    rng = random.Random(seed)
    try:
        draws = [random_heads(loaded.layout, heads, rng) for _ in range(n_random)]
    except DataError:
        draws = []  # too few other heads in those layers to draw a control
    means = None
    if mode == "mean":
        if not support:
            raise DataError("mean ablation needs the support set (--support) to average the heads over")
        chosen = list(dict.fromkeys([*heads, *(h for d in draws for h in d)]))
        means = support_means(loaded, support, chosen, question=question, max_image_tokens=max_image_tokens)

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
