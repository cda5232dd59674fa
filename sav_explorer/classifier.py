"""The SAV classifier: scikit-learn style fit / predict over captured head activations.

    clf = SAVClassifier(k=20).fit(activations, labels)       # activations: HeadActivations
    clf.predict(query_activations)                           # ['red', ...]
    clf.save("my-classifier", model_id=..., revision=...)   # with clf.encoding, how its examples were read
    clf = SAVClassifier.load("my-classifier"); clf.manifest_  # the validated Manifest

`fit` keeps the class means of *every* head, so `select` can change k or the head set at once,
without the model. Saved folders are a JSON manifest plus a safetensors file; nothing is pickled.
"""

from __future__ import annotations

import copy
import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import method
from .capture import HeadActivations
from .checks import check_choice, check_classes, check_k, clean_label
from .encoding import Encoding
from .errors import ClassifierFileError, DataError
from .heads import Head
from .manifest import Manifest, Settings

TENSORS = "tensors.safetensors"
DEFAULT_HEAD_ORDER: method.HeadOrder = "margin"  # chosen on held-out queries: see the README's "Ranking heads within a tie"


@dataclass(frozen=True)
class HeadVote:
    layer: int
    head: int
    vote: str
    similarities: dict[str, float]  # cosine to each class mean


@dataclass(frozen=True)
class Prediction:
    label: str
    votes: dict[str, int]
    heads: list[HeadVote]  # selected heads, best-ranked first


class SAVClassifier:
    """Sparse Attention Vector classifier.

    k: how many top-scoring heads vote. scoring: "in-sample" (the paper's: an example counts
    towards its own class mean) or "loo" (leave-one-out; needs 2+ examples per class).
    tie_break: "similarity" or "rank" (see `method.vote`). head_order: the order of heads with
    equal scores, "margin", "layer-head" or "official" (see `method.select_heads`).
    """

    def __init__(
        self,
        k: int = 20,
        scoring: method.Scoring = "in-sample",
        tie_break: method.TieBreak = "similarity",
        head_order: method.HeadOrder = DEFAULT_HEAD_ORDER,
    ):
        self.k = k
        self.scoring = scoring
        self.tie_break = tie_break
        self.head_order = head_order
        self.encoding = Encoding()  # how its support set was read (set by `pipeline.fit_activations`); later passes read the same way

    # ----------------------------------------------------------------------------- fitting
    def fit(self, activations: HeadActivations, labels: Sequence[str]) -> SAVClassifier:
        check_choice(self.scoring, method.Scoring, "scoring")
        check_choice(self.tie_break, method.TieBreak, "tie break")
        check_choice(self.head_order, method.HeadOrder, "head order")
        labels = [clean_label(label, f"support example {i + 1}") for i, label in enumerate(labels)]
        if len(labels) != activations.n_examples:
            raise DataError(f"expected one label per example ({activations.n_examples}); got {len(labels)}")
        classes = check_classes(labels)
        counts = {c: labels.count(c) for c in classes}
        if self.scoring == "loo" and min(counts.values()) < 2:
            lonely = [c for c, n in counts.items() if n < 2]
            raise DataError(f"leave-one-out scoring needs at least 2 examples per class; {lonely[0]!r} has 1")
        self.classes_ = classes
        self.layout_ = activations.layout
        check_k(self.k, self.layout_.n_heads)
        targets = torch.tensor([classes.index(label) for label in labels])
        self.support_labels_ = targets
        self.class_means_ = [method.class_means(block, targets, len(classes)) for block in activations.blocks]
        in_sample = self.similarities(activations)
        self.loo_similarities_ = torch.cat([method.leave_one_out_cosine(b, targets, len(classes)) for b in activations.blocks], 1)
        self.in_sample_scores_ = method.head_scores(in_sample, targets)
        self.loo_scores_ = method.head_scores(self.loo_similarities_, targets)
        self.in_sample_margins_ = method.head_margins(in_sample, targets)
        self.loo_margins_ = method.head_margins(self.loo_similarities_, targets)
        self.selected_ = self.ranking()[: self.k]
        return self

    def ranking(self) -> torch.Tensor:
        """Every head's index, best first: by score, ties by the `head_order` setting."""
        self._check_fitted(during_fit=True)
        margins = self.in_sample_margins_ if self.scoring == "in-sample" else self.loo_margins_
        return method.select_heads(self.head_scores_, self.layout_.n_heads, self.head_order, margins)

    @property
    def heads_(self) -> list[Head]:
        """Every (layer, head) the classifier knows, in layout order."""
        return self.layout_.heads

    @property
    def head_scores_(self) -> torch.Tensor:
        """The scores that rank heads, per the `scoring` setting: (n_heads,)."""
        self._check_fitted(during_fit=True)
        return self.in_sample_scores_ if self.scoring == "in-sample" else self.loo_scores_

    def select(self, k: int | None = None, heads: Sequence[Head] | None = None) -> SAVClassifier:
        """Replaces the selection: the top k heads, or exactly the given (layer, head) pairs (best first; repeats dropped)."""
        self._check_fitted(during_fit=True)
        if heads is not None:
            heads = list(dict.fromkeys(tuple(h) for h in heads))
            unknown = [h for h in heads if h not in self.layout_]
            if unknown:
                raise DataError(f"no such head(s) in this model: {unknown[:5]}")
            if not heads:
                raise DataError("select at least one head")
            self.selected_ = torch.tensor(self.layout_.positions(heads))
            self.k = len(heads)
        else:
            self.k = check_k(self.k if k is None else k, self.layout_.n_heads)
            self.selected_ = self.ranking()[: self.k]
        return self

    @property
    def selected_heads(self) -> list[Head]:
        return [self.heads_[i] for i in self.selected_.tolist()]

    # ----------------------------------------------------------------------------- predicting
    def similarities(self, activations: HeadActivations) -> torch.Tensor:
        """Cosine to every class mean for each captured head: (n, heads of `activations.layout`, n_classes)."""
        self._check_fitted(during_fit=True)
        means = dict(zip(self.layout_.layers, self.class_means_))
        return torch.cat(
            [method.cosine_to_means(block, means[b.layer]) for block, b in zip(activations.blocks, activations.layout.blocks)], 1
        )

    def needed_layers(self) -> list[int]:
        """Layers that hold a selected head: the only ones a prediction must run."""
        return sorted({layer for layer, _ in self.selected_heads})

    def _selected_similarities(self, activations: HeadActivations) -> torch.Tensor:
        """(n, k, n_classes) for the selected heads, from activations of at least the needed layers."""
        missing = set(self.needed_layers()) - set(activations.layout.layers)
        if missing:
            raise DataError(f"activations lack layer(s) {sorted(missing)} that selected heads sit in")
        unknown = [b.layer for b in activations.layout.blocks if b not in self.layout_.blocks]
        if unknown:
            raise DataError(f"activations of layer(s) {unknown} do not match the classifier's head layout")
        columns = torch.tensor(activations.layout.positions(self.selected_heads))
        return self.similarities(activations)[:, columns]

    def predict(self, activations: HeadActivations) -> list[str]:
        return [p.label for p in self.explain(activations)]

    def explain(self, activations: HeadActivations) -> list[Prediction]:
        """Label, votes per class, and each selected head's vote and similarities, per example."""
        self._check_fitted()
        sims = self._selected_similarities(activations)  # (n, k, classes)
        order = torch.arange(sims.shape[1])
        predicted, votes = method.vote(sims, order, self.tie_break)
        results = []
        for row in range(sims.shape[0]):
            heads = [
                HeadVote(
                    layer,
                    head,
                    self.classes_[int(sims[row, j].argmax())],
                    {c: round(float(s), 6) for c, s in zip(self.classes_, sims[row, j])},
                )
                for j, (layer, head) in enumerate(self.selected_heads)
            ]
            results.append(Prediction(self.classes_[int(predicted[row])], {c: int(v) for c, v in zip(self.classes_, votes[row])}, heads))
        return results

    def leave_one_out_accuracy(self) -> float:
        """The ensemble's accuracy on the support set, each example left out of its class mean.

        Heads are not re-selected per left-out example, so this estimate is slightly optimistic
        when the selection itself came from the same examples.
        """
        self._check_fitted()
        predicted, _ = method.vote(self.loo_similarities_, self.selected_, self.tie_break)
        return float((predicted == self.support_labels_).float().mean())

    # ----------------------------------------------------------------------------- summaries
    @property
    def support_counts_(self) -> dict[str, int]:
        """Support examples per class, in class order."""
        self._check_fitted(during_fit=True)
        counts = torch.bincount(self.support_labels_, minlength=len(self.classes_)).tolist()
        return dict(zip(self.classes_, counts))

    def is_top_k(self) -> bool:
        """Whether the voting heads are the top of the ranking (else a hand-picked set)."""
        self._check_fitted()
        return self.selected_.tolist() == self.ranking()[: len(self.selected_)].tolist()

    def __repr__(self) -> str:
        settings = f"k={self.k}, scoring={self.scoring!r}, tie_break={self.tie_break!r}, head_order={self.head_order!r}"
        if not hasattr(self, "selected_"):
            return f"SAVClassifier({settings})"
        classes = ", ".join(self.classes_[:8]) + (", …" if len(self.classes_) > 8 else "")
        heads = " ".join(f"L{layer}H{head}" for layer, head in self.selected_heads[:5]) + (" …" if len(self.selected_) > 5 else "")
        return (
            f"SAVClassifier({settings}): {len(self.classes_)} classes ({classes}) from {int(self.support_labels_.numel())} "
            f"examples; {len(self.selected_)} of {self.layout_.n_heads} heads vote ({heads}); "
            f"leave-one-out accuracy {self.leave_one_out_accuracy():.3f}"
        )

    def _repr_html_(self) -> str:
        """A short summary where a notebook displays the classifier."""
        if not hasattr(self, "selected_"):
            return f"<code>{html.escape(repr(self))}</code> (not fitted)"
        from .analysis import wilson_interval  # analysis imports this module

        n = int(self.support_labels_.numel())
        loo = self.leave_one_out_accuracy()
        low, high = wilson_interval(round(loo * n), n)
        classes = " · ".join(f"{html.escape(c)} {count}" for c, count in self.support_counts_.items())
        scores = self.head_scores_
        heads = ", ".join(
            f"L{layer} H{head} ({float(scores[self.layout_.position(layer, head)]):.2f})" for layer, head in self.selected_heads[:8]
        ) + (", …" if len(self.selected_) > 8 else "")
        chosen = f"the top {self.k}" if self.is_top_k() else f"a custom set of {len(self.selected_)}"
        rows = [
            ("classes (support examples)", classes),
            ("heads that vote", f"{chosen} of {self.layout_.n_heads} ({self.scoring} scoring, ties by {self.head_order}): {heads}"),
            ("leave-one-out accuracy", f"{loo:.3f} (95 % interval {low:.3f}–{high:.3f}; heads not re-selected)"),
            ("reads examples with", html.escape(self.encoding.describe())),
        ]
        body = "".join(f"<tr><th style='text-align:left'>{name}</th><td style='text-align:left'>{value}</td></tr>" for name, value in rows)
        return f"<div><b>SAVClassifier</b><table>{body}</table></div>"

    # ----------------------------------------------------------------------------- files
    def save(self, folder: str | Path, *, model_id: str, revision: str) -> Path:
        """Writes `manifest.json` (with the encoding) and `tensors.safetensors` into `folder` (created if needed)."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"class_means.layer{layer}": means.contiguous() for layer, means in zip(self.layout_.layers, self.class_means_)}
        tensors["support_labels"] = self.support_labels_.to(torch.int64)
        tensors["loo_similarities"] = self.loo_similarities_.contiguous()
        tensors["in_sample_scores"] = self.in_sample_scores_
        tensors["loo_scores"] = self.loo_scores_
        tensors["in_sample_margins"] = self.in_sample_margins_
        tensors["loo_margins"] = self.loo_margins_
        save_file(tensors, folder / TENSORS)
        manifest = Manifest(
            model_id=model_id,
            revision=revision,
            encoding=self.encoding,
            labels=list(self.classes_),
            layout=self.layout_,
            selected=self.selected_heads,
            head_scores=self.head_scores_.tolist(),
            settings=Settings(
                k=self.k,
                scoring=self.scoring,
                tie_break=self.tie_break,
                head_order=self.head_order,
            ),
            tensors_sha256=_sha256(folder / TENSORS),
        )
        manifest.write(folder)
        self.manifest_ = manifest
        return folder

    def snapshot(self) -> SAVClassifier:
        """A copy whose selection stays as it is now: a pass in flight keeps the heads it started with
        while the page moves k or toggles heads on the classifier itself (`select` rebinds, never edits)."""
        return copy.copy(self)

    @classmethod
    def load(cls, folder: str | Path) -> SAVClassifier:
        """Reads a saved folder; the validated manifest becomes `manifest_`. Refuses altered files."""
        folder = Path(folder)
        manifest = Manifest.read(folder)
        tensor_path = folder / TENSORS
        if not tensor_path.is_file():
            raise ClassifierFileError(f"{folder} has no {TENSORS}")
        if _sha256(tensor_path) != manifest.tensors_sha256:
            raise ClassifierFileError(f"{tensor_path} does not match its manifest (the file was changed or damaged)")
        try:
            tensors = load_file(tensor_path)
        except (SafetensorError, OSError) as error:
            raise ClassifierFileError(f"{tensor_path} is not a readable safetensors file ({error})") from None
        settings = manifest.settings
        clf = cls(k=settings.k, scoring=settings.scoring, tie_break=settings.tie_break, head_order=settings.head_order)
        clf.encoding = manifest.encoding
        clf.classes_ = list(manifest.labels)
        clf.layout_ = manifest.layout
        try:
            clf.class_means_ = [tensors[f"class_means.layer{layer}"] for layer in clf.layout_.layers]
            clf.support_labels_ = tensors["support_labels"]
            clf.loo_similarities_ = tensors["loo_similarities"]
            clf.in_sample_scores_ = tensors["in_sample_scores"]
            clf.loo_scores_ = tensors["loo_scores"]
            if "in_sample_margins" in tensors or settings.head_order == "margin":
                clf.in_sample_margins_, clf.loo_margins_ = tensors["in_sample_margins"], tensors["loo_margins"]
            else:  # saved before margins were kept: the (layer, head) order never reads them
                clf.in_sample_margins_ = clf.loo_margins_ = torch.zeros_like(clf.in_sample_scores_)
        except KeyError as missing:
            raise ClassifierFileError(f"{tensor_path} lacks tensor {missing}") from None
        _check_tensors(clf, tensor_path)
        if not torch.allclose(clf.head_scores_, torch.tensor(manifest.head_scores, dtype=clf.head_scores_.dtype), atol=1e-5):
            raise ClassifierFileError(f"{folder}: the manifest's head scores differ from the stored tensors")
        clf.select(heads=manifest.selected)
        clf.manifest_ = manifest
        return clf

    # ----------------------------------------------------------------------------- checks
    def _check_fitted(self, during_fit: bool = False) -> None:
        needed = "class_means_" if during_fit else "selected_"
        if not hasattr(self, needed):
            raise RuntimeError("this SAVClassifier is not fitted yet: call fit() or load() first")


def _check_tensors(clf: SAVClassifier, path: Path) -> None:
    """Shapes, dtypes and finiteness: a resealed file with float64 or NaN means would load and then fail
    at every classification, or classify silently by NaN."""
    n_classes, n_heads = len(clf.classes_), clf.layout_.n_heads
    floats = {
        "class means": clf.class_means_,
        "leave-one-out similarities": [clf.loo_similarities_],  # -inf where an example is alone in its class
        "head scores": [clf.in_sample_scores_, clf.loo_scores_],
        "head margins": [clf.in_sample_margins_, clf.loo_margins_],  # -inf likewise
    }
    for name, tensors in floats.items():
        for tensor in tensors:
            if tensor.dtype != torch.float32:
                raise ClassifierFileError(f"{path}: {name} are {str(tensor.dtype).removeprefix('torch.')}; a classifier stores float32")
            finite = torch.isfinite(tensor) if name in ("class means", "head scores") else ~torch.isnan(tensor)
            if not bool(finite.all()):
                raise ClassifierFileError(f"{path}: {name} hold NaN or infinite values")
    if clf.support_labels_.dtype != torch.int64:
        raise ClassifierFileError(f"{path}: support labels are {str(clf.support_labels_.dtype).removeprefix('torch.')}; expected int64")
    for block, means in zip(clf.layout_.blocks, clf.class_means_):
        if tuple(means.shape) != (n_classes, block.n_heads, block.head_dim):
            raise ClassifierFileError(
                f"{path}: class means of layer {block.layer} have shape {tuple(means.shape)}; "
                f"expected {(n_classes, block.n_heads, block.head_dim)}"
            )
    labels = clf.support_labels_
    if labels.dim() != 1 or (labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < n_classes):
        raise ClassifierFileError(f"{path}: support labels must be class indices below {n_classes}")
    if tuple(clf.loo_similarities_.shape) != (labels.numel(), n_heads, n_classes) or clf.in_sample_scores_.shape != (n_heads,):
        raise ClassifierFileError(f"{path}: stored similarities or scores do not match the manifest's heads and labels")
    if clf.loo_scores_.shape != (n_heads,) or clf.in_sample_margins_.shape != (n_heads,) or clf.loo_margins_.shape != (n_heads,):
        raise ClassifierFileError(f"{path}: stored leave-one-out scores or head margins do not match the manifest's heads")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
