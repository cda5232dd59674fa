"""Event handlers: each takes widget values plus the visitor's `Session` and returns widget values.

    explorer = Explorer(default_model="sav-explorer/shapes-llava")
    session, *views = explorer.load_example("colour", None)

Handlers call the library and format its results; SAV logic lives in the engine. Errors caused by
input (`SAVError`) become `gr.Error` here, at the UI edge, with user text HTML-escaped.
"""

from __future__ import annotations

import csv
import functools
import html
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import gradio as gr

from ..capture import CaptureCancelled
from ..classifier import SAVClassifier, check_matches_model
from ..data import Example, clean_label, labels_of, load_examples, open_image
from ..errors import ClassifierFileError, DataError, SAVError
from ..models import LoadedModel, generate_answers
from ..pipeline import evaluate, fit_examples, predict_examples, save_activations
from . import plots
from .registry import ModelKey, ModelRegistry, check_allowed
from .session import MAX_BATCH, MAX_CLASSIFY, MAX_PIXELS_CAP, MAX_SUPPORT, MAX_TEST, Session, cancel_flag
from .uploads import examples_from_uploads, extract_zip

log = logging.getLogger("sav_explorer.ui")
DTYPE_CHOICES = ("default", "float32", "bfloat16", "float16")
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")

try:  # ZeroGPU hardware on Hugging Face Spaces: model work runs under its GPU decorator
    import spaces  # type: ignore[import-not-found]

    gpu: Callable = spaces.GPU
except ImportError:  # anywhere else nothing changes

    def gpu(fn: Callable) -> Callable:
        return fn


def md(text: object) -> str:
    """User text for a Markdown widget: HTML-escaped and with Markdown punctuation made literal."""
    return html.escape(_MD_SPECIAL.sub(r"\\\1", str(text)), quote=False)


def ui_errors(fn: Callable) -> Callable:
    """Turns library errors into `gr.Error` (escaped); an unexpected failure gets one line too, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except SAVError as error:
            raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None
        except Exception as error:  # keep serving: one visitor's failure is reported to that visitor only
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(html.escape(f"unexpected {type(error).__name__}: {error}", quote=False), print_exception=False) from None

    return wrapper


def example_tasks() -> list[str]:
    return sorted(p.name for p in EXAMPLES_DIR.iterdir() if (p / "support.jsonl").is_file()) if EXAMPLES_DIR.is_dir() else []


def _paths(files) -> list[Path]:
    """File widget values (paths, or objects with `.name` / dicts with 'path') as paths."""
    if files is None:
        return []
    if not isinstance(files, (list, tuple)):
        files = [files]
    out = []
    for f in files:
        path = f.get("path") if isinstance(f, dict) else getattr(f, "name", f)
        if path:
            out.append(Path(path))
    return out


def _uniform_question(examples: Sequence[Example]) -> tuple[list[Example], str | None, int]:
    """If every row asks the same question, it becomes the editable default (rows keep none);
    otherwise rows keep their own. Returns (examples, shared question, rows keeping their own)."""
    questions = {e.question for e in examples}
    if len(questions) == 1 and None not in questions:
        shared = questions.pop()
        return [replace(e, question=None) for e in examples], shared, 0
    return list(examples), None, sum(e.question is not None for e in examples)


class Explorer:
    """The app's handlers, sharing one model registry. Blocks wire its methods to events."""

    def __init__(self, default_model: str, registry: ModelRegistry | None = None):
        self.default_model = default_model
        self.registry = registry or ModelRegistry()

    # ----------------------------------------------------------------------------- helpers
    def _session(self, session: Session | None) -> Session:
        if not isinstance(session, Session):
            session = Session.new()
        if session.model_key is None:
            session.model_key = ModelKey(self.default_model)
        return session

    def _model(self, session: Session, progress: gr.Progress | None = None) -> LoadedModel:
        key = session.model_key or ModelKey(self.default_model)
        if key not in self.registry and progress is not None:
            progress(0, desc=f"loading model {key.model_id}")
        return self.registry.get(key)

    def _support_views(self, session: Session, status: str):
        rows = [[i + 1, e.name, e.label or "", e.question or "(shared question)"] for i, e in enumerate(session.support)]
        gallery = [(str(e.images[0]), e.label or "") for e in session.support[:200] if isinstance(e.images[0], (str, Path))]
        counts: dict[str, int] = {}
        for e in session.support:
            counts[e.label or "?"] = counts.get(e.label or "?", 0) + 1
        summary = ", ".join(f"{md(c)}: {n}" for c, n in sorted(counts.items()))
        head = f"**{len(session.support)} examples** in {len(counts)} classes ({summary})" if session.support else "No support examples yet."
        return session, rows, gallery, session.question, f"{head}\n\n{status}".strip()

    def _explore_views(self, session: Session, status: str = ""):
        clf = session.clf
        figure = plots.head_heatmap(clf, session.n_layers)
        if clf is None:
            return session, figure, "", [], gr.update(choices=[], value=[]), gr.update(), status
        loo = clf.leave_one_out_accuracy()
        summary = (
            f"### Leave-one-out accuracy: **{loo:.3f}**\n"
            f"{len(clf.selected_heads)} heads vote · {len(clf.classes_)} classes · {int(clf.support_labels_.numel())} support examples. "
            "Each support example is classified by class means that leave it out; heads are not re-selected, so the estimate is slightly optimistic."
        )
        names = [f"L{layer} H{head}" for layer, head in clf.heads_]
        chosen = [f"L{layer} H{head}" for layer, head in clf.selected_heads]
        k = gr.update(maximum=len(clf.heads_), value=len(clf.selected_heads))
        return session, figure, summary, plots.selection_table(clf), gr.update(choices=names, value=chosen), k, status

    # ----------------------------------------------------------------------------- model
    @ui_errors
    def choose_model(self, model_id: str, dtype: str, revision: str, session: Session | None, progress=gr.Progress()):
        """Loads the chosen model for this session only (other sessions keep theirs).

        dtype: "default" (float32 on CPU, bfloat16 on a GPU), "float32", "bfloat16" or "float16";
        revision: a hub branch, tag or commit, or empty for the latest.
        """
        session = self._session(session)
        if dtype not in DTYPE_CHOICES:
            raise DataError(f"unknown dtype {dtype!r}; expected one of {list(DTYPE_CHOICES)}")
        key = ModelKey(check_allowed(model_id, self.default_model), (revision or "").strip() or None, None if dtype == "default" else dtype)
        progress(0, desc=f"loading {key.model_id}")
        loaded = self.registry.get(key)
        if session.fit_model is not None and session.fit_model != key:
            session.forget_fit()
        session.model_key = key
        session.n_layers = loaded.n_layers
        weights = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
        return session, (
            f"Model **{md(key.model_id)}** ({weights}, {md(loaded.revision[:24])}): "
            f"{loaded.n_layers} layers, {len(loaded.heads)} heads ({type(loaded.model).__name__})."
        )

    # ----------------------------------------------------------------------------- support set
    def _set_support(self, session: Session, examples: list[Example], source: str, task: str | None = None):
        if len(examples) > MAX_SUPPORT:
            raise DataError(f"the support set has {len(examples)} examples; the limit here is {MAX_SUPPORT}")
        examples, shared, own = _uniform_question(examples)
        session.support = examples
        session.support_source = source
        session.example_task = task
        if shared:
            session.question = shared
        note = f"{own} rows keep their own question; the question box applies to the others." if own else ""
        return self._support_views(session, f"Loaded from {md(source)}. {note}".strip())

    @ui_errors
    def load_example(self, task: str, session: Session | None):
        session = self._session(session)
        if task not in example_tasks():
            raise DataError(f"no example task named {task!r}; choose one of {example_tasks()}")
        return self._set_support(session, load_examples(EXAMPLES_DIR / task / "support.jsonl"), f"example task '{task}'", task)

    @ui_errors
    def upload_support(self, files, session: Session | None):
        session = self._session(session)
        examples = examples_from_uploads(_paths(files), session.subdir("support"))
        return self._set_support(session, examples, ", ".join(p.name for p in _paths(files))[:200])

    @ui_errors
    def add_images(self, files, label: str, session: Session | None):
        """Adds uploaded images to the support set, all with one label."""
        session = self._session(session)
        paths = _paths(files)
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
        session.support_source = "uploads"
        session.example_task = None
        return (*self._support_views(session, f"Added {len(added)} image(s) labeled '{md(clean)}'."), None, "")

    @ui_errors
    def edit_labels(self, table, session: Session | None):
        """Applies labels typed into the support table (column "label"), one per row."""
        session = self._session(session)
        rows = table.values.tolist() if hasattr(table, "values") else (table or {}).get("data", [])
        if len(rows) != len(session.support):
            raise DataError(f"the table has {len(rows)} rows; the support set has {len(session.support)} examples (rows cannot be added here)")
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
        return self._support_views(session, f"{changed} label(s) changed.")

    @ui_errors
    def clear_support(self, session: Session | None):
        session = self._session(session)
        session.support = []
        session.example_task = None
        return self._support_views(session, "Cleared.")

    # ----------------------------------------------------------------------------- extraction
    @ui_errors
    def extract(self, question: str, max_pixels: float, batch_size: float, k: float, scoring: str, session: Session | None, progress=gr.Progress()):
        """Runs the model once per support example and fits the classifier: the only slow step."""
        session = self._session(session)
        if not session.support:
            raise DataError("no support examples: load an example task, upload a zip or data file, or add labeled images")
        labels_of(session.support)
        max_pixels, batch_size = int(max_pixels), int(batch_size)
        if not 64 <= max_pixels <= MAX_PIXELS_CAP:
            raise DataError(f"max pixels must be between 64 and {MAX_PIXELS_CAP:,}; got {max_pixels:,}")
        if not 1 <= batch_size <= MAX_BATCH:
            raise DataError(f"batch size must be between 1 and {MAX_BATCH}; got {batch_size}")
        question = (question or "").strip() or session.question.strip() or None
        if question is None and any(e.question is None for e in session.support):
            raise DataError("no question: type the question to ask about every image")
        session.question = question or ""
        loaded = self._model(session, progress)
        k = max(1, min(int(k), len(loaded.heads)))
        flag = cancel_flag(session.id)
        flag.clear()
        total = len(session.support)
        progress((0, total), desc="extracting heads", unit="examples")
        try:
            clf, activations = fit_examples(
                loaded, session.support, k=k, scoring=scoring, question=question, batch_size=batch_size, max_pixels=max_pixels,
                on_batch=lambda done, n: progress((done, n), desc="extracting heads", unit="examples"), should_stop=flag.is_set,
            )
        except CaptureCancelled as stopped:
            return self._explore_views(session, f"Extraction {md(stopped)}; the previous result (if any) is kept.")
        session.clf, session.activations = clf, activations
        session.fit_labels = labels_of(session.support)
        session.fit_question = question
        session.fit_model = session.model_key
        session.fit_revision = loaded.revision
        session.fit_task = session.example_task
        session.n_layers = loaded.n_layers
        session.predictions = []
        return self._explore_views(session, f"Extracted {len(loaded.heads)} heads in {loaded.n_layers} layers from {total} examples with {md(loaded.model_id)}.")

    def cancel(self, session: Session | None) -> str:
        if isinstance(session, Session):
            cancel_flag(session.id).set()
        return "Cancelling after the current batch…"

    # ----------------------------------------------------------------------------- re-scoring (no model call)
    def _fitted(self, session: Session | None) -> tuple[Session, SAVClassifier]:
        session = self._session(session)
        if session.clf is None:
            raise DataError("extract heads first (or restore a saved classifier)")
        return session, session.clf

    @ui_errors
    def set_k(self, k: float, session: Session | None):
        session, clf = self._fitted(session)
        clf.select(k=int(k))
        return self._explore_views(session)

    @ui_errors
    def toggle_head(self, cell: str, session: Session | None):
        """`cell` is "layer,head" (anything after a second comma is ignored: the browser adds a nonce)."""
        session, clf = self._fitted(session)
        try:
            layer, head = (int(x) for x in str(cell).split(",")[:2])
        except ValueError:
            raise DataError(f"expected 'layer,head'; got {cell!r}") from None
        if (layer, head) not in clf.heads_:
            raise DataError(f"no head {head} in layer {layer} of this model")
        selected = clf.selected_heads
        if (layer, head) in selected:
            if len(selected) == 1:
                raise DataError("at least one head must stay selected")
            selected = [h for h in selected if h != (layer, head)]
        else:
            selected = selected + [(layer, head)]
        clf.select(heads=selected)
        return self._explore_views(session)

    @ui_errors
    def set_heads(self, names: Sequence[str], session: Session | None):
        """Replaces the selection with heads named "L<layer> H<head>"."""
        session, clf = self._fitted(session)
        heads = []
        for name in names or []:
            match = re.fullmatch(r"\s*L(\d+)\s*H(\d+)\s*", str(name))
            if not match:
                raise DataError(f"expected heads named like 'L3 H5'; got {name!r}")
            heads.append((int(match[1]), int(match[2])))
        if not heads:
            raise DataError("select at least one head")
        clf.select(heads=heads)
        return self._explore_views(session)

    # ----------------------------------------------------------------------------- classifying
    def _question_for_queries(self, session: Session, question: str | None) -> str | None:
        return (question or "").strip() or session.fit_question or session.question or None

    @ui_errors
    def classify(self, files, question: str, session: Session | None, progress=gr.Progress()):
        """Label, votes and per-head detail for each uploaded image, plus the model's own answer."""
        session, clf = self._fitted(session)
        paths = _paths(files)
        if not paths:
            raise DataError("no images to classify: upload one or more images")
        if len(paths) > MAX_CLASSIFY:
            raise DataError(f"{len(paths)} images at once; the limit is {MAX_CLASSIFY}")
        question = self._question_for_queries(session, question)
        if not question:
            raise DataError("no question: type the question to ask about the images")
        images = [open_image(p, MAX_PIXELS_CAP) for p in paths]
        loaded = self._model(session, progress)
        self._check_same_model(session, loaded)
        progress(0.1, desc="classifying")
        examples = [Example((img,), question) for img in images]
        predictions = predict_examples(loaded, clf, examples, batch_size=8)
        progress(0.6, desc="the model's own answer")
        answers = generate_answers(loaded, [[img] for img in images], [question] * len(images))
        session.predictions = [(p.name, pred, answer) for p, pred, answer in zip(paths, predictions, answers)]
        rows = [[name, pred.label, ", ".join(f"{c}: {v}" for c, v in pred.votes.items()), answer] for name, pred, answer in session.predictions]
        names = [f"{i + 1}: {name}" for i, (name, _, _) in enumerate(session.predictions)]
        shown = [(str(p), f"{pred.label}") for p, (_, pred, _) in zip(paths, session.predictions)]
        return (session, rows, gr.update(choices=names, value=names[0]), *self._detail(session, 0), shown)

    def _check_same_model(self, session: Session, loaded: LoadedModel) -> None:
        if session.fit_model is not None and session.fit_model != session.model_key:
            raise DataError(f"this classifier was made with {session.fit_model.model_id!r}; switch back to it or extract again")
        clf = session.clf
        if clf is not None and list(clf.heads_) != list(loaded.heads):
            raise ClassifierFileError("this classifier's heads do not match the loaded model; extract again")

    def _detail(self, session: Session, index: int):
        if not session.predictions:
            return None, plots.votes_chart(None), [], ""
        name, pred, answer = session.predictions[index]
        total = max(1, sum(pred.votes.values()))
        label = {c: v / total for c, v in pred.votes.items()}
        heads = [[h.layer, h.head, h.vote, *(round(h.similarities[c], 4) for c in pred.votes)] for h in pred.heads]
        return label, plots.votes_chart(pred), {"headers": ["layer", "head", "vote", *[f"sim {c}" for c in pred.votes]], "data": heads}, answer

    @ui_errors
    def show_detail(self, choice: str, session: Session | None):
        session = self._session(session)
        try:
            index = int(str(choice).split(":", 1)[0]) - 1
        except ValueError:
            index = 0
        if not 0 <= index < len(session.predictions):
            raise DataError("classify images first")
        return self._detail(session, index)

    @ui_errors
    def evaluate_test(self, files, use_example: bool, question: str, session: Session | None, progress=gr.Progress()):
        """Held-out accuracy and confusion matrix on a labeled test set."""
        session, clf = self._fitted(session)
        default = self._question_for_queries(session, question)
        if _paths(files) or not use_example:  # an uploaded test set wins over the example task's queries
            examples = examples_from_uploads(_paths(files), session.subdir("test"), question=default)
        else:
            if not session.fit_task:
                raise DataError("this classifier was not fitted on an example task: upload a labeled test set instead")
            examples = load_examples(EXAMPLES_DIR / session.fit_task / "queries.jsonl", question=default)
        if len(examples) > MAX_TEST:
            raise DataError(f"the test set has {len(examples)} examples; the limit here is {MAX_TEST}")
        truth = labels_of(examples)
        loaded = self._model(session, progress)
        self._check_same_model(session, loaded)
        predictions = predict_examples(
            loaded, clf, examples, batch_size=8, default_question=default, max_pixels=MAX_PIXELS_CAP,
            on_batch=lambda done, n: progress((done, n), desc="classifying the test set", unit="examples"),
        )
        report = evaluate([p.label for p in predictions], truth, clf.classes_)
        per_class = [[label, round(acc, 3)] for label, acc in report["per_class_accuracy"].items()]
        session.test = examples
        summary = f"### Held-out accuracy: **{report['accuracy']:.3f}** on {report['n']} examples"
        return session, summary, plots.confusion_chart(report), per_class

    # ----------------------------------------------------------------------------- export / restore
    @ui_errors
    def export(self, session: Session | None):
        """The classifier as a zip, per-head scores as CSV, the heatmap as PNG, activations as safetensors."""
        session, clf = self._fitted(session)
        out = session.fresh_dir("export")
        key = session.fit_model or session.model_key
        folder = clf.save(out / "sav-classifier", model_id=key.model_id, revision=session.fit_revision, question=session.fit_question or session.question or None)
        archive = shutil.make_archive(str(out / "sav-classifier"), "zip", root_dir=folder)
        scores = out / "head-scores.csv"
        selected = set(clf.selected_heads)
        with open(scores, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["layer", "head", "in_sample_accuracy", "leave_one_out_accuracy", "selected"])
            for (layer, head), a, b in zip(clf.heads_, clf.in_sample_scores_.tolist(), clf.loo_scores_.tolist()):
                writer.writerow([layer, head, f"{a:.6f}", f"{b:.6f}", int((layer, head) in selected)])
        png = plots.heatmap_png(clf, session.n_layers, out / "heatmap.png")
        activations = None
        if session.activations is not None:
            activations = str(save_activations(out, session.activations, session.fit_labels, clf.classes_))
        note = "" if activations else " (no activations: this classifier was restored from a file)"
        return archive, str(scores), str(png), activations, f"Exported{note}."

    @ui_errors
    def restore(self, file, session: Session | None, progress=gr.Progress()):
        """Restores a classifier from a zip made by Export; it must match this session's model."""
        session = self._session(session)
        paths = _paths(file)
        if len(paths) != 1 or paths[0].suffix.lower() != ".zip":
            raise ClassifierFileError("upload the classifier zip that Export made (one .zip file)")
        folder = session.fresh_dir("restored")
        try:
            extract_zip(paths[0], folder)
        except DataError as error:
            raise ClassifierFileError(f"not a classifier zip: {error}") from None
        root = folder if (folder / "manifest.json").exists() else next((p.parent for p in folder.rglob("manifest.json")), folder)
        clf, manifest = SAVClassifier.load(root)
        loaded = self._model(session, progress)
        check_matches_model(manifest, loaded.revision, loaded.heads, loaded.head_sizes)
        session.clf, session.activations = clf, None
        session.fit_labels = []
        session.fit_model = session.model_key
        session.fit_revision = loaded.revision
        session.fit_question = manifest.get("question")
        session.fit_task = None
        session.n_layers = loaded.n_layers
        session.predictions = []
        views = self._explore_views(session, f"Restored a classifier for {len(clf.classes_)} classes with {len(clf.selected_heads)} heads.")
        return (*views, session.fit_question or "")

