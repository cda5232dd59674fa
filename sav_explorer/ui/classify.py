"""Classify and evaluate: new images with each head's vote and the model's own answer; held-out accuracy.

    handlers = ClassifyHandlers(default_model)
    session, rows, choice, label, votes, head_votes, answer, gallery = handlers.classify(files, "", session)

Model work runs in the model's concurrency group; the detail of another image needs no model call.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import gradio as gr

from .. import plots
from ..answers import generate_answers
from ..capture import HeadActivations
from ..classifier import Prediction
from ..data import Example, labels_of, load_examples, open_image
from ..encoding import Encoding, RunOptions
from ..errors import ClassifierFileError, DataError
from ..heads import Head
from ..mistakes import head_rows
from ..models import EXAMPLES_DIR, LoadedModel
from ..pipeline import Evaluation, capture_for, predict_examples
from .common import Handlers, file_paths, md, ui_errors, visitor_gone
from .explore import fitted
from .housekeeping import check_quota, room_left
from .session import MAX_CLASSIFY, MAX_IMAGE_TOKENS, MAX_TEST, Classified, HeldOut, Session
from .support import check_images_per_example
from .uploads import examples_from_uploads


def query_encoding(session: Session, question: str | None) -> tuple[Encoding, str]:
    """How queries are read: the fit's encoding, with a question typed here in place of the fit's; and a
    note for the page when that changes what the model reads."""
    encoding, notes = session.fit.clf.encoding.overridden(question=(question or "").strip() or None)
    if encoding.question is None and session.question:  # the support rows had their own questions
        encoding, _ = encoding.overridden(question=session.question)
    return encoding, " ".join(notes)


def question_for_queries(session: Session, question: str | None) -> str | None:
    """The question asked of queries without their own (the fit's, unless one is typed here)."""
    return query_encoding(session, question)[0].question if session.fit else (question or "").strip() or session.question or None


def check_same_model(session: Session, loaded: LoadedModel) -> None:
    fit = session.fit
    if fit is None:
        return
    if fit.model_key != session.model_key:
        raise DataError(f"this classifier was made with {fit.model_key.model_id!r}; switch back to it or extract again")
    if fit.clf.layout_ != loaded.layout:
        raise ClassifierFileError("this classifier's heads do not match the loaded model; extract again")


def classify_test_set(loaded: LoadedModel, clf, examples: list[Example], encoding: Encoding, on_batch=None) -> list:
    """SAV's predictions on a labeled test set, read as `encoding` says, under the page's cap on a request's image tokens;
    the heads selected when it starts vote, whatever k does meanwhile."""
    return run_test_set(loaded, clf, examples, encoding, on_batch)[0]


def run_test_set(
    loaded: LoadedModel, clf, examples: list[Example], encoding: Encoding, on_batch=None
) -> tuple[list[Prediction], HeadActivations, list[Head]]:
    """As `classify_test_set`, with the captured activations (the voting heads' layers) and the heads that voted."""
    clf = clf.snapshot()
    activations = capture_for(loaded, clf, examples, query_run(on_batch), encoding)
    return clf.explain(activations), activations, list(clf.selected_heads)


def query_run(on_batch=None, should_stop=None) -> RunOptions:
    """How the page runs queries: in batches of 8, within the cap on a request's image tokens, stopped
    at the next batch by `should_stop` or when the visitor has gone. Made in the handler."""
    gone = visitor_gone()
    stop = gone if should_stop is None else lambda: should_stop() or gone()
    return RunOptions(batch_size=8, on_batch=on_batch, should_stop=stop, max_request_image_tokens=MAX_IMAGE_TOKENS)


def classify_views(session: Session):
    """(session, results table, detail choice, label, votes chart, per-head table, answer, gallery) for the predictions."""
    rows = [
        [c.name, c.prediction.label, ", ".join(f"{k}: {v}" for k, v in c.prediction.votes.items()), c.answer] for c in session.predictions
    ]
    names = [f"{i + 1}: {c.name}" for i, c in enumerate(session.predictions)]
    shown = [(str(c.path), c.prediction.label) for c in session.predictions]
    return (session, rows, gr.update(choices=names, value=names[0] if names else None), *prediction_detail(session, 0), shown)


HEAD_VOTES = ["layer", "head", "vote"]  # the per-head table's first columns; one "sim <class>" column per class follows


def prediction_index(choice: str | None) -> int:
    """The index of a "N: name" choice of the classified images (0 when there is no number)."""
    try:
        return int(str(choice).split(":", 1)[0]) - 1
    except ValueError:
        return 0


def prediction_detail(session: Session, index: int):
    """(label shares, votes chart, per-head table, model's answer) for one classified image."""
    if not session.predictions:
        return "", plots.votes_chart(None), {"headers": HEAD_VOTES, "data": []}, ""
    item = session.predictions[index]
    pred, answer = item.prediction, item.answer
    total = sum(pred.votes.values())
    ranked = sorted(pred.votes.items(), key=lambda item: -item[1])
    others = " · ".join(f"{md(c)}: {v} of {total}" for c, v in ranked if c != pred.label)
    heads = "head" if total == 1 else "heads"
    label = f"### SAV prediction: **{md(pred.label)}**\n{pred.votes[pred.label]} of {total} {heads} voted for it. {others}"
    if item.note:
        label += f"\n\n*Note: {md(item.note)}*"
    heads = [[h.layer, h.head, h.vote, *(round(h.similarities[c], 4) for c in pred.votes)] for h in pred.heads]
    return label, plots.votes_chart(pred), {"headers": [*HEAD_VOTES, *[f"sim {c}" for c in pred.votes]], "data": heads}, answer


class ClassifyHandlers(Handlers):
    @ui_errors
    def classify(self, files, question: str, session: Session | None, progress=gr.Progress()):
        """Label, votes and per-head detail for each uploaded image, plus the model's own answer."""
        session = self.session(session)
        clf = fitted(session)
        paths = file_paths(files)
        if not paths:
            raise DataError("no images to classify: upload one or more images")
        if len(paths) > MAX_CLASSIFY:
            raise DataError(f"{len(paths)} images at once; the limit is {MAX_CLASSIFY}")
        # kept in the session's folder: Gradio's cache is bounded, and classified images are read again (overlays, Inspect)
        check_quota(session.workdir, sum(p.stat().st_size for p in paths))
        folder = session.subdir("queries") / uuid.uuid4().hex[:12]
        try:
            kept = []
            for number, path in enumerate(paths):
                (folder / str(number)).mkdir(parents=True)
                kept.append(Path(shutil.copyfile(path, folder / str(number) / path.name)))
            views = self.classify_paths(session, clf, kept, question, progress=progress)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        for earlier in folder.parent.iterdir():  # the images of the classification before
            if earlier != folder:
                shutil.rmtree(earlier, ignore_errors=True)
        return views

    def classify_paths(self, session: Session, clf, paths: list, question: str | None, with_answers: bool = True, progress=None):
        """Classifies image files and keeps them as the session's predictions; returns the Classify views."""
        clf = clf.snapshot()  # the heads at the start vote, whatever k does meanwhile
        encoding, note = query_encoding(session, question)
        if not encoding.question:
            raise DataError("no question: type the question to ask about the images")
        images = [open_image(p) for p in paths]  # decoded once; `encode` scales them as the fit's encoding says
        loaded = self.model(session, progress)
        check_same_model(session, loaded)
        if progress is not None:
            progress(0.1, desc="classifying")
        examples = [Example((img,)) for img in images]
        predictions = predict_examples(loaded, clf, examples, query_run(), encoding)
        answers = ["(not asked for drawings)"] * len(images)
        if with_answers:
            if progress is not None:
                progress(0.6, desc="the model's own answer")
            answers = generate_answers(loaded, examples, encoding)
        question = encoding.question
        session.predictions = [Classified(p.name, p, question, pred, answer, note) for p, pred, answer in zip(paths, predictions, answers)]
        return classify_views(session)

    @ui_errors
    def classified_views(self, session: Session | None):
        """The Classify views of the session's latest predictions (no model call); empty without any."""
        return classify_views(self.session(session))

    @ui_errors
    def show_detail(self, choice: str, session: Session | None):
        session = self.session(session)
        index = prediction_index(choice)
        if not 0 <= index < len(session.predictions):
            raise DataError("classify images first")
        return prediction_detail(session, index)

    def test_set(self, session: Session, files, use_example: bool, question: str | None, limit: int = MAX_TEST) -> list[Example]:
        """The labeled test set: an upload wins over the example task's bundled queries."""
        default = question_for_queries(session, question)
        if file_paths(files) or not use_example:
            examples, _ = examples_from_uploads(
                file_paths(files), session.subdir("test"), question=default, room=room_left(session.workdir)
            )
            check_images_per_example(examples)
        else:
            task = session.fit.example_task if session.fit else None
            if not task:
                raise DataError("this classifier was not fitted on an example task: upload a labeled test set instead")
            examples = load_examples(EXAMPLES_DIR / task / "queries.jsonl", question=default)
        if len(examples) > limit:
            raise DataError(f"the test set has {len(examples)} examples; the limit here is {limit}")
        labels_of(examples)  # every example labeled
        return examples

    @ui_errors
    def evaluate_test(self, files, use_example: bool, question: str, session: Session | None, progress=gr.Progress()):
        """Held-out accuracy and confusion matrix on a labeled test set."""
        session = self.session(session)
        clf = fitted(session)
        encoding, note = query_encoding(session, question)
        examples = self.test_set(session, files, use_example, question)
        labels_of(examples)  # every example labeled, before any model work
        loaded = self.model(session, progress)
        check_same_model(session, loaded)
        predictions, activations, heads = run_test_set(
            loaded, clf, examples, encoding, lambda done, n: progress((done, n), desc="classifying the test set", unit="examples")
        )
        evaluation = Evaluation.of(examples, predictions, clf.classes_)
        rows = {head: head_rows(activations, head) for head in heads}  # the projection's; the other heads are not kept
        session.evaluation = HeldOut(**vars(evaluation), heads=heads, rows=rows, fit_created=session.fit.created, note=note)
        return evaluation_views(session)


def evaluation_views(session: Session):
    """(session, accuracy summary, confusion matrix, per-class table) of the session's latest evaluation."""
    held = session.evaluation
    if held is None or session.fit is None or held.fit_created != session.fit.created:
        return session, "", plots.confusion_chart(None), []
    report = held.report
    per_class = [[label, round(acc, 3)] for label, acc in report.per_class_accuracy.items()]
    low, high = report.interval
    summary = (
        f"### Held-out accuracy: **{report.accuracy:.3f}** on {report.n} examples (95 % interval {low:.3f}–{high:.3f})\n"
        f"Classifier: {md(session.fit.describe())}" + (f"\n\n*Note: {md(held.note)}*" if held.note else "")
    )
    return session, summary, plots.confusion_chart(report), per_class
