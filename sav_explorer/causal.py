"""Decodable or causal? Put a class's activity into heads and see whether the model's answer follows.

    report = steering_study(loaded, queries, clf.classes_, support, "red", clf.selected_heads, clf.encoding)
    report.flip_rate, report.flip_interval, report.random_flip_rates      # SteeringReport
    patched = patch(loaded, clf, source, target, clf.selected_heads, sweep=True)
    patched.logit_diff_before, patched.logit_diff_after, patched.effects  # PatchReport

SAV picks heads whose output *separates* the classes; ablation asks whether the model *needs* them.
These ask whether they *carry* the answer:

- **Steering** (`steered_heads`): the heads' outputs replaced, at every position of the prompt and
  of generation, by the target class's position-matched mean over its support examples
  (`replace`), or shifted by alpha × (target class mean − mean over the whole support set) (`add`:
  the function-vector form). The flip rate is the share of the other classes' queries whose own
  answer becomes the target; the same number of random heads from the same layers is the control.
- **Patching** (`patch`): a target input run with chosen heads' outputs taken from a source input's
  run, positions matched as mean ablation matches them (refused where the two prompts cannot be
  matched: other image-token counts or other text). The logit difference is the source class's
  first answer token against the target class's, at the last position. A sweep patches every head
  alone, its effect normalised so that 0 is no change and 1 the change from patching every head.

Every run reads its inputs through the classifier's encoding, as the fit did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from .ablation import ablation_plan
from .analysis import wilson_interval
from .answers import ZeroShotReport, generate_answers, zero_shot
from .classifier import SAVClassifier
from .data import Example
from .encoding import Encoding, RunOptions, encode
from .errors import DataError
from .heads import Head
from .interventions import PositionMeans, _columns, _restricted, check_heads, edited_heads, support_means
from .models import LoadedModel
from .models.prompts import answer_ending

STEER_MODES = ("replace", "add")


@contextlib.contextmanager
def steered_heads(
    loaded: LoadedModel, heads: Sequence[Head], target: PositionMeans, base: PositionMeans | None = None, alpha: float = 1.0
) -> Iterator[None]:
    """Every forward pass in the block runs with the heads set to `target`'s means (`base` None), or
    shifted by alpha × (target − base), position by position (see the module's doc)."""
    heads = tuple(heads)
    check_heads(loaded.layout, heads)
    target = _restricted(target, loaded.layout, heads)
    if base is None:
        with edited_heads(loaded, heads, lambda layer, current, positions: positions.fill(target, layer, current)):
            yield
        return
    base = _restricted(base, loaded.layout, heads)

    def shift(layer: int, current: torch.Tensor, positions) -> torch.Tensor:
        return current + alpha * (positions.fill(target, layer, current) - positions.fill(base, layer, current))

    with edited_heads(loaded, heads, shift):
        yield


@dataclass
class SteeringReport:
    """The other classes' queries answered before and after steering to `target`, and with random heads."""

    target: str
    mode: str
    alpha: float
    heads: list[Head]
    before: ZeroShotReport
    after: ZeroShotReport
    random: list[ZeroShotReport]  # one per draw of random heads
    random_heads: list[list[Head]]
    examples: list[str]

    @property
    def n(self) -> int:
        return self.before.n

    def flips(self, report: ZeroShotReport) -> int:
        return sum(predicted == self.target for predicted in report.predicted)

    @property
    def flip_rate(self) -> float:
        return self.flips(self.after) / self.n if self.n else 0.0

    @property
    def flip_interval(self) -> tuple[float, float]:
        return wilson_interval(self.flips(self.after), self.n)

    @property
    def before_rate(self) -> float:
        """The share already answered as the target before steering (wrong answers)."""
        return self.flips(self.before) / self.n if self.n else 0.0

    @property
    def random_flip_rates(self) -> list[float]:
        return [self.flips(report) / self.n if self.n else 0.0 for report in self.random]

    def answers(self) -> list[dict]:
        return [
            {"example": name, "label": label, "before": before, "after": after}
            for name, label, before, after in zip(self.examples, self.before.truth, self.before.answers, self.after.answers)
        ]

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "mode": self.mode,
            "alpha": self.alpha,
            "method": self.before.method,
            "n": self.n,
            "heads": [list(h) for h in self.heads],
            "flip_rate": self.flip_rate,
            "flip_interval": list(self.flip_interval),
            "before_rate": self.before_rate,
            "random_flip_rates": self.random_flip_rates,
            "random_heads": [[list(h) for h in heads] for heads in self.random_heads],
            "answers": self.answers(),
        }


def steering_study(
    loaded: LoadedModel,
    queries: Sequence[Example],
    classes: Sequence[str],
    support: Sequence[Example],
    target: str,
    heads: Sequence[Head],
    encoding: Encoding | None = None,
    run: RunOptions | None = None,
    *,
    mode: str = "replace",
    alpha: float = 1.0,
    n_random: int = 5,
    seed: int = 0,
    method: str = "generate",
    on_run: Callable[[str], None] | None = None,
) -> SteeringReport:
    """Steers the other classes' queries to `target` through `heads`, and through `n_random` draws of
    as many random heads from the same layers (see the module's doc). The target's means come from
    its support examples, read as `encoding` says, in one pass for every head the runs need."""
    encoding = encoding or Encoding()
    plan, target_support, others = steering_plan(loaded.layout, queries, classes, support, target, heads, mode, alpha, n_random, seed)
    means = _steering_means(loaded, plan, target_support, support, encoding, run, mode)
    reports = _steered_answers(loaded, plan, means, others, classes, encoding, run, alpha, method, on_run)
    return SteeringReport(target, mode, alpha, plan.heads, reports[0], reports[1], reports[2:], plan.draws, [q.name for q in others])


def steering_plan(layout, queries, classes, support, target, heads, mode, alpha, n_random, seed):
    """The heads and random draws, the target's support examples and the queries to steer, checked
    before any model work (the same wherever the answers are read)."""
    if mode not in STEER_MODES:
        raise DataError(f"unknown steering mode {mode!r}; choose one of {', '.join(STEER_MODES)}")
    if target not in classes:
        raise DataError(f"no class {target!r} to steer to; the classes are {', '.join(classes)}")
    if not torch.isfinite(torch.tensor(float(alpha))):
        raise DataError(f"alpha must be a finite number; got {alpha}")
    target_support = [e for e in support if e.label == target]
    if not target_support:
        raise DataError(f"steering needs the support examples of {target!r}, and the support set has none")
    others = [q for q in queries if q.label != target]
    if not others:
        raise DataError(f"no query of another class than {target!r} to steer")
    return ablation_plan(layout, heads, n_random, seed, "zero", None), target_support, others


def _steering_means(loaded, plan, target_support, support, encoding, run, mode):
    """The target class's means, and for `add` the whole support set's, of every head the runs steer."""
    every = plan.every_head()
    target_means = support_means(loaded, target_support, every, encoding, run)
    return target_means, support_means(loaded, support, every, encoding, run) if mode == "add" else None


def _steered_answers(loaded, plan, means, queries, classes, encoding, run, alpha, method, on_run=None):
    """The queries answered before steering, steered through the heads, then through each draw."""
    target_means, base = means
    conditions = [("before steering", ()), ("the heads steered", tuple(plan.heads))]
    conditions += [(f"random heads steered, draw {i + 1} of {len(plan.draws)}", tuple(d)) for i, d in enumerate(plan.draws)]
    reports = []
    for description, steered in conditions:
        if on_run is not None:
            on_run(description)
        context = steered_heads(loaded, steered, target_means, base, alpha) if steered else contextlib.nullcontext()
        with context:
            reports.append(zero_shot(loaded, queries, classes, encoding, run, method=method))
    return reports


class SteeringTask:
    """In a Ray actor: a batch of queries answered under every condition of the plan; the means come
    from the support set, run once per actor."""

    def __init__(self, classes, plan, target, mode, alpha, support_rows, encoding: Encoding, method):
        self.classes, self.plan, self.target, self.mode, self.alpha = list(classes), plan, target, mode, alpha
        self.support_rows, self.encoding, self.method = support_rows, encoding, method

    def setup(self, loaded: LoadedModel) -> None:
        import tempfile
        from pathlib import Path

        from .distributed import as_batch, examples_from_rows

        with tempfile.TemporaryDirectory() as folder:
            support = examples_from_rows(as_batch(self.support_rows), Path(folder))
            target_support = [e for e in support if e.label == self.target]
            self.means = _steering_means(loaded, self.plan, target_support, support, self.encoding, None, self.mode)

    def __call__(self, loaded: LoadedModel, queries: list[Example]) -> dict:
        import json

        import numpy as np

        run = RunOptions(batch_size=len(queries))
        reports = _steered_answers(loaded, self.plan, self.means, queries, self.classes, self.encoding, run, self.alpha, self.method)
        per_row = [json.dumps([[r.answers[i], r.predicted[i]] for r in reports]) for i in range(len(queries))]
        return {"answers": np.asarray(per_row, dtype=object)}

    def empty(self, n: int) -> dict:
        import numpy as np

        return {"answers": np.asarray([""] * n, dtype=object)}


def steering_on_ray(
    options,
    spec,
    layout,
    queries,
    classes,
    support,
    target,
    heads,
    encoding: Encoding | None = None,
    *,
    mode="replace",
    alpha=1.0,
    n_random=5,
    seed=0,
    method="generate",
    batch_size=8,
) -> tuple[SteeringReport, dict]:
    """`steering_study` with the answers read in Ray actors (`distributed`), as `ablation_on_ray` reads
    ablation's; returns the report and the model's description."""  # fmt: skip
    import json

    from .answers import report_of
    from .distributed import example_row, run_on_ray

    encoding = encoding or Encoding()
    plan, _, others = steering_plan(layout, queries, classes, support, target, heads, mode, alpha, n_random, seed)
    support_rows = [example_row(i, e, encoding.question) for i, e in enumerate(support)]
    task = SteeringTask(classes, plan, target, mode, alpha, support_rows, encoding, method)
    rows = [example_row(i, q, encoding.question) for i, q in enumerate(others)]
    out, description, _ = run_on_ray(options, spec, task, rows, batch_size)
    per_row = [json.loads(row["answers"]) for row in out]
    n_conditions = 2 + len(plan.draws)
    reports = [report_of(method, others, [r[c][0] for r in per_row], [r[c][1] for r in per_row]) for c in range(n_conditions)]
    report = SteeringReport(target, mode, alpha, plan.heads, reports[0], reports[1], reports[2:], plan.draws, [q.name for q in others])
    return report, description


@dataclass
class PatchReport:
    """A target input answered with heads patched from a source input's run."""

    source_label: str  # the classifier's reading of each input
    target_label: str
    heads: list[Head]
    answer_before: str  # the model's own generated answers
    answer_after: str
    logit_diff_before: float  # source class's first token against the target class's, at the last position
    logit_diff_after: float
    effects: list[tuple[int, int, float]] | None = None  # per head patched alone, normalised (a sweep)

    def to_json(self) -> dict:
        report = {
            "source_label": self.source_label,
            "target_label": self.target_label,
            "heads": [list(h) for h in self.heads],
            "answer_before": self.answer_before,
            "answer_after": self.answer_after,
            "logit_diff_before": self.logit_diff_before,
            "logit_diff_after": self.logit_diff_after,
        }
        if self.effects is not None:
            report["effects"] = [list(e) for e in self.effects]
        return report


def label_tokens(loaded: LoadedModel, example: Example, labels: Sequence[str], encoding: Encoding) -> list[int]:
    """Each label's first token as the model would write it after the prompt: the processor's own ids
    for the prompt with the label as its answer. Labels that start with the same token are refused:
    their logits could not be told apart."""
    ending = answer_ending(loaded.processor)
    batch = encode(loaded, [example] * len(labels), encoding, answers=[label + ending for label in labels])
    tokens = []
    for row, span in enumerate(batch.answer_spans):
        ids = batch.input_ids[row]
        tokens.append(int(ids[len(ids) - span.after - span.length]))
    for i, a in enumerate(labels):
        for j in range(i):
            if tokens[i] == tokens[j] and a != labels[j]:
                raise DataError(f"{labels[j]!r} and {a!r} start with the same token: their logits cannot be told apart")
    return tokens


def _check_matchable(loaded: LoadedModel, source_means: PositionMeans, target: Example, encoding: Encoding) -> None:
    """Refuses a target whose positions the source's run cannot match one for one."""
    keys = encode(loaded, [target], encoding).position_keys()[0]
    image_tokens = sum(1 for key in keys if key is not None and key.kind == "image")
    if source_means.image_count is not None and image_tokens != source_means.image_count:
        raise DataError(
            f"the source has {source_means.image_count} image tokens and the target {image_tokens}: "
            "their image positions cannot be matched one for one (use images of the same size, or a token budget)"
        )
    table = next(iter(source_means.means.values()))
    missing = [key for key in keys if key is not None and key.kind != "image" and key not in table]
    if missing:
        raise DataError(
            f"the target's prompt has {len(missing)} text position(s) the source's lacks: patch between inputs asked the same question"
        )


@torch.no_grad()
def _last_logits(loaded: LoadedModel, batch) -> torch.Tensor:
    logits = loaded.model(**batch.model_inputs(), use_cache=False, logits_to_keep=1).logits
    return logits[:, -1].float()


@torch.no_grad()
def patch(
    loaded: LoadedModel,
    clf: SAVClassifier,
    source: Example,
    target: Example,
    heads: Sequence[Head],
    encoding: Encoding | None = None,
    *,
    sweep: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
) -> PatchReport:
    """Runs `target` with `heads` taken from `source`'s run (see the module's doc); with `sweep`, also
    every head of the model patched alone, `batch_size` heads per forward pass, the source's run reused."""
    setting = _PatchSetting.of(loaded, clf, source, target, heads, encoding or clf.encoding, sweep)
    report = setting.patched(loaded, max_new_tokens)
    if sweep:
        every = loaded.layout.heads
        change = setting.whole_change(loaded)  # once: every chunk's effects are shares of it
        effects = []
        for start in range(0, len(every), batch_size):
            effects += setting.heads_alone(loaded, every[start : start + batch_size], change)
            if on_progress is not None:
                on_progress(min(start + batch_size, len(every)), len(every))
        report.effects = effects
    return report


@dataclass
class _PatchSetting:
    """What every patched run of one source and target shares: the classifier's labels for both, the
    labels' first tokens, the source's head outputs, and the target's logit difference before patching."""

    source_label: str
    target_label: str
    heads: list[Head]
    target: Example
    encoding: Encoding
    tokens: list[int]
    source_means: PositionMeans
    before: float

    @classmethod
    def of(cls, loaded, clf, source, target, heads, encoding, sweep) -> _PatchSetting:
        heads = list(dict.fromkeys(heads))
        if not heads:
            raise DataError("choose at least one head to patch")
        check_heads(loaded.layout, heads)
        source_label, target_label = (p.label for p in _predict(loaded, clf, [source, target], encoding))
        source_means = support_means(loaded, [source], loaded.layout.heads if sweep else heads, encoding)
        _check_matchable(loaded, source_means, target, encoding)
        tokens = label_tokens(loaded, target, [source_label, target_label], encoding)
        setting = cls(source_label, target_label, heads, target, encoding, tokens, source_means, 0.0)
        setting.before = float(setting.logit_diff(_last_logits(loaded, encode(loaded, [target], encoding)))[0])
        return setting

    def logit_diff(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self.tokens[0]] - logits[:, self.tokens[1]]

    def patched(self, loaded: LoadedModel, max_new_tokens: int) -> PatchReport:
        """The target's answer and logit difference with the chosen heads patched, against before."""
        one = encode(loaded, [self.target], self.encoding)
        answer_before = generate_answers(loaded, [self.target], self.encoding, max_new_tokens=max_new_tokens)[0]
        with steered_heads(loaded, self.heads, self.source_means):
            after = float(self.logit_diff(_last_logits(loaded, one))[0])
            answer_after = generate_answers(loaded, [self.target], self.encoding, max_new_tokens=max_new_tokens)[0]
        return PatchReport(self.source_label, self.target_label, self.heads, answer_before, answer_after, self.before, after)

    def whole_change(self, loaded: LoadedModel) -> float:
        """How far patching every head moves the logit difference: what a head's effect is a share of."""
        with steered_heads(loaded, loaded.layout.heads, self.source_means):
            whole = float(self.logit_diff(_last_logits(loaded, encode(loaded, [self.target], self.encoding)))[0])
        change = whole - self.before
        if abs(change) < 1e-6:
            raise DataError("patching every head leaves the logit difference as it was: there is no change to share out among heads")
        return change

    def heads_alone(self, loaded: LoadedModel, chunk: Sequence[Head], change: float) -> list[tuple[int, int, float]]:
        """Each head of `chunk` patched alone, one per row of one forward pass; its effect as a share of
        `change` (`whole_change`, computed once per sweep)."""
        every = loaded.layout.heads
        columns = _columns(loaded.layout, every)
        masks = {}
        for layer in columns:
            layer_heads = [h for at, h in every if at == layer]
            dim = loaded.layout.block(layer).head_dim
            mask = torch.zeros(len(chunk), len(layer_heads) * dim, dtype=torch.bool)
            for row, (at, head) in enumerate(chunk):
                if at == layer:
                    i = layer_heads.index(head)
                    mask[row, i * dim : (i + 1) * dim] = True
            masks[layer] = mask

        def one_head_per_row(layer: int, current: torch.Tensor, positions) -> torch.Tensor:
            fill = positions.fill(self.source_means, layer, current)
            return torch.where(masks[layer].to(current.device)[:, None, :], fill, current)

        batch = encode(loaded, [self.target] * len(chunk), self.encoding)
        with edited_heads(loaded, every, one_head_per_row):
            diffs = self.logit_diff(_last_logits(loaded, batch))
        return [(layer, head, round(float((d - self.before) / change), 6)) for (layer, head), d in zip(chunk, diffs)]


def _predict(loaded, clf, examples, encoding):
    from .pipeline import predict_examples

    return predict_examples(loaded, clf, examples, encoding=encoding)


class SweepTask:
    """In a Ray actor: a patch of `source` into `target` (`patch`). Row 0 is the chosen heads patched
    together; every other row is the target run with one head patched alone (its label names the head).
    Each actor computes the shared setting (labels, the source's run, the normalisation) once."""

    def __init__(self, clf: SAVClassifier, source_row: dict, target_row: dict, heads, encoding: Encoding, max_new_tokens: int):
        self.clf, self.source_row, self.target_row, self.heads = clf, source_row, target_row, list(heads)
        self.encoding, self.max_new_tokens = encoding, max_new_tokens

    def setup(self, loaded: LoadedModel) -> None:
        from .distributed import as_batch, examples_in_memory

        source, self.target = examples_in_memory(as_batch([self.source_row, self.target_row]))
        self.setting = _PatchSetting.of(loaded, self.clf, source, self.target, self.heads, self.encoding, sweep=True)
        self.change = self.setting.whole_change(loaded)

    def __call__(self, loaded: LoadedModel, rows: list[Example]) -> dict:
        import json

        import numpy as np

        reports, effects = [], []
        heads = [tuple(int(part) for part in str(row.label).split(":")) for row in rows if row.label != "chosen"]
        alone = iter(self.setting.heads_alone(loaded, heads, self.change) if heads else [])
        for row in rows:
            if row.label == "chosen":
                reports.append(json.dumps(self.setting.patched(loaded, self.max_new_tokens).to_json()))
                effects.append(0.0)
            else:
                reports.append("")
                effects.append(next(alone)[2])
        return {"report": np.asarray(reports, dtype=object), "effect": np.asarray(effects, dtype=np.float64)}

    def empty(self, n: int) -> dict:
        import numpy as np

        return {"report": np.asarray([""] * n, dtype=object), "effect": np.zeros(n)}


def patch_on_ray(
    options,
    spec,
    clf: SAVClassifier,
    source: Example,
    target: Example,
    heads,
    encoding: Encoding | None = None,
    *,
    batch_size=8,
    max_new_tokens=16,
) -> tuple[PatchReport, dict]:
    """`patch` with `sweep`, the heads patched alone spread over a Ray cluster's actors (`distributed`),
    `batch_size` heads per forward pass; returns the report and the model's description."""
    import json

    from .distributed import example_row, run_on_ray

    encoding, layout = encoding or clf.encoding, clf.layout_
    heads = list(dict.fromkeys(heads))
    check_heads(layout, heads)
    rows = [example_row(0, replace(target, label="chosen"), encoding.question)]
    rows += [
        example_row(i + 1, replace(target, label=f"{layer}:{head}"), encoding.question) for i, (layer, head) in enumerate(layout.heads)
    ]
    task = SweepTask(
        clf, example_row(0, source, encoding.question), example_row(0, target, encoding.question), heads, encoding, max_new_tokens
    )
    out, description, _ = run_on_ray(options, spec, task, rows, batch_size)
    report = PatchReport(**_report_fields(json.loads(out[0]["report"])))
    report.effects = [(layer, head, round(float(row["effect"]), 6)) for (layer, head), row in zip(layout.heads, out[1:])]
    return report, description


def _report_fields(raw: dict) -> dict:
    return {**raw, "heads": [tuple(h) for h in raw["heads"]]}
