"""The errors of an evaluation, looked at: the misclassified queries as thumbnails with their votes (a
click inspects a head on one), and one voting head's activations projected on their first two
principal components over the support set and the queries.

    note, thumbnails, head, figure = handlers.mistakes_views("L2 H0", session)
    figure = handlers.project_head("L6 H3", session)

No model call: the evaluation kept the voting heads' activations of every query (`HeldOut.rows`),
the fit keeps the support set's. The selection and the projection are library functions
(`sav_explorer.mistakes`); this module formats them.
"""

from __future__ import annotations

import base64
import io
import re
import time
from pathlib import Path

import gradio as gr

from .. import plots
from ..data import open_image
from ..errors import DataError
from ..heads import Head
from ..mistakes import Mistake, head_projection, head_rows, misclassified
from .classify import evaluation_views
from .common import Handlers, md, ui_errors
from .inspect import image_choices, mistake_choice
from .session import HeldOut, Session

MAX_SHOWN = 48  # misclassified thumbnails on the page
HOVER_THUMBNAILS = 400  # points whose hover shows the image (a data URI each, 0.3 to 3 kB)
THUMB_SIDE = 64
EMPTY = "Evaluate on a labeled test set to see its errors here"


def head_name(head: Head) -> str:
    return f"L{head[0]} H{head[1]}"


def parse_head_name(name: str | None) -> Head | None:
    found = re.fullmatch(r"\s*L(\d+)\s*H(\d+)\s*", str(name or ""))
    return (int(found[1]), int(found[2])) if found else None


def current(session: Session) -> HeldOut | None:
    """The session's evaluation, if it belongs to the current fit."""
    held = session.evaluation
    return held if held is not None and session.fit is not None and held.fit_created == session.fit.created else None


def thumbnail(image, cache: dict) -> str:
    """A small picture of the image as a data URI, PNG or JPEG, whichever is smaller (flat drawings: PNG,
    about 0.3 kB; photos: JPEG, about 2 kB), cached by path; "" for an image that is not a file."""
    if not isinstance(image, (str, Path)):
        return ""
    key = str(image)
    if key not in cache:
        picture = open_image(image).convert("RGB")
        picture.thumbnail((THUMB_SIDE, THUMB_SIDE))
        encoded = []
        for kind, options in (("png", {}), ("jpeg", {"quality": 80})):
            buffer = io.BytesIO()
            picture.save(buffer, format=kind.upper(), **options)
            encoded.append((len(buffer.getvalue()), kind, buffer.getvalue()))
        _, kind, data = min(encoded)
        cache[key] = f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")
    return cache[key]


def shown_mistakes(held: HeldOut, mistakes: list[Mistake]) -> list[Mistake]:
    """The misclassified queries the page shows as thumbnails (image files only, at most MAX_SHOWN), in query order."""
    return [m for m in mistakes if isinstance(held.examples[m.index].images[0], (str, Path))][:MAX_SHOWN]


def votes_caption(mistake: Mistake) -> str:
    """ "small → large · large 6, small 2": the truth, SAV's label, then the votes, most first."""
    ranked = sorted(mistake.votes.items(), key=lambda item: (-item[1], item[0]))
    return f"{mistake.label} → {mistake.predicted} · " + ", ".join(f"{c} {v}" for c, v in ranked)


def projection_figure(session: Session, held: HeldOut, head: Head, mistakes: list[Mistake]):
    """The chosen head's projection over the support set (when the fit kept its activations) and the queries."""
    fit = session.fit
    support = fit.activations if fit.activations is not None and head in fit.activations.layout else None
    projection = head_projection(head_rows(support, head) if support is not None else None, held.rows[head], head)
    cache = held.thumbnails
    coords = projection.coords.tolist()
    points = []
    room = HOVER_THUMBNAILS
    support_examples = fit.examples if support is not None else []
    wrong = {m.index for m in mistakes}
    for i, example in enumerate(support_examples):
        picture = thumbnail(example.images[0], cache) if room > 0 else ""
        room -= bool(picture)
        points.append(plots.ProjectedPoint(*coords[i], fit.labels[i], "support", example.name, thumbnail=picture))
    offset = len(points)
    order = sorted(range(len(held.examples)), key=lambda i: i not in wrong)  # the errors' thumbnails first, if any must go without
    query_points = {}
    for i in order:
        example, prediction = held.examples[i], held.predictions[i]
        picture = thumbnail(example.images[0], cache) if room > 0 else ""
        room -= bool(picture)
        query_points[i] = plots.ProjectedPoint(
            *coords[offset + i], str(example.label), "query", example.name, prediction.label, thumbnail=picture
        )
    points += [query_points[i] for i in range(len(held.examples))]
    share = projection.explained.tolist()
    without = "" if support is not None else " (this classifier was restored without its support activations: queries only)"
    title = (
        f"Head {head_name(head)}: its unit activations on PC 1 ({share[0]:.0%} of the variance) and PC 2 ({share[1]:.0%})<br>"
        f"<span style='font-size:11px'>{len(support_examples)} support, {len(held.examples)} queries, "
        f"{len(mistakes)} misclassified (✕){without}</span>"
    )
    return plots.projection_chart(points, fit.clf.classes_, title)


class MistakesHandlers(Handlers):
    @ui_errors
    def held_out_views(self, session: Session | None):
        """(accuracy, confusion, per class, note, thumbnails, head choice, projection) of the current fit's
        evaluation: empty once another fit replaced the evaluated one (no model call)."""
        session = self.session(session)
        _, accuracy, confusion, per_class = evaluation_views(session)
        return (accuracy, confusion, per_class, *self.mistakes_views(None, session))

    @ui_errors
    def mistakes_views(self, head: str | None, session: Session | None):
        """(note, misclassified thumbnails, head choice, projection) of the latest evaluation."""
        session = self.session(session)
        held = current(session)
        if held is None:
            return "", [], gr.update(choices=[], value=None), plots.projection_chart([], [], empty=EMPTY)
        mistakes = misclassified(held.predictions, [str(e.label) for e in held.examples])
        chosen = parse_head_name(head)
        chosen = chosen if chosen in held.rows else held.heads[0]
        shown = [(str(held.examples[m.index].images[0]), votes_caption(m)) for m in shown_mistakes(held, mistakes)]
        if mistakes:
            more = f" (the first {len(shown)} shown)" if len(shown) < len(mistakes) else ""
            note = (
                f"**{len(mistakes)} of {len(held.examples)} misclassified**{more}: true class → SAV's label · the votes. "
                f"Click one to inspect head {head_name(chosen)} (the projected head) on it."
            )
        else:
            note = f"**No errors** on {len(held.examples)} examples."
        figure = projection_figure(session, held, chosen, mistakes)
        choices = gr.update(choices=[head_name(h) for h in held.heads], value=head_name(chosen))
        return note, shown, choices, figure

    @ui_errors
    def project_head(self, head: str | None, session: Session | None):
        """The projection of another voting head (no model call)."""
        session = self.session(session)
        held = current(session)
        if held is None:
            raise DataError("evaluate on a labeled test set first")
        chosen = parse_head_name(head)
        if chosen not in held.rows:
            raise DataError(f"pick one of the heads that voted in the evaluation ({', '.join(map(head_name, held.heads))}); got {md(head)}")
        mistakes = misclassified(held.predictions, [str(e.label) for e in held.examples])
        return projection_figure(session, held, chosen, mistakes)

    @ui_errors
    def inspect_mistake(self, evt: gr.SelectData, head: str | None, session: Session | None):
        """A click on a misclassified thumbnail: the projected head, on that image, goes to Inspect (the Explore tab comes to the front)."""
        session = self.session(session)
        held = current(session)
        shown = shown_mistakes(held, misclassified(held.predictions, [str(e.label) for e in held.examples])) if held else []
        try:
            mistake = shown[int(evt.index)]
        except (IndexError, TypeError, ValueError):
            raise DataError("evaluate on a labeled test set, then click one of its misclassified images") from None
        chosen = parse_head_name(head)
        chosen = chosen if chosen in held.rows else held.heads[0]
        cell = f"{chosen[0]},{chosen[1]},mistake,{time.time()}"  # a new value even for the same head
        choice = mistake_choice(session, mistake.index)
        return cell, gr.update(choices=image_choices(session), value=choice), gr.Tabs(selected="explore")
