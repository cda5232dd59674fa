"""From a model and examples to a classifier and back: the steps the CLI and the UI share.

    loaded = load_model()
    clf, activations = fit_examples(loaded, load_examples("support.jsonl"), k=20)
    predictions = predict_examples(loaded, clf, [Example((path,), question)])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from .capture import HeadActivations, capture_heads, sites_for_heads
from .classifier import Prediction, SAVClassifier
from .data import Example, labels_of
from .errors import DataError
from .models import LoadedModel

ACTIVATIONS = "activations.safetensors"


def fit_examples(
    loaded: LoadedModel,
    examples: Sequence[Example],
    *,
    k: int = 20,
    scoring: str = "in-sample",
    tie_break: str = "similarity",
    question: str | None = None,
    batch_size: int = 8,
    max_pixels: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[SAVClassifier, HeadActivations]:
    """Captures every head once per example and fits the classifier. Labels are checked first,
    so that a bad support set fails before any model work."""
    labels = labels_of(examples)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes; got {len(classes)}: {', '.join(repr(c) for c in classes)}")
    n_heads = len(loaded.heads)
    if not isinstance(k, int) or not 1 <= k <= n_heads:
        raise DataError(f"k must be between 1 and the number of heads ({n_heads}); got {k}")
    activations = capture_heads(
        loaded, examples, batch_size=batch_size, default_question=question, max_pixels=max_pixels, on_batch=on_batch, should_stop=should_stop
    )
    clf = SAVClassifier(k=k, scoring=scoring, tie_break=tie_break).fit(activations, labels)
    return clf, activations


def capture_for(loaded: LoadedModel, clf: SAVClassifier, examples: Sequence[Example], **capture_options) -> HeadActivations:
    """Captures only the layers that hold selected heads; the pass stops after the deepest one."""
    return capture_heads(loaded, examples, sites=sites_for_heads(loaded, clf.selected_heads), **capture_options)


def predict_examples(loaded: LoadedModel, clf: SAVClassifier, examples: Sequence[Example], **capture_options) -> list[Prediction]:
    return clf.explain(capture_for(loaded, clf, examples, **capture_options))


def evaluate(predicted: Sequence[str], truth: Sequence[str], classes: Sequence[str]) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted).

    True labels the classifier does not know count as errors and get a row of their own.
    """
    row_labels = list(classes) + sorted(set(truth) - set(classes))
    matrix = [[0] * len(classes) for _ in row_labels]
    for p, t in zip(predicted, truth):
        matrix[row_labels.index(t)][list(classes).index(p)] += 1
    per_class = {}
    for i, label in enumerate(row_labels):
        total = sum(matrix[i])
        if total:
            per_class[label] = (matrix[i][list(classes).index(label)] if label in classes else 0) / total
    correct = sum(p == t for p, t in zip(predicted, truth))
    return {
        "accuracy": correct / len(truth) if truth else 0.0,
        "n": len(truth),
        "per_class_accuracy": per_class,
        "confusion": {"labels": row_labels, "predicted": list(classes), "matrix": matrix},
    }


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
        for site, block in zip(activations.sites, activations.blocks):
            tensors[f"activations.layer{site.layer}"] = block.contiguous()
    save_file(tensors, path)
    return path
