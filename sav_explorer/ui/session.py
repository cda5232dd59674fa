"""Per-visitor state: the support set, the fitted tasks (`Fit` records), files to export.

    session = Session.new()          # held in a gr.State with a time-to-live; closed when it expires
    session.keep_fit(fit)            # the one place a fitted classifier enters a session
    session.fit                      # the current task's Fit, or None
    session.workdir                  # a private temporary folder, removed by `close`
    token = store.issue(session)     # the browser keeps the token (gr.BrowserState); a reload finds
    store.find(token)                # its session again, in memory, until the session's time-to-live

A session holds only the key of its model, never the model itself (see `registry`). Cancelling
works through a flag looked up by session id, so a cancel event never waits for the model's queue.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..capture import HeadActivations
from ..classifier import Prediction, SAVClassifier
from ..data import Example
from ..heads import Head
from ..image_cache import ImageFeatureCache, session_cache_bytes
from ..pipeline import Evaluation
from ..report import Results
from .housekeeping import PREFIX, mark_owner, session_root
from .registry import ModelKey

SESSION_TTL_S = 2 * 60 * 60  # a session's data is dropped two hours after its last use
MAX_SUPPORT = 600  # examples in a support set
MAX_TEST = 600  # examples in a labeled test set
MAX_CLASSIFY = 32  # images classified at once
MAX_PIXELS_CAP = 1024 * 1024  # the largest "max pixels" a visitor may choose
MAX_UPLOAD = "100mb"  # per file, enforced by Gradio before a handler runs
MAX_BATCH = 32
MAX_IMAGES_PER_EXAMPLE = 8  # images in one row of a data file
MAX_IMAGE_TOKENS = 400_000  # image tokens in one request (extraction or evaluation)
MAX_FITS = 4  # fitted tasks a session keeps (for comparing tasks)

_cancel_flags: dict[str, threading.Event] = {}
_work: dict[str, list[int]] = {}  # per session: [extractions armed (clicked, not yet started), model runs under way]
_flags_lock = threading.Lock()


def cancel_flag(session_id: str) -> threading.Event:
    with _flags_lock:
        return _cancel_flags.setdefault(session_id, threading.Event())


def arm(session_id: str) -> None:
    """Extract was pressed: until the extraction starts (`model_work(..., armed=True)`), Cancel has something to stop."""
    with _flags_lock:
        _work.setdefault(session_id, [0, 0])[0] += 1


@contextlib.contextmanager
def model_work(session_id: str, armed: bool = False):
    """Marks a cancellable run of the session under way; `armed`: the run is the extraction that `arm` announced."""
    with _flags_lock:
        counts = _work.setdefault(session_id, [0, 0])
        counts[0] = max(0, counts[0] - 1) if armed else counts[0]
        counts[1] += 1
    try:
        yield
    finally:
        with _flags_lock:
            counts[1] -= 1


def request_cancel(session_id: str) -> bool:
    """Sets the session's cancel flag if it has model work armed or under way; False (flag untouched) if not,
    so that a Cancel pressed when nothing runs does not stop the next run."""
    with _flags_lock:
        armed, running = _work.get(session_id, (0, 0))
        if not (armed or running):
            return False
        _cancel_flags.setdefault(session_id, threading.Event()).set()
        return True


@dataclass
class Fit:
    """A fitted task: the classifier and everything needed to say what it belongs to."""

    clf: SAVClassifier
    activations: HeadActivations | None  # None when restored from a file
    labels: list[str]  # the support labels, in example order (empty when restored)
    model_key: ModelKey
    revision: str
    n_layers: int
    task: str  # the bundled task's name, or what the support set came from
    example_task: str | None = None  # the bundled task the classifier was fitted on, if any
    examples: list[Example] = field(default_factory=list)  # the support set it was fitted on (empty when restored)
    created: float = field(default_factory=time.time)
    top_k: int = 20  # the k of the top-k selection, kept while a custom set votes
    custom: list[tuple[int, int]] | None = None  # the hand-picked heads, kept while the top k vote
    results: Results = field(default_factory=Results)  # what the Analyse tab ran on it, for the report

    @property
    def question(self) -> str | None:
        return self.clf.encoding.question

    @property
    def mode(self) -> str:
        """ "custom set" when the voting heads are the hand-picked ones, else "top-k"."""
        return "custom set" if self.custom is not None and self.clf.selected_heads == self.custom else "top-k"

    def describe(self) -> str:
        """What this classifier belongs to, for titles and banners (user text: escape before display)."""
        classes = ", ".join(self.clf.classes_)
        question = f'"{self.question}"' if self.question else "each row's own question"
        return f"task {self.task} · question {question} · model {self.model_key.model_id} · {len(self.clf.classes_)} classes: {classes}"


@dataclass(frozen=True)
class Classified:
    """One classified image: what the visitor uploaded, SAV's prediction and the model's own answer."""

    name: str
    path: Path
    question: str
    prediction: Prediction
    answer: str
    note: str = ""  # how the image was read differently from the support set, if it was


@dataclass(frozen=True)
class HeldOut(Evaluation):
    """A labeled test set classified by the current fit (an `Evaluation`), with the voting heads'
    activations of every query (for the projection; the other heads are not kept)."""

    heads: list[Head]  # the heads that voted, best-ranked first
    rows: dict[Head, torch.Tensor]  # per voting head: (n_queries, head_dim)
    fit_created: float  # the `Fit.created` of the classifier that voted
    note: str = ""  # how the queries were read differently from the support set, if they were
    thumbnails: dict[str, str] = field(default_factory=dict)  # data URIs of the projection's hover, by image path


@dataclass
class Session:
    id: str
    workdir: Path
    model_key: ModelKey | None = None
    support: list[Example] = field(default_factory=list)
    question: str = ""
    example_task: str | None = None  # the bundled task the support set came from, if any
    fits: dict[str, Fit] = field(default_factory=dict)  # fitted tasks by name; the newest is current
    current: str | None = None
    predictions: list[Classified] = field(default_factory=list)
    inspected: tuple[int, int] | None = None  # the head the Inspect panel shows
    lens_cache: dict = field(default_factory=dict)  # overlays and class averages, per fit, head and image
    reading: list[Example] = field(default_factory=list)  # the support set a running extraction reads: its files stay
    image_cache: ImageFeatureCache = field(default_factory=lambda: ImageFeatureCache(session_cache_bytes()), repr=False, compare=False)
    evaluation: HeldOut | None = None  # the latest held-out evaluation of the current fit
    last_used: float = field(default_factory=time.time)  # when an event last touched it (a reload may find it until TTL after)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)  # events of one visitor may overlap

    def __deepcopy__(self, memo) -> Session:
        """Gradio deep-copies a State's value when it hands out a new session's: the fresh Session is that copy."""
        return self

    @property
    def fit(self) -> Fit | None:
        return self.fits.get(self.current) if self.current else None

    @property
    def clf(self) -> SAVClassifier | None:
        return self.fit.clf if self.fit else None

    def keep_fit(self, fit: Fit) -> None:
        """Stores a fitted task under its name (replacing one of that name) and makes it current."""
        self.fits.pop(fit.task, None)
        self.fits[fit.task] = fit
        while len(self.fits) > MAX_FITS:
            self.fits.pop(next(iter(self.fits)))
        self.current = fit.task
        self.predictions = []
        self.inspected = None  # the Inspect panel showed a head of the fit before
        self.evaluation = None
        self.lens_cache.clear()

    @classmethod
    def new(cls) -> Session:
        session_id = uuid.uuid4().hex  # the folder is made on first use, so a failed first event leaves nothing behind
        return cls(id=session_id, workdir=session_root() / f"{PREFIX}{session_id}")

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mark_owner(self.workdir)
        return path

    def fresh_dir(self, name: str) -> Path:
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
        mark_owner(self.workdir)
        return path

    def forget_fits(self) -> None:
        self.fits.clear()
        self.current = None
        self.predictions = []
        self.evaluation = None

    def touch(self) -> None:
        """Marks the session used now: its time-to-live counts from here."""
        self.last_used = time.time()

    def close(self) -> None:
        self.image_cache.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        with _flags_lock:
            _cancel_flags.pop(self.id, None)
            _work.pop(self.id, None)


def cancellable(fn):
    """Runs a handler as model work of the session among its arguments (see `model_work`): Cancel stops it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        session = next((a for a in (*args, *kwargs.values()) if isinstance(a, Session)), None)
        if session is None:  # a first event: no page can press Cancel for a session it does not know yet
            return fn(*args, **kwargs)
        with model_work(session.id):
            return fn(*args, **kwargs)

    return wrapper


class SessionStore:
    """Sessions by an unguessable token that the visitor's browser keeps, so that a reload of the page
    finds its session again: support set, fits, results. Held in memory only (a fit holds tensors and
    the model's key, nothing that is written out or read back), until `ttl_s` after the session's last use.

    The page's gr.State still carries the session between events; when Gradio drops that State (the
    tab closed or reloaded), `release` leaves a session the store holds alone, and `expire` closes it
    once its time is up. A token the store does not know (forged, expired, from another app) finds nothing.
    """

    def __init__(self, ttl_s: float = SESSION_TTL_S):
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def issue(self, session: Session) -> str:
        """A new token for `session` (32 random bytes, URL-safe), kept until the session expires."""
        token = secrets.token_urlsafe(32)
        session.touch()
        with self._lock:
            self._sessions[token] = session
        self.expire()
        return token

    def find(self, token: object) -> Session | None:
        """The live session of `token`, marked used now; None for an unknown, expired or malformed token."""
        self.expire()
        if not isinstance(token, str) or not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
        if session is None:
            return None
        session.touch()
        if session.workdir.is_dir():  # its folder counts as used too: the folder sweeper goes by age
            os.utime(session.workdir)
        return session

    def holds(self, session: Session) -> bool:
        with self._lock:
            return any(held is session for held in self._sessions.values())

    def expire(self, now: float | None = None) -> int:
        """Closes and forgets the sessions unused for the time-to-live; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            stale = [token for token, session in self._sessions.items() if now - session.last_used > self.ttl_s]
            closed = [self._sessions.pop(token) for token in stale]
        for session in closed:
            session.close()
        return len(closed)

    def release(self, session: Session | None) -> None:
        """The gr.State delete callback: a session the store holds lives on for a reload (until `expire`);
        any other closes now."""
        if isinstance(session, Session) and not self.holds(session):
            session.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
