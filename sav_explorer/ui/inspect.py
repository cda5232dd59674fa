"""Inspect a head: where it looks on a support or query image, its shares, and its class-average maps;
and, for a classified image, where every voting head looks, each labelled with its vote.

    handlers = InspectHandlers(default_model)
    session, title, images, overlay, shares, averages = handlers.inspect("2,0", "", session)

Lens passes run in the model's concurrency group and are cached per session (by fit, head and image).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import gradio as gr
from PIL import Image

from ..data import Example, open_image
from ..errors import DataError
from ..heads import Head
from ..lens import Lens, average_tile, class_averages, head_overlay, look
from ..mistakes import Mistake, misclassified
from .classify import prediction_index
from .common import Handlers, md, ui_errors
from .explore import fitted, parse_cell, toggle
from .session import Session

MAX_CACHED = 256  # lens results kept per session
INSPECT_PROMPT = "### Inspect a head\nClick a cell of the heatmap to see where that head looks."
THUMB = 160  # side of a class-average tile, in pixels
AVERAGE_OVER = 12  # support images per class in a class-average map (one lens pass each)


def image_choices(session: Session) -> list[str]:
    """ "support N: name (label)" for the fit's support images, "query N: name" for classified images, then
    "test N: name (label → predicted)" for the misclassified examples of the latest evaluation."""
    fit = session.fit
    support = fit.examples if fit else []
    choices = [f"support {i + 1}: {e.name} ({e.label})" for i, e in enumerate(support) if isinstance(e.images[0], (str, Path))]
    choices += [f"query {i + 1}: {c.name}" for i, c in enumerate(session.predictions)]
    return choices + [mistake_choice(session, m.index) for m in evaluation_mistakes(session)]


def evaluation_mistakes(session: Session) -> list[Mistake]:
    """The misclassified examples (of image files) of the latest evaluation, if it belongs to the current fit."""
    held = session.evaluation
    if held is None or session.fit is None or held.fit_created != session.fit.created:
        return []
    mistakes = misclassified(held.predictions, [str(e.label) for e in held.examples])
    return [m for m in mistakes if isinstance(held.examples[m.index].images[0], (str, Path))]


def mistake_choice(session: Session, index: int) -> str:
    """The image list's name of test example `index` of the latest evaluation."""
    example, prediction = session.evaluation.examples[index], session.evaluation.predictions[index]
    return f"test {index + 1}: {example.name} ({example.label} → {prediction.label})"


def chosen_image(session: Session, choice: str | None) -> tuple[str, Example]:
    """The chosen image as the example capture read (a support example, or a classified image with its question)."""
    choices = image_choices(session)
    if not choices:
        raise DataError("no image to look at: this classifier was restored without its support images; classify an image first")
    choice = choice if choice in choices else choices[0]
    kind, number = choice.split(":", 1)[0].split()
    index = int(number) - 1
    if kind == "support":
        return choice, session.fit.examples[index]
    if kind == "test":  # as the evaluation read it: with its own question
        return choice, session.evaluation.examples[index]
    item = session.predictions[index]
    return choice, Example((item.path,), item.question)


def content_key(image) -> str:
    """What lens results are cached under: the image's content, never its path (every stroke of a
    drawing overwrites one file, and a key by path kept showing the first drawing's attention)."""
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else image.tobytes()
    return hashlib.sha256(data).hexdigest()


def shares_text(lens: Lens, head: Head) -> str:
    view = lens.heads[head]
    note = "" if lens.layout.known else f" ({md(lens.layout.note)}: no map)"
    return (
        f"Attention from the last token: **image {view.image_share:.1%}**, layout tokens {view.layout_share:.1%}, "
        f"text {view.text_share:.1%}; first token {view.first_token_share:.1%}{note}"
    )


def inspect_header(session: Session):
    """(title, add/remove button) for the inspected head: its scores, and whether and where it votes."""
    head, clf = session.inspected, session.clf
    if head is None or clf is None or head not in clf.layout_:
        return gr.update(), gr.update()
    position = clf.layout_.position(*head)
    selected = clf.selected_heads
    rank = f"selected, rank {selected.index(head) + 1} of {len(selected)}" if head in selected else "not selected"
    title = (
        f"### Layer {head[0]}, head {head[1]}\n"
        f"in-sample accuracy {float(clf.in_sample_scores_[position]):.2f} · leave-one-out "
        f"{float(clf.loo_scores_[position]):.2f} · {rank}"
    )
    button = gr.update(value="Remove from the selection" if head in selected else "Add to the selection", interactive=True)
    return title, button


class InspectHandlers(Handlers):
    def _lens(self, session: Session, example: Example, heads: list[Head]) -> Lens:
        fit = session.fit
        key = ("lens", fit.task, fit.created, content_key(example.images[0]), example.question, tuple(heads))
        if key not in session.lens_cache:
            if len(session.lens_cache) >= MAX_CACHED:
                session.lens_cache.clear()
            session.lens_cache[key] = look(self.model(session), example, heads, fit.clf.encoding)
        return session.lens_cache[key]

    def _overlay(self, lens: Lens, head: Head, path: Path) -> Image.Image:
        return head_overlay(lens, head, open_image(path))

    @ui_errors
    def inspect(self, cell: str, choice: str | None, session: Session | None, progress=gr.Progress()):
        """Shows head `cell` ("layer,head") on the chosen image, with its shares and class-average maps."""
        session = self.session(session)
        clf = fitted(session)
        head = parse_cell(cell) if cell else session.inspected
        if head is None:
            raise DataError("click a cell of the heatmap to inspect that head")
        if head not in clf.layout_:
            raise DataError(f"no head {head[1]} in layer {head[0]} of this model")
        session.inspected = head
        choice, example = chosen_image(session, choice)
        progress(0, desc=f"where layer {head[0]} head {head[1]} looks")
        lens = self._lens(session, example, [head])
        averages = self._class_averages(session, head)
        choices = gr.update(choices=image_choices(session), value=choice)
        picture = self._overlay(lens, head, example.images[0])
        title, button = inspect_header(session)
        return session, title, choices, picture, shares_text(lens, head), averages, button

    def fresh_inspect_views(self, session: Session | None):
        """After a new fit (an extraction, a restore): the panel empties, with the new fit's images to choose
        from, unless a head of this fit is inspected (a cancelled extraction leaves the fit as it was).
        (title, image choice, overlay, shares, class maps, add/remove button)."""
        session = self.session(session)
        if session.inspected is not None:
            return (gr.update(),) * 6
        choices = gr.update(choices=image_choices(session) if session.fit else [], value=None)
        return INSPECT_PROMPT, choices, None, "", [], gr.update(value="Add to the selection", interactive=False)

    def inspect_header_views(self, session: Session | None):
        """The inspected head's title and button again, after the voting heads changed (no model call)."""
        return inspect_header(self.session(session))

    @ui_errors
    def toggle_inspected(self, session: Session | None):
        """The inspect panel's button: adds the inspected head to the selection, or removes it."""
        session = self.session(session)
        if session.inspected is None:
            raise DataError("click a cell of the heatmap to inspect a head first")
        views = toggle(session, session.inspected)
        return (*views, inspect_header(session)[1])

    def _class_averages(self, session: Session, head: Head) -> list[tuple[Image.Image, str]]:
        fit = session.fit
        if not fit.examples:
            return []
        key = ("averages", fit.task, fit.created, head)
        if key not in session.lens_cache:
            loaded = self.model(session)
            per_class: dict[str, list[Example]] = {}
            for example in fit.examples:  # a lens pass each: at most AVERAGE_OVER per class, in support order
                per_class.setdefault(str(example.label), []).append(example)
            examples = [e for group in per_class.values() for e in group[:AVERAGE_OVER]]
            averages = class_averages(loaded, examples, head, fit.clf.encoding)
            session.lens_cache[key] = [(average_tile(average, THUMB), f"{average.label} ({average.n})") for average in averages]
        return session.lens_cache[key]

    @ui_errors
    def voting_heads(self, choice: str | None, session: Session | None, progress=gr.Progress()):
        """Small multiples for one classified image: every voting head's overlay, labelled with its vote."""
        session = self.session(session)
        fitted(session)
        if not session.predictions:
            return []
        index = prediction_index(choice)
        item = session.predictions[max(0, min(index, len(session.predictions) - 1))]
        heads = [(h.layer, h.head) for h in item.prediction.heads]
        progress(0, desc="where the voting heads look")
        lens = self._lens(session, Example((item.path,), item.question), heads)  # one pass for every voting head
        return [(self._overlay(lens, (h.layer, h.head), item.path), f"L{h.layer} H{h.head} → {h.vote}") for h in item.prediction.heads]

    @ui_errors
    def inspect_vote_row(self, evt: gr.SelectData, choice: str | None, session: Session | None):
        """A click on a row of the per-head votes: that head, on that classified image, goes to Inspect
        (the Explore tab comes to the front). The image list gets its choices with the value: a value
        outside them failed the inspect event, and every heatmap click after it."""
        session = self.session(session)
        index = prediction_index(choice)
        try:
            item = session.predictions[index]
            vote = item.prediction.heads[evt.index[0]]
        except (IndexError, TypeError):
            raise DataError("classify an image first, then click a row of its per-head votes") from None
        query = f"query {index + 1}: {item.name}"
        cell = f"{vote.layer},{vote.head},row,{time.time()}"  # a new value even for the same head
        return cell, gr.update(choices=image_choices(session), value=query), gr.Tabs(selected="explore")
