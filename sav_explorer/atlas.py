"""An atlas of tasks across models: where each task's heads sit, by relative depth.

    sources = ["assets/examples/colour/support.jsonl", "assets/examples/shape/support.jsonl"]
    tasks = [Task.named_after(path, load_examples(path)) for path in sources]     # "colour", "shape"
    atlas = build_atlas(["sav-explorer/shapes-llava", "HuggingFaceTB/SmolVLM-256M-Instruct"], tasks)
    atlas.write(Path("atlas"))   # atlas.csv, atlas.json, atlas.html and every classifier

Every task is fitted on every model as `fit` fits it. A head's relative depth is its layer over the
model's last layer (`layer / (n_layers - 1)`): 0 the first layer, 1 the last, so that models of 8
and 30 layers share one axis. On Ray (`ray`
given), all the tasks of a model go through the cluster's actors as one dataset: each actor loads
the model once and captures examples of every task.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import plotly.graph_objects as go

from .analysis import accuracy_curve
from .capture import HeadActivations, capture_heads
from .checks import check_classes
from .classifier import SAVClassifier
from .data import Example, labels_of
from .encoding import Encoding, RunOptions
from .errors import DataError
from .heads import Head
from .models import load_model
from .pipeline import fit_activations

DEFAULT_K = 20


@dataclass(frozen=True)
class Task:
    name: str  # the data file's folder for support.* files, else its stem
    examples: list[Example]
    question: str | None = None

    @classmethod
    def named_after(cls, source: str | Path, examples: list[Example], question: str | None = None) -> Task:
        path = Path(source)
        name = path.parent.name if path.is_file() and path.stem == "support" else path.stem if path.is_file() else path.name
        return cls(name, examples, question)


def relative_depth(layer: int, n_layers: int) -> float:
    """0 for the first decoder layer, 1 for the last (0 for a one-layer model)."""
    return round(layer / (n_layers - 1), 4) if n_layers > 1 else 0.0


@dataclass(frozen=True)
class AtlasEntry:
    model: str
    task: str
    n: int
    k: int
    n_layers: int
    selected: list[Head]
    leave_one_out: float  # heads fixed, as `fit` reports it
    nested_leave_one_out: float | None  # heads re-chosen without each example (n <= 200)
    classifier: SAVClassifier
    revision: str  # the model's, for the saved classifier's manifest
    question: str | None

    @property
    def relative_depths(self) -> list[float]:
        return [relative_depth(layer, self.n_layers) for layer, _ in self.selected]

    def to_json(self) -> dict:
        depths = self.relative_depths
        return {
            "model": self.model,
            "task": self.task,
            "n": self.n,
            "k": self.k,
            "n_layers": self.n_layers,
            "selected": [list(h) for h in self.selected],
            "relative_depths": depths,
            "mean_relative_depth": round(sum(depths) / len(depths), 4),
            "leave_one_out_accuracy": self.leave_one_out,
            "nested_leave_one_out_accuracy": self.nested_leave_one_out,
        }


@dataclass
class Atlas:
    entries: list[AtlasEntry]

    def write(self, out: Path) -> list[Path]:
        """atlas.csv (one row per model and task), atlas.json, atlas.html (the plot) and classifiers/MODEL/TASK."""
        out.mkdir(parents=True, exist_ok=True)
        rows = [entry.to_json() for entry in self.entries]
        with open(out / "atlas.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["model", "task", "n", "k", "n_layers", "selected", "relative_depths", "mean_relative_depth", "loo", "nested_loo"]
            )
            for row in rows:
                writer.writerow(
                    [
                        *(row[key] for key in ("model", "task", "n", "k", "n_layers")),
                        " ".join(f"{layer}:{head}" for layer, head in row["selected"]),
                        " ".join(f"{d:.3f}" for d in row["relative_depths"]),
                        f"{row['mean_relative_depth']:.3f}",
                        f"{row['leave_one_out_accuracy']:.4f}",
                        "" if row["nested_leave_one_out_accuracy"] is None else f"{row['nested_leave_one_out_accuracy']:.4f}",
                    ]
                )
        (out / "atlas.json").write_text(json.dumps({"entries": rows}, indent=1))
        self.figure().write_html(out / "atlas.html", include_plotlyjs=True)
        for entry in self.entries:
            entry.classifier.save(
                out / "classifiers" / _folder_name(entry.model) / _folder_name(entry.task),
                model_id=entry.model,
                revision=entry.revision,
            )
        return [out / name for name in ("atlas.csv", "atlas.json", "atlas.html")]

    def figure(self) -> go.Figure:
        """Each task's selected heads by relative depth (x), one row per task, one colour per model."""
        fig = go.Figure()
        models = list(dict.fromkeys(e.model for e in self.entries))
        tasks = list(dict.fromkeys(e.task for e in self.entries))
        for index, model in enumerate(models):
            entries = [e for e in self.entries if e.model == model]
            xs = [d for e in entries for d in e.relative_depths]
            ys = [html.escape(e.task) for e in entries for _ in e.selected]
            text = [f"L{layer} H{head} of {e.n_layers} layers" for e in entries for layer, head in e.selected]
            fig.add_trace(
                go.Box(
                    x=xs,
                    y=ys,
                    name=html.escape(model),
                    orientation="h",
                    boxpoints="all",
                    jitter=0.6,
                    pointpos=0,
                    text=text,
                    hovertemplate="%{text}<br>relative depth %{x:.2f}<extra>%{fullData.name}</extra>",
                    offsetgroup=str(index),
                )
            )
        fig.update_layout(
            title="Where each task's heads sit: layer / number of layers",
            xaxis={"title": "relative depth", "range": [-0.02, 1.02]},
            yaxis={"title": "task", "categoryorder": "array", "categoryarray": [html.escape(t) for t in tasks]},
            boxmode="group",
            height=200 + 90 * len(tasks),
        )
        return fig


def _folder_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._") or "model"


def build_atlas(
    models: Sequence[str],
    tasks: Sequence[Task],
    *,
    k: int | None = None,
    batch_size: int = 8,
    encoding: Encoding | None = None,
    load=None,
    ray=None,
    spec=None,
    on_fit=None,
) -> Atlas:
    """Fits every task on every model (see the module's doc). `load(model_id)` gives a LoadedModel for a
    local run (default `load_model`); `ray` (distributed.RayOptions) runs the captures on a cluster instead, the actors loading
    `spec(model_id)` (a distributed.ModelSpec; default: the model's own dtype and device choice).
    `on_fit(model, task)` is told after each fit. Every task is read under `encoding` (pixel cap, image
    tokens, video frames), with the task's own question."""
    if not models or not tasks:
        raise DataError("an atlas needs at least one model and one task")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise DataError(f"two tasks share a name ({', '.join(sorted({n for n in names if names.count(n) > 1}))}); rename a data file")
    for task in tasks:
        check_classes(labels_of(task.examples))
    entries = []
    for model in models:
        encodings = [replace(encoding or Encoding(), question=task.question) for task in tasks]
        captured, model_id, revision, n_layers = _capture_tasks(model, tasks, encodings, batch_size, load, ray, spec)
        for task, task_encoding, activations in zip(tasks, encodings, captured):
            entries.append(_fit(model_id, revision, n_layers, task, task_encoding, activations, k))
            if on_fit is not None:
                on_fit(model, task.name)
    return Atlas(entries)


def _capture_tasks(model: str, tasks: Sequence[Task], encodings: Sequence[Encoding], batch_size, load, ray, spec):
    """Every task's support activations on one model: locally, or as one dataset on Ray (the questions
    resolved per task, so that one encoding without a question reads them all)."""
    if ray is None:
        loaded = (load or load_model)(model)
        run = RunOptions(batch_size=batch_size)
        captured = [capture_heads(loaded, t.examples, e, run) for t, e in zip(tasks, encodings)]
        return captured, loaded.model_id, loaded.revision, loaded.n_layers
    from .distributed import ModelSpec, capture_on_ray

    resolved = [Example(e.images, e.question_or(t.question), e.label) for t in tasks for e in t.examples]
    shared = replace(encodings[0], question=None)
    result = capture_on_ray(ray, (spec or ModelSpec)(model), resolved, shared, batch_size=batch_size)
    captured, start = [], 0
    for task in tasks:
        end = start + len(task.examples)
        whole = result.activations
        tokens = whole.image_tokens[start:end] if whole.image_tokens else None
        captured.append(HeadActivations(whole.layout, [block[start:end] for block in whole.blocks], tokens))
        start = end
    return captured, result.model_id, result.revision, result.n_layers


def _fit(model_id, revision, n_layers, task: Task, encoding: Encoding, activations, k) -> AtlasEntry:
    labels = labels_of(task.examples)
    k = min(k or DEFAULT_K, activations.layout.n_heads)
    clf = fit_activations(activations, labels, encoding, k=k)
    curve = accuracy_curve(clf, activations)
    nested = curve.nested_loo[k - 1] if curve.nested_loo else None
    question = task.question or task.examples[0].question
    loo = clf.leave_one_out_accuracy()
    return AtlasEntry(model_id, task.name, len(labels), k, n_layers, clf.selected_heads, loo, nested, clf, revision, question)
