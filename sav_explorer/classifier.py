"""The SAV classifier: scikit-learn style fit / predict over captured head activations.

    clf = SAVClassifier(k=20).fit(activations, labels)       # activations: HeadActivations
    clf.predict(query_activations)                           # ['red', ...]
    clf.save("my-classifier", model_id=..., revision=..., question=...)

`fit` keeps the class means of *every* head, so `select` can change k or the head set at once,
without the model. Saved folders are a JSON manifest plus a safetensors file; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import method
from .capture import HeadActivations
from .errors import ClassifierFileError, DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"


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
    tie_break: "similarity" or "rank" (see `method.vote`).
    """

    def __init__(self, k: int = 20, scoring: method.Scoring = "in-sample", tie_break: method.TieBreak = "similarity"):
        self.k = k
        self.scoring = scoring
        self.tie_break = tie_break

    # ----------------------------------------------------------------------------- fitting
    def fit(self, activations: HeadActivations, labels: Sequence[str]) -> "SAVClassifier":
        if self.scoring not in ("in-sample", "loo"):
            raise DataError(f"unknown scoring {self.scoring!r}; expected 'in-sample' or 'loo'")
        if self.tie_break not in ("similarity", "rank"):
            raise DataError(f"unknown tie break {self.tie_break!r}; expected 'similarity' or 'rank'")
        labels = [str(label).strip() for label in labels]
        if any(not label for label in labels):
            raise DataError("empty label in the support set")
        if len(labels) != activations.n_examples:
            raise DataError(f"expected one label per example ({activations.n_examples}); got {len(labels)}")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise DataError(f"need at least 2 classes; got {len(classes)}: {', '.join(repr(c) for c in classes)}")
        counts = {c: labels.count(c) for c in classes}
        if self.scoring == "loo" and min(counts.values()) < 2:
            lonely = [c for c, n in counts.items() if n < 2]
            raise DataError(f"leave-one-out scoring needs at least 2 examples per class; {lonely[0]!r} has 1")
        self.classes_ = classes
        self.heads_ = [(site.layer, h) for site in activations.sites for h in range(site.n_heads)]
        self.head_sizes_ = [site.head_dim for site in activations.sites for _ in range(site.n_heads)]
        self.layer_blocks_ = [(site.layer, site.n_heads, site.head_dim) for site in activations.sites]
        self._check_k(self.k)
        targets = torch.tensor([classes.index(label) for label in labels])
        self.support_labels_ = targets
        self.class_means_ = [method.class_means(block, targets, len(classes)) for block in activations.blocks]
        in_sample = self.similarities_from_blocks(activations.blocks)
        self.loo_similarities_ = torch.cat([method.leave_one_out_cosine(b, targets, len(classes)) for b in activations.blocks], 1)
        self.in_sample_scores_ = method.head_scores(in_sample, targets)
        self.loo_scores_ = method.head_scores(self.loo_similarities_, targets)
        self.selected_ = method.select_heads(self.head_scores_, self.k)
        return self

    @property
    def head_scores_(self) -> torch.Tensor:
        """The scores that rank heads, per the `scoring` setting: (n_heads,)."""
        self._check_fitted(during_fit=True)
        return self.in_sample_scores_ if self.scoring == "in-sample" else self.loo_scores_

    def select(self, k: int | None = None, heads: Sequence[tuple[int, int]] | None = None) -> "SAVClassifier":
        """Replaces the selection: the top k heads, or exactly the given (layer, head) pairs (best first)."""
        self._check_fitted(during_fit=True)
        if heads is not None:
            index = {head: i for i, head in enumerate(self.heads_)}
            unknown = [h for h in heads if tuple(h) not in index]
            if unknown:
                raise DataError(f"no such head(s) in this model: {unknown[:5]}")
            if not heads:
                raise DataError("select at least one head")
            self.selected_ = torch.tensor([index[tuple(h)] for h in heads])
            self.k = len(heads)
        else:
            k = self.k if k is None else k
            self._check_k(k)
            self.k = k
            self.selected_ = method.select_heads(self.head_scores_, k)
        return self

    @property
    def selected_heads(self) -> list[tuple[int, int]]:
        return [self.heads_[i] for i in self.selected_.tolist()]

    # ----------------------------------------------------------------------------- predicting
    def similarities_from_blocks(self, blocks: Sequence[torch.Tensor], layers: Sequence[int] | None = None) -> torch.Tensor:
        """Cosine to every class mean for the heads of the given blocks: (n, n_heads_of_blocks, n_classes).

        `layers` names the layer of each block when only some layers were captured.
        """
        self._check_fitted(during_fit=True)
        means = {layer: m for (layer, _, _), m in zip(self.layer_blocks_, self.class_means_)}
        layers = layers if layers is not None else [layer for layer, _, _ in self.layer_blocks_]
        return torch.cat([method.cosine_to_means(block, means[layer]) for block, layer in zip(blocks, layers)], 1)

    def needed_layers(self) -> list[int]:
        """Layers that hold a selected head: the only ones a prediction must run."""
        return sorted({self.heads_[i][0] for i in self.selected_.tolist()})

    def _selected_similarities(self, activations: HeadActivations) -> torch.Tensor:
        """(n, k, n_classes) for the selected heads, from activations of at least the needed layers."""
        captured = [site.layer for site in activations.sites]
        missing = set(self.needed_layers()) - set(captured)
        if missing:
            raise DataError(f"activations lack layer(s) {sorted(missing)} that selected heads sit in")
        sims = self.similarities_from_blocks(activations.blocks, captured)
        position = {}
        offset = 0
        for site in activations.sites:
            for h in range(site.n_heads):
                position[(site.layer, h)] = offset + h
            offset += site.n_heads
        columns = torch.tensor([position[self.heads_[i]] for i in self.selected_.tolist()])
        return sims[:, columns]

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
                HeadVote(layer, head, self.classes_[int(sims[row, j].argmax())], {c: round(float(s), 6) for c, s in zip(self.classes_, sims[row, j])})
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

    # ----------------------------------------------------------------------------- files
    def save(self, folder: str | Path, *, model_id: str, revision: str, question: str | None) -> Path:
        """Writes `manifest.json` and `tensors.safetensors` into `folder` (created if needed)."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"class_means.layer{layer}": means.contiguous() for (layer, _, _), means in zip(self.layer_blocks_, self.class_means_)}
        tensors["support_labels"] = self.support_labels_.to(torch.int64)
        tensors["loo_similarities"] = self.loo_similarities_.contiguous()
        tensors["in_sample_scores"] = self.in_sample_scores_
        tensors["loo_scores"] = self.loo_scores_
        save_file(tensors, folder / TENSORS)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model": {"id": model_id, "revision": revision},
            "question": question,
            "labels": self.classes_,
            "heads": [list(h) for h in self.heads_],
            "head_sizes": self.head_sizes_,
            "selected": [list(h) for h in self.selected_heads],
            "head_scores": [round(float(s), 6) for s in self.head_scores_],
            "settings": {"k": self.k, "scoring": self.scoring, "tie_break": self.tie_break},
            "tensors_sha256": _sha256(folder / TENSORS),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> tuple["SAVClassifier", dict]:
        """Reads a saved folder; returns the classifier and its manifest. Refuses altered files."""
        folder = Path(folder)
        manifest = _read_manifest(folder)
        tensor_path = folder / TENSORS
        if not tensor_path.is_file():
            raise ClassifierFileError(f"{folder} has no {TENSORS}")
        if _sha256(tensor_path) != manifest["tensors_sha256"]:
            raise ClassifierFileError(f"{tensor_path} does not match its manifest (the file was changed or damaged)")
        try:
            tensors = load_file(tensor_path)
        except (SafetensorError, OSError) as error:
            raise ClassifierFileError(f"{tensor_path} is not a readable safetensors file ({error})") from None
        settings = manifest["settings"]
        clf = cls(k=settings["k"], scoring=settings["scoring"], tie_break=settings["tie_break"])
        clf.classes_ = manifest["labels"]
        clf.heads_ = [tuple(h) for h in manifest["heads"]]
        clf.head_sizes_ = manifest["head_sizes"]
        blocks: dict[int, list[int]] = {}
        for (layer, _), size in zip(clf.heads_, clf.head_sizes_):
            blocks.setdefault(layer, []).append(size)
        clf.layer_blocks_ = [(layer, len(sizes), sizes[0]) for layer, sizes in blocks.items()]
        try:
            clf.class_means_ = [tensors[f"class_means.layer{layer}"] for layer, _, _ in clf.layer_blocks_]
            clf.support_labels_ = tensors["support_labels"]
            clf.loo_similarities_ = tensors["loo_similarities"]
            clf.in_sample_scores_ = tensors["in_sample_scores"]
            clf.loo_scores_ = tensors["loo_scores"]
        except KeyError as missing:
            raise ClassifierFileError(f"{tensor_path} lacks tensor {missing}") from None
        n_classes, n_heads = len(clf.classes_), len(clf.heads_)
        for (layer, heads, size), means in zip(clf.layer_blocks_, clf.class_means_):
            if tuple(means.shape) != (n_classes, heads, size):
                raise ClassifierFileError(f"class means of layer {layer} have shape {tuple(means.shape)}; expected {(n_classes, heads, size)}")
        if clf.loo_similarities_.shape[1:] != (n_heads, n_classes) or clf.in_sample_scores_.shape != (n_heads,):
            raise ClassifierFileError("stored similarities or scores do not match the manifest's heads and labels")
        clf.select(heads=[tuple(h) for h in manifest["selected"]])
        return clf, manifest

    # ----------------------------------------------------------------------------- checks
    def _check_k(self, k: int) -> None:
        if not isinstance(k, int) or not 1 <= k <= len(self.heads_):
            raise DataError(f"k must be between 1 and the number of heads ({len(self.heads_)}); got {k}")

    def _check_fitted(self, during_fit: bool = False) -> None:
        needed = "class_means_" if during_fit else "selected_"
        if not hasattr(self, needed):
            raise RuntimeError("this SAVClassifier is not fitted yet: call fit() or load() first")


def check_matches_model(manifest: dict, revision: str, heads: Sequence[tuple[int, int]], head_sizes: Sequence[int]) -> None:
    """Refuses a classifier made for another model: the head layout and the revision must agree."""
    saved_heads = [tuple(h) for h in manifest["heads"]]
    if saved_heads != list(heads) or list(manifest["head_sizes"]) != list(head_sizes):
        raise ClassifierFileError(
            f"this classifier was made for {manifest['model']['id']!r}, whose heads differ from the loaded model's "
            f"({len(saved_heads)} heads saved, {len(heads)} in the model)"
        )
    saved = manifest["model"].get("revision")
    if saved and revision and saved != "unknown" and revision != "unknown" and saved != revision:
        raise ClassifierFileError(
            f"this classifier was made for {manifest['model']['id']!r} at revision {saved}; the loaded model is at revision {revision}"
        )


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ClassifierFileError(f"classifier folder not found: {folder}")
    if not path.is_file():
        raise ClassifierFileError(f"{folder} has no {MANIFEST}: not a saved classifier")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClassifierFileError(f"{path} is not valid JSON ({error})") from None
    required = {"format_version": int, "model": dict, "labels": list, "heads": list, "head_sizes": list, "selected": list, "settings": dict, "tensors_sha256": str}
    for key, kind in required.items():
        if not isinstance(manifest.get(key) if isinstance(manifest, dict) else None, kind):
            raise ClassifierFileError(f"{path} lacks {key!r} or it has the wrong type")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ClassifierFileError(f"{path} has format version {manifest['format_version']}; this version of SAV Explorer reads {FORMAT_VERSION}")
    if len(manifest["heads"]) != len(manifest["head_sizes"]) or len(manifest["labels"]) < 2:
        raise ClassifierFileError(f"{path} is inconsistent: heads and head sizes differ in number, or fewer than 2 labels")
    settings = manifest["settings"]
    if settings.get("scoring") not in ("in-sample", "loo") or settings.get("tie_break") not in ("similarity", "rank") or not isinstance(settings.get("k"), int):
        raise ClassifierFileError(f"{path} has invalid settings: {settings}")
    try:
        manifest["heads"] = [(int(layer), int(head)) for layer, head in manifest["heads"]]
        manifest["selected"] = [(int(layer), int(head)) for layer, head in manifest["selected"]]
    except (TypeError, ValueError):
        raise ClassifierFileError(f"{path}: heads must be [layer, head] pairs") from None
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
