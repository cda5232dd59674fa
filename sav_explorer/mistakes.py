"""The classifier's mistakes, looked at: which queries it got wrong, and where one head puts every example.

    wrong = misclassified(predictions, truth)                 # [Mistake(index=3, label="small", predicted="large", ...)]
    view = head_projection(support_acts, query_acts, (2, 0))  # PCA of head (2, 0) over support then queries
    view.coords                                               # (n_support + n_queries, 2)

Pure functions over predictions and captured activations: no model, no device, no printing. The
projection is deterministic: the same rows give the same picture whatever their order and whatever
sign the SVD picks (each component's largest-magnitude loading is made positive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .capture import HeadActivations
from .classifier import Prediction
from .errors import DataError
from .heads import Head


@dataclass(frozen=True)
class Mistake:
    """One misclassified query: its position in the query set, the truth, SAV's label and the votes behind it."""

    index: int
    label: str
    predicted: str
    votes: dict[str, int]


def misclassified(predictions: Sequence[Prediction], truth: Sequence[str]) -> list[Mistake]:
    """The queries whose predicted label differs from the true one, in query order."""
    if len(predictions) != len(truth):
        raise DataError(f"expected one true label per prediction ({len(predictions)}); got {len(truth)}")
    return [Mistake(i, str(label), p.label, dict(p.votes)) for i, (p, label) in enumerate(zip(predictions, truth)) if p.label != str(label)]


@dataclass(frozen=True)
class Projection:
    """Rows projected on their first principal components."""

    coords: torch.Tensor  # (n, n_components): the centred rows times the components
    components: torch.Tensor  # (n_components, dim): unit rows, each with its largest-magnitude entry positive
    explained: torch.Tensor  # (n_components,): share of the total variance along each component
    mean: torch.Tensor  # (dim,): the rows' mean, subtracted before projecting


def fix_signs(components: torch.Tensor) -> torch.Tensor:
    """Flips each row so that its largest-magnitude entry (the first, among equals) is positive."""
    largest = components.abs().argmax(dim=1)  # (n_components,): argmax returns the first of equal maxima
    signs = torch.sign(components.gather(1, largest[:, None]))
    signs[signs == 0] = 1.0
    return components * signs


def pca(rows: torch.Tensor, n_components: int = 2) -> Projection:
    """Principal components of `rows` (n, dim), in float64, signs fixed by `fix_signs`.

    With fewer independent directions than `n_components` (one example, or one dimension), the
    missing components and their coordinates are zero."""
    if rows.ndim != 2 or rows.shape[0] < 1:
        raise DataError(f"expected a non-empty (n, dim) matrix of rows; got shape {tuple(rows.shape)}")
    if not torch.isfinite(rows).all():
        raise DataError("the rows hold NaN or infinite values: nothing to project")
    x = rows.detach().to("cpu", torch.float64)
    mean = x.mean(dim=0)
    centred = x - mean  # (n, dim)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (min(n, dim), dim)
    total = float((singular**2).sum())
    have = min(n_components, vh.shape[0])
    components = torch.zeros(n_components, x.shape[1], dtype=torch.float64)
    explained = torch.zeros(n_components, dtype=torch.float64)
    tiny = singular[0] * 1e-12 if len(singular) else 0.0
    for i in range(have):
        if singular[i] > tiny:  # a direction of zero variance is no component (its sign would be noise)
            components[i] = vh[i]
            explained[i] = singular[i] ** 2 / total
    components = fix_signs(components)
    return Projection(centred @ components.T, components, explained, mean)


def head_rows(activations: HeadActivations, head: Head) -> torch.Tensor:
    """One head's activation of every example: (n_examples, head_dim)."""
    layer, index = head
    if head not in activations.layout:
        raise DataError(f"no head {index} in layer {layer} among the captured heads")
    return activations.blocks[activations.layout.layers.index(layer)][:, index]


def unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """Each row scaled to length 1 (zero rows stay zero): the classifier compares heads by cosine, so
    the directions, not the lengths, are what it sees."""
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def head_projection(
    support: HeadActivations | torch.Tensor | None, queries: HeadActivations | torch.Tensor, head: Head, unit: bool = True
) -> Projection:
    """PCA of one head's activations over the support examples, then the queries (rows in that order).

    Either side may be a HeadActivations or that head's rows already taken out, (n, head_dim); the
    support may be None (a classifier restored without its activations). `unit` scales every row to
    length 1 first, since SAV votes by cosine similarity."""
    parts = [part if isinstance(part, torch.Tensor) else head_rows(part, head) for part in (support, queries) if part is not None]
    dims = {part.shape[1] for part in parts}
    if len(dims) != 1:
        raise DataError(f"support and query rows of head {head} differ in size: {sorted(dims)}")
    rows = torch.cat([part.to(torch.float64) for part in parts])
    return pca(unit_rows(rows) if unit else rows)
