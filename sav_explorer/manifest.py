"""A saved classifier's manifest: what it was made from and how it votes, read and written here only.

    manifest = Manifest.read(folder)        # validated field by field; refuses edited files
    manifest.check_matches(loaded.model_id, loaded.revision, loaded.layout)
    manifest.write(folder)

Format 2 adds `manifest_sha256` (a digest of every other field, so an edit is refused: this
catches accidents and casual edits, not a forger who recomputes it) and the settings that later
features need (`head_order`, `max_image_tokens`). Format 3 records the fit's whole `Encoding`
(question, pixel cap, image-token budget, video frames) in place of the question and the budget.
Formats 1 and 2 are still read, with the defaults they ran under: their question and budget, no
pixel cap (images as given) and the processor's own video sampling.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from .encoding import Encoding
from .errors import ClassifierFileError, DataError
from .heads import Head, HeadLayout
from .method import HeadOrder, Scoring, TieBreak

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Settings:
    k: int  # how many heads vote (the size of the selection)
    scoring: Scoring = "in-sample"
    tie_break: TieBreak = "similarity"
    head_order: HeadOrder = "layer-head"  # order within tied head scores


@dataclass(frozen=True)
class Manifest:
    model_id: str
    revision: str
    encoding: Encoding  # how the support set was read; every later pass reads examples the same way
    labels: list[str]  # sorted, unique
    layout: HeadLayout
    selected: list[Head]  # best-ranked first
    head_scores: list[float]  # the ranking scores, one per head of `layout` (for readers of the file)
    settings: Settings
    tensors_sha256: str
    format_version: int = field(default=FORMAT_VERSION)

    @property
    def question(self) -> str | None:
        return self.encoding.question

    # ------------------------------------------------------------------ writing
    def to_json(self) -> dict:
        body = {
            "format_version": FORMAT_VERSION,
            "model": {"id": self.model_id, "revision": self.revision},
            "encoding": self.encoding.to_json(),
            "labels": list(self.labels),
            "heads": [list(h) for h in self.layout.heads],
            "head_sizes": list(self.layout.sizes),
            "selected": [list(h) for h in self.selected],
            "head_scores": [round(float(s), 6) for s in self.head_scores],
            "settings": {
                "k": self.settings.k,
                "scoring": self.settings.scoring,
                "tie_break": self.settings.tie_break,
                "head_order": self.settings.head_order,
            },
            "tensors_sha256": self.tensors_sha256,
        }
        return {**body, "manifest_sha256": _digest(body)}

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    # ------------------------------------------------------------------ reading
    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """Reads and validates `manifest.json`; every refusal names the field at fault."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not folder.is_dir():
            raise ClassifierFileError(f"classifier folder not found: {folder}")
        if not path.is_file():
            raise ClassifierFileError(f"{folder} has no {MANIFEST}: not a saved classifier")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ClassifierFileError(f"{path} is not valid JSON ({error})") from None
        except RecursionError:
            raise ClassifierFileError(f"{path} is nested too deeply to be a manifest") from None
        return _parse(raw, path)

    def check_matches(self, model_id: str, revision: str, layout: HeadLayout) -> None:
        """Refuses a classifier made for another model: the head layout, and the id or the weights, must agree."""
        if self.layout != layout:
            raise ClassifierFileError(
                f"this classifier was made for {self.model_id!r}, whose heads differ from the loaded model's "
                f"({self.layout.n_heads} heads saved, {layout.n_heads} in the model)"
            )
        known = {self.revision, revision}.isdisjoint({"", "unknown"})
        if known and self.revision == revision:
            return  # the same weights, wherever they were loaded from
        if model_id != self.model_id:
            raise ClassifierFileError(f"this classifier was made for {self.model_id!r}; the loaded model is {model_id!r}")
        if known:
            raise ClassifierFileError(
                f"this classifier was made for {self.model_id!r} at revision {self.revision}; the loaded model is at revision {revision}"
            )


def _digest(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _parse(raw: object, path: Path) -> Manifest:
    def fail(name: str, problem: str) -> ClassifierFileError:
        return ClassifierFileError(f"{path}: field {name!r} {problem}")

    if not isinstance(raw, dict):
        raise ClassifierFileError(f"{path}: expected a JSON object; got {type(raw).__name__}")
    version = raw.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise fail("format_version", f"is {version!r}; this version of SAV Explorer reads {', '.join(map(str, READABLE_VERSIONS))}")
    if version >= 2:
        stored = raw.get("manifest_sha256")
        body = {key: value for key, value in raw.items() if key != "manifest_sha256"}
        if not isinstance(stored, str) or stored != _digest(body):
            raise fail("manifest_sha256", "does not match the manifest: the file was edited or damaged")

    model = raw.get("model")
    if not isinstance(model, dict) or not _text(model.get("id")):
        raise fail("model", "must be an object with a non-empty 'id'")
    if not isinstance(model.get("revision"), str):
        raise fail("model", "must have a 'revision' string")
    if version >= 3:
        try:
            encoding = Encoding.from_json(raw.get("encoding"))
        except (DataError, TypeError) as error:
            raise fail("encoding", f"is not an encoding ({error})") from None
    else:
        question = raw.get("question")
        if question is not None and not isinstance(question, str):
            raise fail("question", f"must be text or null; got {type(question).__name__}")
        budget = (raw.get("settings") or {}).get("max_image_tokens") if isinstance(raw.get("settings"), dict) else None
        if budget is not None and (not _whole(budget) or budget < 1):
            raise fail("settings.max_image_tokens", f"must be a positive whole number or null; got {budget!r}")
        encoding = Encoding(question=question, max_image_tokens=budget)

    labels = raw.get("labels")
    if not isinstance(labels, list) or not all(_text(label) and label == label.strip() for label in labels):
        raise fail("labels", "must be a list of non-empty strings without surrounding spaces")
    if len(set(labels)) != len(labels) or labels != sorted(labels) or len(labels) < 2:
        raise fail("labels", f"must be at least 2 unique labels in sorted order; got {labels[:10]!r}")

    heads = _head_list(raw.get("heads"), fail, "heads")
    sizes = raw.get("head_sizes")
    if not isinstance(sizes, list) or not all(_whole(s) and s > 0 for s in sizes):
        raise fail("head_sizes", "must be a list of positive whole numbers")
    if len(set(heads)) != len(heads):
        raise fail("heads", "lists a head twice")
    try:
        layout = HeadLayout.from_heads(heads, sizes)
    except ValueError as error:
        raise fail("heads", f"do not form a head layout ({error})") from None

    selected = _head_list(raw.get("selected"), fail, "selected")
    if not selected:
        raise fail("selected", "must name at least one head")
    if len(set(selected)) != len(selected):
        raise fail("selected", "lists a head twice")
    outside = [h for h in selected if h not in layout]
    if outside:
        raise fail("selected", f"names heads outside the layout: {outside[:5]}")

    scores = raw.get("head_scores")
    if not isinstance(scores, list) or len(scores) != layout.n_heads or not all(_number(s) for s in scores):
        raise fail("head_scores", f"must be {layout.n_heads} numbers, one per head")

    settings = _settings(raw.get("settings"), layout.n_heads, fail)
    digest = raw.get("tensors_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise fail("tensors_sha256", "must be a SHA-256 hex digest")
    return Manifest(
        model["id"], model["revision"], encoding, labels, layout, selected, [float(s) for s in scores], settings, digest, version
    )


def _settings(raw: object, n_heads: int, fail) -> Settings:
    if not isinstance(raw, dict):
        raise fail("settings", "must be an object")
    k = raw.get("k")
    if not _whole(k) or not 1 <= k <= n_heads:
        raise fail("settings.k", f"must be a whole number from 1 to {n_heads}; got {k!r}")
    values = {}
    for name, kind, default in (("scoring", Scoring, None), ("tie_break", TieBreak, None), ("head_order", HeadOrder, "layer-head")):
        value = raw.get(name, default)
        if value not in get_args(kind):
            raise fail(f"settings.{name}", f"must be one of {list(get_args(kind))}; got {value!r}")
        values[name] = value
    return Settings(k=k, **values)


def _head_list(raw: object, fail, name: str) -> list[Head]:
    if not isinstance(raw, list) or not all(isinstance(h, list) and len(h) == 2 and all(_whole(x) and x >= 0 for x in h) for h in raw):
        raise fail(name, "must be a list of [layer, head] pairs of whole numbers")
    return [(h[0], h[1]) for h in raw]


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
