"""The model's own answers to a task's question, scored against its labels: SAV's zero-shot baseline.

    report = zero_shot(loaded, queries, classes, clf.encoding, method="generate")   # ZeroShotReport
    report.accuracy, report.unmatched, report.samples

The paper sets SAV beside the model answering by itself. Two ways to read an answer:

- `generate` (default): the model answers freely (greedy). The answer, lower-cased and stripped
  of punctuation, is right when it names the true label as a whole word and no other label;
  longer labels are matched first, so "light blue" is not also read as "blue". An answer that
  names no label is counted as unmatched (and wrong).
- `likelihood`: forced choice. The label whose tokens, appended to the prompt as the answer and
  followed by what ends an answer in the family's template (`models.prompts.answer_ending`), have
  the highest total log-probability: a label is scored as a whole answer, so a label that is a
  prefix of another does not win by being shorter. The label's tokens are found from the
  processor's own ids (`encode(answers=...)`), wherever a processor adds tokens of its own.
  Never unmatched; it tells what the model knows even when it would phrase its answer in words no
  label matches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .analysis import wilson_interval
from .data import Example
from .encoding import Batch, Encoding, RunOptions, batches, encode
from .errors import DataError
from .interventions import answer_tokens
from .models import LoadedModel
from .models.prompts import answer_ending

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
    encoding: Encoding | None = None,
    run: RunOptions | None = None,
    *,
    method: str = "generate",
    max_new_tokens: int = 16,
) -> ZeroShotReport:
    """The model's own answers to each query's question, read as one of `classes` (see the module's doc);
    the queries are read as `encoding` says (the classifier's, so that the model sees what SAV saw)."""
    if method not in ZERO_SHOT_METHODS:
        raise DataError(f"unknown zero-shot method {method!r}; choose one of {', '.join(ZERO_SHOT_METHODS)}")
    truth = [q.label for q in queries]
    if any(label is None for label in truth):
        raise DataError("every query needs a label to score the model's own answers")
    encoding = encoding or Encoding()
    answers: list[str] = []
    predicted: list[str | None] = []
    scored = _scored_positions(loaded, classes) if method == "likelihood" else 1
    for batch in batches(loaded, queries, encoding, run, logits_positions=scored):
        if method == "generate":
            texts = _generate(loaded, batch, max_new_tokens)
            answers += texts
            for text in texts:
                named = labels_named(text, classes)
                predicted.append(named[0] if len(named) == 1 else None if not named else "")  # "": several labels, wrong
        else:
            chosen = _most_likely(loaded, batch.examples, encoding, classes)
            answers += chosen
            predicted += chosen
    return report_of(method, queries, answers, predicted)


@torch.no_grad()
def generate_answers(
    loaded: LoadedModel, examples: Sequence[Example], encoding: Encoding, run: RunOptions | None = None, max_new_tokens: int = 24
) -> list[str]:
    """The model's own greedy answers, as text, to examples read as `encoding` says."""
    return [text for batch in batches(loaded, examples, encoding, run) for text in _generate(loaded, batch, max_new_tokens)]


def _generate(loaded: LoadedModel, batch: Batch, max_new_tokens: int) -> list[str]:
    output = loaded.model.generate(**batch.model_inputs(), max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[:, batch.input_ids.shape[1] :]
    return [text.strip() for text in loaded.processor.batch_decode(new_tokens, skip_special_tokens=True)]


def report_of(method: str, queries: Sequence[Example], answers: list[str], predicted: list[str | None]) -> ZeroShotReport:
    """The report of answers read elsewhere (in Ray actors, say), with a few samples of each kind."""
    truth = [q.label for q in queries]
    samples: dict[str, list[dict]] = {"right": [], "wrong": [], "unmatched": []}
    for example, answer, guess, label in zip(queries, answers, predicted, truth):
        kind = "unmatched" if guess is None else "right" if guess == label else "wrong"
        if len(samples[kind]) < SAMPLES_PER_KIND:
            samples[kind].append({"example": example.name, "answer": answer, "label": label})
    return ZeroShotReport(method, predicted, truth, answers, samples)


def _scored_positions(loaded: LoadedModel, classes: Sequence[str]) -> int:
    """Enough final positions to hold any label's tokens, its ending and the one before them (an
    upper bound, for the memory estimate: the tokenizer alone, with room for a processor's own tokens)."""
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    ending = answer_ending(loaded.processor)
    longest = max(len(tokenizer(label + ending, add_special_tokens=False)["input_ids"]) for label in classes)
    return longest + 4


@torch.no_grad()
def _most_likely(loaded: LoadedModel, examples: Sequence[Example], encoding: Encoding, classes: Sequence[str]) -> list[str]:
    """For each example, the label with the highest total log-probability as a whole answer, its ending
    included (see the module's doc; one forward per label). Only the scored positions' logits are kept
    (`logits_to_keep`) and no cache is built: the whole vocabulary at every position of a long image
    prompt is gigabytes."""
    scores = torch.empty(len(examples), len(classes))
    ending = answer_ending(loaded.processor)
    for column, label in enumerate(classes):
        batch = encode(loaded, examples, encoding, answers=[label + ending] * len(examples))
        kept = max(sum(span) for span in batch.answer_spans) + 1  # the scored tokens, and the position before them
        with answer_tokens([sum(span) for span in batch.answer_spans]):  # under an ablation, the label counts as answer, not prompt
            logits = loaded.model(**batch.model_inputs(), logits_to_keep=kept, use_cache=False).logits.float()
        # logits[:, i] predicts token (length - kept + i + 1); left padding: every row ends at the last column
        log_probs = logits[:, :-1].log_softmax(-1).gather(-1, batch.input_ids[:, -kept + 1 :, None])[..., 0]  # (batch, kept - 1)
        end = log_probs.shape[1]
        for row, span in enumerate(batch.answer_spans):
            scores[row, column] = log_probs[row, end - span.after - span.length : end - span.after].sum()
    return [classes[i] for i in scores.argmax(1).tolist()]
