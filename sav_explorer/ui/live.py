"""Live: classify what the visitor draws, as soon as a stroke ends.

    handlers = LiveHandlers(default_model)
    session, result, timing = handlers.classify_drawing("data:image/png;base64,...", "", session)

The page's canvas (see bridge.js) sends each finished drawing as a PNG data URL; the event runs in
the model's concurrency group with `trigger_mode="always_last"`, so strokes never pile up: while
one drawing is classified, only the latest of the strokes that follow waits, behind one model call.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import time

import gradio as gr
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..teaching.shapes import COLOURS
from .classify import classify_views
from .common import Handlers, ui_errors
from .explore import fitted
from .session import Session

DATA_URL = "data:image/png;base64,"
MAX_DRAWING_BYTES = 2 * 1024 * 1024
CANVAS = 256  # pixels a side
DRAW_PROMPT = "Draw a shape: the heads vote when you lift the pen."


def decode_drawing(data_url: str) -> Image.Image:
    """The canvas's PNG, flattened onto white; refuses anything but a small PNG data URL."""
    text = str(data_url or "").split("#", 1)[0]  # the page may add "#nonce"
    if not text.startswith(DATA_URL):
        raise DataError("the drawing did not arrive as a PNG image; draw again")
    if len(text) > MAX_DRAWING_BYTES * 4 // 3 + len(DATA_URL):
        raise DataError(f"the drawing is larger than {MAX_DRAWING_BYTES // 2**20} MB")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(text[len(DATA_URL) :], validate=True)), formats=["PNG"])
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):  # JPEG or GIF bytes under a PNG label too
        raise DataError("the drawing could not be read as a PNG image; draw again") from None
    if image.width * image.height > 4 * CANVAS * CANVAS:  # outside the try: a DataError is a ValueError too
        raise DataError(f"the drawing is {image.width} x {image.height} pixels; the canvas is {CANVAS} x {CANVAS}")
    try:
        image = image.convert("RGBA")
    except (OSError, ValueError):
        raise DataError("the drawing could not be read as a PNG image; draw again") from None
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image).convert("RGB")


def canvas_html() -> str:
    """The drawing surface: a white canvas, the shapes world's colours, a free colour, a brush and a clear button."""
    swatches = "".join(
        f'<button type="button" class="sav-swatch" data-colour="#{r:02x}{g:02x}{b:02x}" title="{html.escape(name)}" '
        f'aria-label="{html.escape(name)}" style="background:#{r:02x}{g:02x}{b:02x}"></button>'
        for name, (r, g, b) in COLOURS.items()
    )
    return (
        f'<div id="sav-draw"><canvas id="sav-canvas" width="{CANVAS}" height="{CANVAS}" aria-label="drawing surface"></canvas>'
        f'<div id="sav-palette">{swatches}'
        '<label>other <input type="color" id="sav-free-colour" value="#000000"></label>'
        '<label>brush <input type="range" id="sav-brush" min="4" max="48" value="20"></label>'
        '<button type="button" id="sav-canvas-clear">Clear</button></div></div>'
    )


class LiveHandlers(Handlers):
    @ui_errors
    def classify_drawing(self, drawing: str, question: str, session: Session | None):
        """Classifies the canvas as soon as a stroke ends: the label and votes, and how long it took. The
        tables and charts of the Classify tab follow in a second, instant event, so the votes show first."""
        started = time.perf_counter()
        session = self.session(session)
        path = session.workdir / "drawings" / "drawing.png"
        if not drawing:  # the canvas's Clear: its result goes too
            if any(item.path == path for item in session.predictions):
                session.predictions = []
            return session, DRAW_PROMPT, ""
        clf = fitted(session)
        image = decode_drawing(drawing)
        session.subdir("drawings")
        image.save(path)
        model_started = time.perf_counter()
        views = self.classify_paths(session, clf, [path], question, with_answers=False)
        model_ms = 1000 * (time.perf_counter() - model_started)
        server_ms = 1000 * (time.perf_counter() - started)
        timing = f"Read in {server_ms:.0f} ms on the server ({model_ms:.0f} ms of it the model)."  # a sentence, not JSON
        return session, views[3], timing  # the prediction's text beside the canvas; the tables follow

    def fresh_classify_views(self, session: Session | None):
        """After a new fit (an extraction, a restore): the Classify tab's results, which belonged to the fit
        before, are emptied (the new fit starts with none); kept when the fit did not change (a cancelled
        extraction). (results, detail choice, label, votes, per-head table, answer, gallery, voting heads,
        result beside the canvas, its timing)."""
        session = self.session(session)
        if session.predictions:
            return (gr.update(),) * 10
        return (*classify_views(session)[1:], [], DRAW_PROMPT, "")
