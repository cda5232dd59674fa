"""The left column: the model, and the support set (example tasks, uploads, labeled images, label edits).

    handlers = SupportHandlers(default_model)
    session, table, gallery, question, status = handlers.load_example("colour", None)

None of these handlers runs the model, except loading one.
"""

from __future__ import annotations

import html
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import gradio as gr

from ..checks import clean_label
from ..data import Example, load_examples, open_image
from ..errors import DataError
from ..models import EXAMPLES_DIR, model_location
from ..official import FORMATS
from .common import Handlers, example_tasks, file_paths, md, ui_errors
from .housekeeping import check_quota, prune_uploads, room_left
from .registry import ModelKey, check_allowed
from .session import MAX_IMAGES_PER_EXAMPLE, MAX_SUPPORT, Session
from .uploads import examples_from_uploads

DTYPE_CHOICES = ("default", "float32", "bfloat16", "float16")


def check_images_per_example(examples: Sequence[Example]) -> None:
    """Several images per row are allowed, within a cap: each image costs model time for everyone."""
    for example in examples:
        if len(example.images) > MAX_IMAGES_PER_EXAMPLE:
            raise DataError(f"{example.name} lists {len(example.images)} images; the limit is {MAX_IMAGES_PER_EXAMPLE} per example")


def model_line(registry, key) -> str:
    """ "Model X (float32, revision): 8 layers, 64 heads (Class), loaded in 0.4 s." for a loaded model."""
    loaded = registry.get(key)
    weights = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    seconds = registry.load_seconds.get(key)
    took = f", loaded in {seconds:.1f} s" if seconds is not None else ""
    return (
        f"Model **{md(key.model_id)}** ({weights}, {md(loaded.revision[:24])}): "
        f"{loaded.n_layers} layers, {loaded.layout.n_heads} heads ({type(loaded.model).__name__}{took})."
    )


def displayable(session: Session, image) -> str:
    """A path the browser can show: TIFF files get a PNG copy (browsers do not show TIFF)."""
    path = Path(image)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return str(path)
    preview = session.subdir("previews") / f"{abs(hash(str(path)))}.png"
    if not preview.exists():
        open_image(path).save(preview)
    return str(preview)


def support_views(session: Session, status: str):
    """(session, table rows, gallery, question, status) for the support set as it stands."""
    shared = session.question.strip() or "(none yet: type it in the question box)"
    rows = [[i + 1, e.name, e.label or "", e.question or shared] for i, e in enumerate(session.support)]
    gallery = [(displayable(session, e.images[0]), e.label or "") for e in session.support[:200] if isinstance(e.images[0], (str, Path))]
    counts: dict[str, int] = {}
    for e in session.support:
        counts[e.label or "?"] = counts.get(e.label or "?", 0) + 1
    summary = ", ".join(f"{md(c)}: {n}" for c, n in sorted(counts.items()))
    head = f"**{len(session.support)} examples** in {len(counts)} classes ({summary})" if session.support else "No support examples yet."
    return session, rows, gallery, session.question, f"{head}\n\n{status}\n\n{restored_note(session)}".strip()


def restored_note(session: Session) -> str:
    """When the current classifier was restored from a file: it came without a support set, so the one
    in the panel (and its question) is not the one it was fitted on."""
    fit = session.fit
    if fit is None or fit.examples:
        return ""
    where = "these examples and this question are not the ones it was fitted on" if session.support else "it came without its support set"
    return (
        f"*The current classifier was restored from a file: {where}; its question is in the Classify tab. "
        "Extract heads fits a new one on the support set here.*"
    )


def case_clashes(labels: Sequence[str]) -> list[list[str]]:
    """Groups of labels that differ only in case ("Red", "red"): each becomes a class of its own."""
    groups: dict[str, set[str]] = {}
    for label in labels:
        groups.setdefault(label.casefold(), set()).add(label)
    return [sorted(group) for group in groups.values() if len(group) > 1]


def warn_about_labels(session: Session) -> str:
    clashes = case_clashes([e.label for e in session.support if e.label])
    if not clashes:
        return ""
    text = "; ".join(", ".join(repr(label) for label in group) for group in clashes)
    message = f"labels that differ only in case are separate classes: {text}. Edit them in the table if they are one class."
    gr.Warning(html.escape(message, quote=False))
    return md(message)


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
        model_id = check_allowed(model_id, self.default_model)
        revision = (revision or "").strip() or None
        note = ""
        if revision and Path(model_location(model_id)).exists():  # a local folder has one version: its files
            note = f" The revision {md(revision)!s} was ignored: a local model has no other versions."
            revision = None
        key = ModelKey(model_id, revision, None if dtype == "default" else dtype)
        progress(0, desc=f"loading {key.model_id}")
        self.registry.get(key)
        if session.fit is not None and session.fit.model_key != key:
            session.forget_fits()
        session.model_key = key
        return session, model_line(self.registry, key) + note

    def support_status(self, session: Session | None) -> str:
        """The support panel's line after a restore (no model call)."""
        return support_views(self.session(session), "")[4]

    def support_changed(self) -> str:
        """The extraction's status line once the support set or the model changed: it spoke of the one before."""
        return ""

    def model_in_use(self, session: Session | None):
        """After a model failed to load: the list, dtype and revision show the model the session still uses
        (Extract uses it), and the model line says so."""
        session = self.session(session)
        key = session.model_key
        line = f"Still using {md(key.model_id)}: the model chosen could not be loaded. {self.model_status(session)}"
        return key.model_id, key.dtype or "default", key.revision or "", line

    def model_status(self, session: Session | None) -> str:
        """The model line after work that may have loaded the model (an extraction, a classification)."""
        session = self.session(session)
        key = session.model_key
        return model_line(self.registry, key) if key in self.registry else f"Model **{md(key.model_id)}** loads on first use."

    def _set_support(self, session: Session, examples: list[Example], source: str, task: str | None = None, skipped=()):
        if len(examples) > MAX_SUPPORT:
            raise DataError(f"the support set has {len(examples)} examples; the limit here is {MAX_SUPPORT}")
        check_images_per_example(examples)
        examples, shared, own = uniform_question(examples)
        session.support = examples
        session.example_task = task
        if shared:
            session.question = shared
        prune_uploads(session)
        notes = [f"Loaded from {md(source)}."]
        if own:
            notes.append(f"{own} rows keep their own question; the question box applies to the others.")
        if skipped:
            shown = "; ".join(md(item) for item in skipped[:10]) + (f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")
            notes.append(f"Skipped {len(skipped)} file(s): {shown}.")
        notes.append(warn_about_labels(session))
        return support_views(session, " ".join(n for n in notes if n))

    @ui_errors
    def load_example(self, task: str, session: Session | None):
        session = self.session(session)
        if task not in example_tasks():
            raise DataError(f"no example task named {task!r}; choose one of {example_tasks()}")
        return self._set_support(session, load_examples(EXAMPLES_DIR / task / "support.jsonl"), f"example task '{task}'", task)

    @ui_errors
    def upload_support(self, files, session: Session | None, data_format: str | None = "rows"):
        session = self.session(session)
        data_format = data_format or "rows"
        if data_format != "rows" and data_format.partition(":")[2].lower() not in FORMATS:
            raise DataError(f"unknown format {data_format!r}")
        examples, skipped = examples_from_uploads(
            file_paths(files), session.subdir("support"), room=room_left(session.workdir), data_format=data_format
        )
        source = ", ".join(p.name for p in file_paths(files))[:200]
        if data_format != "rows":  # what the engine will read: the template's final text, and the images in order
            first = examples[0]
            source += f" as {data_format}; first row: {len(first.images)} image(s), question {first.question!r}"
        return self._set_support(session, examples, source, skipped=skipped)

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
        for path in paths:
            open_image(path)  # refuses non-images and damaged files by name, before anything is kept
        with session.lock:  # two adds that arrive together both land
            check_quota(session.workdir, sum(p.stat().st_size for p in paths))
            folder = session.subdir("images")
            added = []
            for path in paths:
                target = folder / uuid.uuid4().hex[:12] / path.name  # the visitor's own file name, shown as such
                target.parent.mkdir()
                shutil.copyfile(path, target)
                added.append(Example((target,), None, clean))
            session.support = session.support + added
            session.example_task = None
        if clean != label:
            gr.Warning(html.escape(f"label {label!r} had stray spaces; used {clean!r}", quote=False))
        status = f"Added {len(added)} image(s) labeled '{md(clean)}'. {warn_about_labels(session)}"
        return (*support_views(session, status.strip()), None, "")

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
        return support_views(session, f"{changed} label(s) changed. {warn_about_labels(session)}".strip())

    @ui_errors
    def clear_support(self, session: Session | None):
        session = self.session(session)
        session.support = []
        session.example_task = None
        prune_uploads(session)
        return support_views(session, "Cleared.")
