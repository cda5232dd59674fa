"""The model's own answers to a task's question, scored against its labels: SAV's zero-shot baseline.

    report = zero_shot(loaded, queries, classes, method="generate")   # ZeroShotReport
    report.accuracy, report.unmatched, report.samples

The paper sets SAV beside the model answering by itself. Two ways to read an answer:

- `generate` (default): the model answers freely (greedy). The answer, lower-cased and stripped
  of punctuation, is right when it names the true label as a whole word and no other label;
  longer labels are matched first, so "light blue" is not also read as "blue". An answer that
  names no label is counted as unmatched (and wrong).
- `likelihood`: forced choice. The label whose tokens, appended to the prompt as the answer, have
  the highest total log-probability. Never unmatched; it tells what the model knows even when it
  would phrase its answer in words no label matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .analysis import wilson_interval
from .data import Example
from .errors import DataError
from .interventions import answer_tokens
from .models import LoadedModel, build_prompt, generate_answers, prepare_inputs
from .models.budget import budget_settings

ZERO_SHOT_METHODS = ("generate", "likelihood")
SAMPLES_PER_KIND = 3  # answers shown of each kind: right, wrong, unmatched


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def labels_named(answer: str, labels: Sequence[str]) -> list[str]:
    """The labels an answer names as whole words, longer labels first and never twice over the same words."""
    text = f" {_words(answer)} "
    named = []
    for label in sorted(labels, key=lambda label: (-len(_words(label)), label)):
        words = _words(label)
        if words and f" {words} " in text:
            named.append(label)
            text = text.replace(f" {words} ", " | ")
    return named


@dataclass
class ZeroShotReport:
    method: str
    predicted: list[str | None]  # the label the model gave, None when its answer named no label or several
    truth: list[str]
    answers: list[str]  # the generated text, or the chosen label for `likelihood`
    samples: dict[str, list[dict]] = field(default_factory=dict)  # "right" / "wrong" / "unmatched" -> a few {answer, label}

    @property
    def n(self) -> int:
        return len(self.truth)

    @property
    def correct(self) -> int:
        return sum(p == t for p, t in zip(self.predicted, self.truth))

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    @property
    def unmatched(self) -> int:
        return sum(p is None for p in self.predicted)

    def to_json(self) -> dict:
        return {
            "zero_shot_method": self.method,
            "zero_shot_accuracy": self.accuracy,
            "zero_shot_interval": list(self.interval),
            "zero_shot_unmatched": self.unmatched,
            "zero_shot_samples": self.samples,
        }


def zero_shot(
    loaded: LoadedModel,
    queries: Sequence[Example],
    classes: Sequence[str],
    *,
    method: str = "generate",
    question: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
    max_image_tokens: int | None = None,
) -> ZeroShotReport:
    """The model's own answers to each query's question, read as one of `classes` (see the module's doc);
    `max_image_tokens`: images within that budget, as the classifier saw them."""
    if method not in ZERO_SHOT_METHODS:
        raise DataError(f"unknown zero-shot method {method!r}; choose one of {', '.join(ZERO_SHOT_METHODS)}")
    truth = [q.label for q in queries]
    if any(label is None for label in truth):
        raise DataError("every query needs a label to score the model's own answers")
    budget = budget_settings(loaded, max_image_tokens)
    answers: list[str] = []
    predicted: list[str | None] = []
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        images = [example.load_images() for example in batch]
        questions = [example.question_or(question) for example in batch]
        if method == "generate":
            texts = generate_answers(loaded, images, questions, max_new_tokens=max_new_tokens, image_budget=budget)
            answers += texts
            for text in texts:
                named = labels_named(text, classes)
                predicted.append(named[0] if len(named) == 1 else None if not named else "")  # "": several labels, wrong
        else:
            chosen = _most_likely(loaded, images, questions, classes, budget)
            answers += chosen
            predicted += chosen
        if on_batch is not None:
            on_batch(min(start + batch_size, len(queries)), len(queries))
    return report_of(method, queries, answers, predicted)


def report_of(method: str, queries: Sequence[Example], answers: list[str], predicted: list[str | None]) -> ZeroShotReport:
    """The report of answers read elsewhere (in Ray actors, say), with a few samples of each kind."""
    truth = [q.label for q in queries]
    samples: dict[str, list[dict]] = {"right": [], "wrong": [], "unmatched": []}
    for example, answer, guess, label in zip(queries, answers, predicted, truth):
        kind = "unmatched" if guess is None else "right" if guess == label else "wrong"
        if len(samples[kind]) < SAMPLES_PER_KIND:
            samples[kind].append({"example": example.name, "answer": answer, "label": label})
    return ZeroShotReport(method, predicted, truth, answers, samples)


@torch.no_grad()
def _most_likely(loaded: LoadedModel, images: list[list], questions: list[str], classes: Sequence[str], budget=None) -> list[str]:
    """For each row, the label with the highest total log-probability as the answer (one forward per label)."""
    prompts = [build_prompt(loaded.processor, q, row) for row, q in zip(images, questions)]
    scores = torch.empty(len(prompts), len(classes))
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    for column, label in enumerate(classes):
        texts = [p + label if p[-1:].isspace() else f"{p} {label}" for p in prompts]
        inputs = prepare_inputs(loaded, images, texts, budget)
        lengths = [len(tokenizer(text, add_special_tokens=False).input_ids) for text in [*texts, *prompts]]
        label_lengths = [max(a - b, 1) for a, b in zip(lengths[: len(texts)], lengths[len(texts) :])]
        with answer_tokens(label_lengths):  # under an ablation, the label's tokens count as answer, not prompt
            logits = loaded.model(**inputs).logits.float()
        log_probs = logits[:, :-1].log_softmax(-1).gather(-1, inputs["input_ids"][:, 1:, None])[..., 0]
        for row, n in enumerate(label_lengths):  # left padding: the label's tokens end every row
            scores[row, column] = log_probs[row, -n:].sum()
    return [classes[i] for i in scores.argmax(1).tolist()]
