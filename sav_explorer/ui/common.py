"""What every view's handlers share: the visitor's session, the model registry, and the UI edge for errors.

    class SupportHandlers(Handlers):
        @ui_errors
        def load_example(self, task, session): session = self.session(session); ...

Handlers call the library and format its results; SAV logic lives in the engine. Errors caused by
input (`SAVError`) become `gr.Error` here, at the UI edge, with user text HTML-escaped.
"""

from __future__ import annotations

import functools
import html
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..encoding import Cancelled
from ..errors import DataError, SAVError
from ..models import EXAMPLES_DIR, LoadedModel
from .registry import ModelKey, ModelRegistry
from .session import Session

log = logging.getLogger("sav_explorer.ui")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md(text: object) -> str:
    """User text for a Markdown widget: HTML-escaped and with Markdown punctuation made literal."""
    return html.escape(_MD_SPECIAL.sub(r"\\\1", str(text)), quote=False)


def whole_number(value, name: str, low: int, high: int) -> int:
    """A number from a box or the API as an int within [low, high], or a clear message (NaN, text and
    fractions included: `int()` of them failed as "unexpected ValueError")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a whole number between {low} and {high}; got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise DataError(f"{name} must be a whole number between {low} and {high}; got {value!r}")
    return int(number)


def visitor_gone() -> Callable[[], bool]:
    """A check, for a model pass between its batches, whether the visitor whose event runs has gone:
    Gradio marks an event dead when its connection closes (the tab closed, the client gone), but a
    handler running in a thread goes on unless it asks. Call it in the handler; outside an event it
    answers False."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None:
        return lambda: False

    def gone() -> bool:
        event = queue.event_ids_to_events.get(event_id)
        return event is not None and not event.alive

    return gone


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
        except Cancelled as stopped:  # Cancel pressed, or the visitor gone: the pass stopped between batches
            raise gr.Error(html.escape(f"stopped: {stopped}", quote=False), print_exception=False) from None
        except Exception as error:  # keep serving: one visitor's failure is reported to that visitor only
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(html.escape(f"unexpected {type(error).__name__}: {error}", quote=False), print_exception=False) from None

    return wrapper


def example_tasks() -> list[str]:
    return sorted(p.name for p in EXAMPLES_DIR.iterdir() if (p / "support.jsonl").is_file()) if EXAMPLES_DIR.is_dir() else []


def file_paths(files) -> list[Path]:
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


class Handlers:
    """Base of each view's handlers: one shared model registry and the app's default model."""

    def __init__(self, default_model: str, registry: ModelRegistry | None = None):
        self.default_model = default_model
        self.registry = registry or ModelRegistry()

    def session(self, session: Session | None) -> Session:
        """The visitor's session, made on the first event."""
        if not isinstance(session, Session):
            session = Session.new()
        if session.model_key is None:
            session.model_key = ModelKey(self.default_model)
        session.touch()  # a reload finds the session until its time-to-live after this
        return session

    def model(self, session: Session, progress: gr.Progress | None = None) -> LoadedModel:
        key = session.model_key or ModelKey(self.default_model)
        if key not in self.registry and progress is not None:
            progress(0, desc=f"loading model {key.model_id}")
        return self.registry.get(key).with_image_cache(session.image_cache)  # the visitor's own image features
