"""From a model and examples to a classifier and back: the steps the CLI and the UI share.

    loaded = load_model()
    clf, activations = fit_examples(loaded, load_examples("support.jsonl"), Encoding(max_pixels=448 * 448), k=20)
    predictions = predict_examples(loaded, clf, [Example((path,), question)])   # read under clf.encoding

Each step validates its input before any model work. A fit's `Encoding` becomes the classifier's
`encoding`, which every later pass on it reads.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .analysis import wilson_interval
from .capture import HeadActivations, capture_heads, sites_for_heads
from .checks import check_classes, check_k
from .classifier import DEFAULT_HEAD_ORDER, Prediction, SAVClassifier
from .data import Example, labels_of
from .encoding import Encoding, RunOptions
from .errors import ClassifierFileError
from .models import LoadedModel

ACTIVATIONS = "activations.safetensors"


def fit_examples(
    loaded: LoadedModel,
    examples: Sequence[Example],
    encoding: Encoding | None = None,
    run: RunOptions | None = None,
    *,
    k: int = 20,
    scoring: str = "in-sample",
    tie_break: str = "similarity",
    head_order: str = DEFAULT_HEAD_ORDER,
) -> tuple[SAVClassifier, HeadActivations]:
    """Captures every head once per example, read as `encoding` says, and fits the classifier, which
    keeps the encoding. Labels are checked first, so that a bad support set fails before any model work."""
    labels = labels_of(examples)
    check_classes(labels)
    check_k(k, loaded.layout.n_heads)
    encoding = encoding or Encoding()
    activations = capture_heads(loaded, examples, encoding, run)
    clf = fit_activations(activations, labels, encoding, k=k, scoring=scoring, tie_break=tie_break, head_order=head_order)
    return clf, activations


def fit_activations(
    activations: HeadActivations,
    labels: Sequence[str],
    encoding: Encoding | None = None,
    *,
    k: int,
    scoring: str = "in-sample",
    tie_break: str = "similarity",
    head_order: str = DEFAULT_HEAD_ORDER,
) -> SAVClassifier:
    """The classifier of heads captured elsewhere (on a Ray cluster, say) under `encoding`, as `fit_examples` fits it."""
    clf = SAVClassifier(k=k, scoring=scoring, tie_break=tie_break, head_order=head_order).fit(activations, labels)
    clf.encoding = encoding or Encoding()  # saved with it, so that every later pass reads examples as fitting did
    return clf


def capture_for(
    loaded: LoadedModel, clf: SAVClassifier, examples: Sequence[Example], run: RunOptions | None = None, encoding: Encoding | None = None
) -> HeadActivations:
    """Captures only the layers that hold selected heads (the pass stops after the deepest one), reading
    the examples under the classifier's encoding unless `encoding` overrides it."""
    return capture_heads(loaded, examples, encoding or clf.encoding, run, sites=sites_for_heads(loaded, clf.selected_heads))


def predict_examples(
    loaded: LoadedModel, clf: SAVClassifier, examples: Sequence[Example], run: RunOptions | None = None, encoding: Encoding | None = None
) -> list[Prediction]:
    return clf.explain(capture_for(loaded, clf, examples, run, encoding))


@dataclass(frozen=True)
class ExamplePrediction:
    example: str  # the example's name (its first image's file name)
    label: str  # the true label
    predicted: str


@dataclass(frozen=True)
class EvalReport:
    """Accuracy on a labeled test set. The confusion matrix has a row per true label (classifier
    classes first, then unknown labels) and a column per classifier class."""

    accuracy: float
    n: int
    per_class_accuracy: dict[str, float]
    confusion_labels: list[str]  # rows
    confusion_predicted: list[str]  # columns: the classifier's classes
    confusion_matrix: list[list[int]]
    predictions: list[ExamplePrediction]

    @property
    def interval(self) -> tuple[float, float]:
        """The accuracy's 95 % Wilson interval."""
        return wilson_interval(sum(p.label == p.predicted for p in self.predictions), self.n)

    def per_class_interval(self) -> dict[str, tuple[float, float]]:
        counts: dict[str, list[int]] = {}
        for p in self.predictions:
            counts.setdefault(p.label, [0, 0])
            counts[p.label][0] += p.label == p.predicted
            counts[p.label][1] += 1
        return {label: wilson_interval(right, n) for label, (right, n) in counts.items()}

    def to_json(self) -> dict:
        """The keys `eval --json` has always printed, plus `predictions` and the 95 % intervals."""
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "per_class_accuracy": self.per_class_accuracy,
            "confusion": {"labels": self.confusion_labels, "predicted": self.confusion_predicted, "matrix": self.confusion_matrix},
            "predictions": [{"example": p.example, "label": p.label, "predicted": p.predicted} for p in self.predictions],
            "accuracy_interval": list(self.interval),
            "per_class_interval": {label: list(bounds) for label, bounds in self.per_class_interval().items()},
        }


def evaluate(predicted: Sequence[str], truth: Sequence[str], classes: Sequence[str], names: Sequence[str] | None = None) -> EvalReport:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted).

    True labels the classifier does not know count as errors and get a row of their own.
    `names` identifies each example in the report's predictions (default: its index).
    """
    classes = list(classes)
    row_labels = classes + sorted(set(truth) - set(classes))
    matrix = [[0] * len(classes) for _ in row_labels]
    for p, t in zip(predicted, truth):
        matrix[row_labels.index(t)][classes.index(p)] += 1
    per_class = {}
    for i, label in enumerate(row_labels):
        total = sum(matrix[i])
        if total:
            per_class[label] = (matrix[i][classes.index(label)] if label in classes else 0) / total
    correct = sum(p == t for p, t in zip(predicted, truth))
    names = list(names) if names is not None else [str(i) for i in range(len(truth))]
    return EvalReport(
        accuracy=correct / len(truth) if truth else 0.0,
        n=len(truth),
        per_class_accuracy=per_class,
        confusion_labels=row_labels,
        confusion_predicted=classes,
        confusion_matrix=matrix,
        predictions=[ExamplePrediction(n, t, p) for n, t, p in zip(names, truth, predicted)],
    )


@dataclass(frozen=True)
class Evaluation:
    """A labeled test set classified: the report, and each query with its prediction (votes per class
    and per head), for views of the errors."""

    report: EvalReport
    examples: list[Example]
    predictions: list[Prediction]

    @classmethod
    def of(cls, examples: Sequence[Example], predictions: Sequence[Prediction], classes: Sequence[str]) -> Evaluation:
        truth = labels_of(examples)
        report = evaluate([p.label for p in predictions], truth, classes, names=[e.name for e in examples])
        return cls(report, list(examples), list(predictions))

    @property
    def misclassified(self) -> list[tuple[Example, Prediction]]:
        return [(e, p) for e, p in zip(self.examples, self.predictions) if p.label != e.label]


def evaluate_examples(
    loaded: LoadedModel, clf: SAVClassifier, examples: Sequence[Example], run: RunOptions | None = None, encoding: Encoding | None = None
) -> Evaluation:
    """SAV on a labeled test set, read under the classifier's encoding (unless `encoding` overrides it)."""
    labels_of(examples)  # every example labeled, before any model work
    return Evaluation.of(examples, predict_examples(loaded, clf, examples, run, encoding), clf.classes_)


def save_head_scores(path: str | Path, clf: SAVClassifier) -> Path:
    """Writes one CSV row per head: layer, head, in-sample and leave-one-out accuracy, selected (0/1)."""
    selected = set(clf.selected_heads)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "head", "in_sample_accuracy", "leave_one_out_accuracy", "selected"])
        for (layer, head), a, b in zip(clf.heads_, clf.in_sample_scores_.tolist(), clf.loo_scores_.tolist()):
            writer.writerow([layer, head, f"{a:.6f}", f"{b:.6f}", int((layer, head) in selected)])
    return Path(path)


def save_activations(folder: str | Path, activations: HeadActivations, labels: Sequence[str], classes: Sequence[str]) -> Path:
    """Writes `activations.safetensors`: `labels` (int64 indices into `classes`) and the activations,
    as one (n_examples, n_heads_total, head_dim) float32 tensor when all heads share a size,
    else one `activations.layer{L}` tensor per layer."""
    path = Path(folder) / ACTIVATIONS
    tensors = {"labels": torch.tensor([list(classes).index(label) for label in labels], dtype=torch.int64)}
    uniform = activations.uniform()
    if uniform is not None:
        tensors["activations"] = uniform.contiguous()
    else:
        for layer, block in zip(activations.layout.layers, activations.blocks):
            tensors[f"activations.layer{layer}"] = block.contiguous()
    save_file(tensors, path)
    return path


def load_activations(folder: str | Path, layout) -> tuple[HeadActivations, torch.Tensor] | None:
    """Reads `activations.safetensors` written by `save_activations` for a classifier of `layout`:
    (activations, label indices), or None where the folder has none."""
    path = Path(folder) / ACTIVATIONS
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        raise ClassifierFileError(f"{path.name} is not a readable safetensors file ({error})") from None
    if "activations" in tensors:
        blocks = list(tensors["activations"].split([b.n_heads for b in layout.blocks], dim=1))
    else:
        blocks = [tensors.get(f"activations.layer{b.layer}") for b in layout.blocks]
    try:
        return HeadActivations(layout, blocks), tensors["labels"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ClassifierFileError(f"{path.name} does not match the classifier's heads") from None
