"""Per-visitor state: the support set, the fitted classifier and its activations, files to export.

    session = Session.new()          # held in a gr.State with a time-to-live; closed when it expires
    session.workdir                  # a private temporary folder, removed by `close`

A session holds only the key of its model, never the model itself (see `registry`). Cancelling
works through a flag looked up by session id, so a cancel event never waits for the model's queue.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..capture import HeadActivations
from ..classifier import Prediction, SAVClassifier
from ..data import Example
from .registry import ModelKey

SESSION_TTL_S = 2 * 60 * 60  # a session's data is dropped two hours after its last use
MAX_SUPPORT = 600  # examples in a support set
MAX_TEST = 600  # examples in a labeled test set
MAX_CLASSIFY = 32  # images classified at once
MAX_PIXELS_CAP = 1024 * 1024  # the largest "max pixels" a visitor may choose
MAX_UPLOAD = "100mb"  # per file, enforced by Gradio before a handler runs
MAX_BATCH = 32

_cancel_flags: dict[str, threading.Event] = {}
_flags_lock = threading.Lock()


def cancel_flag(session_id: str) -> threading.Event:
    with _flags_lock:
        return _cancel_flags.setdefault(session_id, threading.Event())


@dataclass
class Session:
    id: str
    workdir: Path
    model_key: ModelKey | None = None
    support: list[Example] = field(default_factory=list)
    support_source: str = ""  # what the support set came from, for the status line
    test: list[Example] = field(default_factory=list)
    question: str = ""
    clf: SAVClassifier | None = None
    activations: HeadActivations | None = None
    fit_labels: list[str] = field(default_factory=list)
    fit_question: str | None = None
    fit_model: ModelKey | None = None  # the model the classifier belongs to
    fit_revision: str = "unknown"
    n_layers: int = 0
    predictions: list[tuple[str, Prediction, str]] = field(default_factory=list)  # (name, prediction, model's answer)
    example_task: str | None = None  # the bundled task the support set came from, if any
    fit_task: str | None = None  # the bundled task the classifier was fitted on, if any

    @classmethod
    def new(cls) -> "Session":
        session_id = uuid.uuid4().hex  # the folder is made on first use, so a failed first event leaves nothing behind
        return cls(id=session_id, workdir=Path(tempfile.gettempdir()) / f"sav-session-{session_id}")

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def fresh_dir(self, name: str) -> Path:
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
        return path

    def forget_fit(self) -> None:
        self.clf = None
        self.activations = None
        self.fit_labels = []
        self.predictions = []

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        with _flags_lock:
            _cancel_flags.pop(self.id, None)


def close_session(session: Session | None) -> None:
    """The gr.State delete callback: runs when the session expires or the visitor leaves."""
    if isinstance(session, Session):
        session.close()
