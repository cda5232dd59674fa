"""The left column: the model, and the support set (example tasks, uploads, labeled images, label edits).

handlers = SupportHandlers(default_model)
session, table, gallery, question, status = handlers.load_example("colour", None)
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import gradio as gr

from ..checks import clean_label
from ..data import Example, load_examples, open_image
from ..errors import DataError
from ..models import EXAMPLES_DIR
from .common import Handlers, example_tasks, file_paths, md, ui_errors
from .registry import ModelKey, check_allowed
from .session import MAX_SUPPORT, Session
from .uploads import examples_from_uploads

DTYPE_CHOICES = ("default", "float32", "bfloat16", "float16")


def support_views(session: Session, status: str):
    """(session, table rows, gallery, question, status) for the support set as it stands."""
    rows = [[i + 1, e.name, e.label or "", e.question or "(shared question)"] for i, e in enumerate(session.support)]
    gallery = [(str(e.images[0]), e.label or "") for e in session.support[:200] if isinstance(e.images[0], (str, Path))]
    counts: dict[str, int] = {}
    for e in session.support:
        counts[e.label or "?"] = counts.get(e.label or "?", 0) + 1
    summary = ", ".join(f"{md(c)}: {n}" for c, n in sorted(counts.items()))
    head = f"**{len(session.support)} examples** in {len(counts)} classes ({summary})" if session.support else "No support examples yet."
    return session, rows, gallery, session.question, f"{head}\n\n{status}".strip()


def uniform_question(examples: Sequence[Example]) -> tuple[list[Example], str | None, int]:
    """If every row asks the same question, it becomes the editable default (rows keep none);
    otherwise rows keep their own. Returns (examples, shared question, rows keeping their own)."""
    questions = {e.question for e in examples}
    if len(questions) == 1 and None not in questions:
        shared = questions.pop()
        return [replace(e, question=None) for e in examples], shared, 0
    return list(examples), None, sum(e.question is not None for e in examples)


class SupportHandlers(Handlers):
    @ui_errors
    def choose_model(self, model_id: str, dtype: str, revision: str, session: Session | None, progress=gr.Progress()):
        """Loads the chosen model for this session only (other sessions keep theirs).

        dtype: "default" (float32 on CPU, bfloat16 on a GPU), "float32", "bfloat16" or "float16";
        revision: a hub branch, tag or commit, or empty for the latest.
        """
        session = self.session(session)
        if dtype not in DTYPE_CHOICES:
            raise DataError(f"unknown dtype {dtype!r}; expected one of {list(DTYPE_CHOICES)}")
        key = ModelKey(check_allowed(model_id, self.default_model), (revision or "").strip() or None, None if dtype == "default" else dtype)
        progress(0, desc=f"loading {key.model_id}")
        loaded = self.registry.get(key)
        if session.fit is not None and session.fit.model_key != key:
            session.forget_fits()
        session.model_key = key
        weights = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
        return session, (
            f"Model **{md(key.model_id)}** ({weights}, {md(loaded.revision[:24])}): "
            f"{loaded.n_layers} layers, {loaded.layout.n_heads} heads ({type(loaded.model).__name__})."
        )

    def _set_support(self, session: Session, examples: list[Example], source: str, task: str | None = None):
        if len(examples) > MAX_SUPPORT:
            raise DataError(f"the support set has {len(examples)} examples; the limit here is {MAX_SUPPORT}")
        examples, shared, own = uniform_question(examples)
        session.support = examples
        session.example_task = task
        if shared:
            session.question = shared
        note = f"{own} rows keep their own question; the question box applies to the others." if own else ""
        return support_views(session, f"Loaded from {md(source)}. {note}".strip())

    @ui_errors
    def load_example(self, task: str, session: Session | None):
        session = self.session(session)
        if task not in example_tasks():
            raise DataError(f"no example task named {task!r}; choose one of {example_tasks()}")
        return self._set_support(session, load_examples(EXAMPLES_DIR / task / "support.jsonl"), f"example task '{task}'", task)

    @ui_errors
    def upload_support(self, files, session: Session | None):
        session = self.session(session)
        examples = examples_from_uploads(file_paths(files), session.subdir("support"))
        return self._set_support(session, examples, ", ".join(p.name for p in file_paths(files))[:200])

    @ui_errors
    def add_images(self, files, label: str, session: Session | None):
        """Adds uploaded images to the support set, all with one label."""
        session = self.session(session)
        paths = file_paths(files)
        if not paths:
            raise DataError("no images: choose one or more image files first")
        if label is None or not str(label).strip():
            raise DataError(f"unlabeled images: type a label for the {len(paths)} image(s) before adding them")
        clean = clean_label(label, "the label box")
        if len(session.support) + len(paths) > MAX_SUPPORT:
            raise DataError(f"the support set would hold {len(session.support) + len(paths)} examples; the limit here is {MAX_SUPPORT}")
        folder = session.subdir("images")
        added = []
        for path in paths:
            open_image(path)  # refuses non-images and damaged files by name, before anything is kept
            target = folder / f"{len(list(folder.iterdir())):05d}{path.suffix.lower()}"
            shutil.copyfile(path, target)
            added.append(Example((target,), None, clean))
        if clean != label:
            gr.Warning(html.escape(f"label {label!r} had stray spaces; used {clean!r}", quote=False))
        session.support = session.support + added
        session.example_task = None
        return (*support_views(session, f"Added {len(added)} image(s) labeled '{md(clean)}'."), None, "")

    @ui_errors
    def edit_labels(self, table, session: Session | None):
        """Applies labels typed into the support table (column "label"), one per row."""
        session = self.session(session)
        rows = table.values.tolist() if hasattr(table, "values") else (table or {}).get("data", [])
        if len(rows) != len(session.support):
            raise DataError(
                f"the table has {len(rows)} rows; the support set has {len(session.support)} examples (rows cannot be added here)"
            )
        edited, trimmed = [], []
        for number, (row, example) in enumerate(zip(rows, session.support), start=1):
            typed = "" if row[2] is None else str(row[2])
            if not typed.strip():
                raise DataError(f"unlabeled image in row {number} ({example.name}): type a label")
            if typed != typed.strip():
                trimmed.append(typed)
            edited.append(replace(example, label=clean_label(typed, f"row {number}")))
        if trimmed:
            gr.Warning(html.escape(f"label {trimmed[0]!r} had stray spaces; they were removed", quote=False))
        changed = sum(a.label != b.label for a, b in zip(edited, session.support))
        session.support = edited
        return support_views(session, f"{changed} label(s) changed.")

    @ui_errors
    def clear_support(self, session: Session | None):
        session = self.session(session)
        session.support = []
        session.example_task = None
        return support_views(session, "Cleared.")
