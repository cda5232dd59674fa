"""Extraction and the heatmap: fit the support set once, then change k or the heads without the model.

    handlers = ExploreHandlers(default_model)
    session, heatmap, summary, selection, heads, k, status = handlers.extract(question, ..., session)

Extraction is the only model call here; everything else re-scores cached similarities.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence

import gradio as gr

from .. import plots
from ..capture import CaptureCancelled
from ..classifier import SAVClassifier
from ..data import labels_of
from ..encoding import Encoding, RunOptions
from ..errors import DataError
from ..models import unseen_words
from ..pipeline import fit_examples
from .budget import BudgetHandlers, default_budget, page_budget, status_budget
from .common import md, ui_errors, visitor_gone, whole_number
from .session import MAX_BATCH, MAX_IMAGE_TOKENS, MAX_PIXELS_CAP, Fit, Session, arm, cancel_flag, model_work, request_cancel


def voting(n: int) -> str:
    """ "1 head votes", "5 heads vote"."""
    return "1 head votes" if n == 1 else f"{n} heads vote"


def explore_views(session: Session, status: str = "", k_value: bool = True):
    """(session, heatmap, summary, selection table, heads dropdown, k slider, status) for the current fit.

    `k_value=False` leaves the slider's value alone: while the visitor drags it, an answer to an earlier
    value must not pull the thumb back."""
    fit = session.fit
    if fit is None:
        return session, plots.head_heatmap(None, 0), "", [], gr.update(choices=[], value=[]), gr.update(), status
    clf = fit.clf
    loo = clf.leave_one_out_accuracy()
    summary = (
        f"### Leave-one-out accuracy: **{loo:.3f}**\n"
        f"{voting(len(clf.selected_heads))} · {len(clf.classes_)} classes · {int(clf.support_labels_.numel())} support examples. "
        "Each support example is classified by class means that leave it out; "
        "heads are not re-selected, so the estimate is slightly optimistic."
    )
    if fit.mode == "custom set":
        summary += f" A custom set of {len(clf.selected_heads)} heads votes; choose *top-k* to go back to the top {fit.top_k}."
    elif fit.custom is not None:
        summary += f" Your custom set of {len(fit.custom)} heads is kept: choose *custom set* to bring it back."
    names = [f"L{layer} H{head}" for layer, head in clf.heads_]
    chosen = [f"L{layer} H{head}" for layer, head in clf.selected_heads]
    k = gr.update(maximum=clf.layout_.n_heads, value=fit.top_k) if k_value else gr.update(maximum=clf.layout_.n_heads)
    figure = plots.head_heatmap(clf, fit.n_layers, fit.describe())
    return session, figure, summary, plots.selection_table(clf), gr.update(choices=names, value=chosen), k, status


def fit_banner(session: Session, question: str | None = None) -> str:
    """Which task, question, model and classes the current result belongs to; out of date once its inputs change."""
    fit = session.fit
    if fit is None:
        return "No classifier yet: pick a support set and press **Extract heads**."
    changed = []
    if fit.examples and [(e.images, e.label) for e in fit.examples] != [(e.images, e.label) for e in session.support]:
        changed.append("the support set")
    typed = (question if question is not None else session.question or "").strip()
    if fit.examples and typed and typed != (fit.question or ""):
        changed.append("the question")
    if session.model_key != fit.model_key:
        changed.append("the model")
    line = f"**Current classifier**: {md(fit.describe())}"
    if changed:
        line = f"⚠ **Out of date**: {' and '.join(changed)} changed since extraction; press **Extract heads** again.  \n{line}"
    return line


def choose_custom(session: Session, heads: list[tuple[int, int]]):
    """Makes `heads` the voting set, remembered as the custom set."""
    fit = session.fit
    fitted(session).select(heads=heads)
    fit.custom = fit.clf.selected_heads
    return explore_views(session)


def toggle(session: Session, head: tuple[int, int]):
    """Adds the head to the selection or removes it (one head always stays); returns the explore views."""
    clf = fitted(session)
    if head not in clf.layout_:
        raise DataError(f"no head {head[1]} in layer {head[0]} of this model")
    selected = clf.selected_heads
    if head in selected:
        if len(selected) == 1:
            raise DataError("at least one head must stay selected")
        selected = [h for h in selected if h != head]
    else:
        selected = selected + [head]
    return choose_custom(session, selected)


def parse_cell(cell: str) -> tuple[int, int]:
    """ "layer,head" (anything after a second comma is ignored: the browser adds a mode and a nonce)."""
    try:
        layer, head = (int(x) for x in str(cell).split(",")[:2])
    except ValueError:
        raise DataError(f"expected 'layer,head'; got {cell!r}") from None
    return layer, head


def fitted(session: Session) -> SAVClassifier:
    if session.clf is None:
        raise DataError("extract heads first (or restore a saved classifier)")
    return session.clf


class ExploreHandlers(BudgetHandlers):
    @ui_errors
    def extract(
        self,
        question: str,
        max_pixels: float,
        batch_size: float,
        k: float,
        scoring: str,
        session: Session | None,
        image_tokens: float | None = None,
        progress=gr.Progress(),
    ):
        """Runs the model once per support example and fits the classifier: the only slow step.

        The support set, its task and the model are taken when the extraction starts, and the fit is
        recorded under them: an edit meanwhile (another task loaded, the set cleared, labels changed)
        leaves the fit marked out of date, and the files the run reads stay until it ends."""
        session = self.session(session)
        with session.lock:  # pruning takes the lock too: it sees these examples as being read
            support = session.reading = list(session.support)
            example_task, model_key = session.example_task, session.model_key
        try:
            with model_work(session.id, armed=True):  # Cancel stops it from here on
                return self._extract(
                    support, example_task, model_key, question, max_pixels, batch_size, k, scoring, session, image_tokens, progress
                )
        finally:
            session.reading = []

    def _extract(self, support, example_task, model_key, question, max_pixels, batch_size, k, scoring, session, image_tokens, progress):
        if not support:
            raise DataError("no support examples: load an example task, upload a zip or data file, or add labeled images")
        labels = labels_of(support)
        max_pixels, batch_size = int(max_pixels), int(batch_size)
        if not 64 <= max_pixels <= MAX_PIXELS_CAP:
            raise DataError(f"max pixels must be between 64 and {MAX_PIXELS_CAP:,}; got {max_pixels:,}")
        if not 1 <= batch_size <= MAX_BATCH:
            raise DataError(f"batch size must be between 1 and {MAX_BATCH}; got {batch_size}")
        question = (question or "").strip() or session.question.strip() or None
        if question is None and any(e.question is None for e in support):
            raise DataError("no question: type the question to ask about every image")
        session.question = question or ""
        flag = cancel_flag(session.id)
        if flag.is_set():  # Cancel was pressed while this extraction waited in the queue
            flag.clear()
            return explore_views(session, "Extraction cancelled before it started; the previous result (if any) is kept.")
        loaded = self.model(session, progress)
        budget, how = page_budget(loaded, default_budget() if image_tokens is None else image_tokens)
        k = max(1, min(whole_number(k, "k", 1, 100_000), loaded.layout.n_heads))
        total = len(support)
        progress((0, total), desc="extracting heads", unit="examples")
        started = time.perf_counter()
        encoding = Encoding(question=question, max_pixels=max_pixels, max_image_tokens=budget.budget if budget else None)
        gone = visitor_gone()
        run = RunOptions(
            batch_size=batch_size,
            on_batch=lambda done, n: progress((done, n), desc="extracting heads", unit="examples"),
            should_stop=lambda: flag.is_set() or gone(),  # Cancel, or the visitor has gone
            max_request_image_tokens=MAX_IMAGE_TOKENS,
        )
        before = loaded.image_cache.count()
        try:
            clf, activations = fit_examples(loaded, support, encoding, run, k=k, scoring=scoring)
        except CaptureCancelled as stopped:
            return explore_views(session, f"Extraction {md(stopped)}; the previous result (if any) is kept.")
        finally:
            flag.clear()
        self.record_cost(session, time.perf_counter() - started, activations.image_tokens)
        unseen = unseen_words(loaded.processor, dict.fromkeys(e.question_or(question) for e in support))
        note = ""
        if unseen:
            note = f" The model does not know these words of the question and will not see them: {', '.join(map(repr, unseen))}."
            gr.Warning(html.escape(note.strip(), quote=False))
        fit = Fit(
            clf, activations, labels, model_key, loaded.revision, loaded.n_layers, example_task or "my task", example_task, support, top_k=k
        )
        session.keep_fit(fit)
        done = (
            f"Extracted {loaded.layout.n_heads} heads in {loaded.n_layers} layers from {total} examples with {md(loaded.model_id)}; "
            f"images at {md(status_budget(budget, how))}."
        )
        cached = loaded.image_cache.since(before).describe()
        done += f" {md(cached[0].upper() + cached[1:])}." if cached else ""
        return explore_views(session, done + md(note))

    def arm_extraction(self, session: Session | None) -> str:
        """Runs at once when Extract is pressed, before the extraction queues: an earlier Cancel no longer counts."""
        if isinstance(session, Session):
            cancel_flag(session.id).clear()
            arm(session.id)
        return "Waiting for the model…"

    def cancel(self, session: Session | None) -> str:
        """Stops the session's extraction (or steering, patching, attribution) at the next batch; with nothing
        armed or running, the flag stays down: it would stop the next run the visitor starts."""
        if isinstance(session, Session) and request_cancel(session.id):
            return "Cancelling after the current batch…"
        return "Nothing to cancel: no extraction or other model run is under way."

    # ----------------------------------------------------------------------------- re-scoring (no model call)
    @ui_errors
    def set_k(self, k: float, session: Session | None):
        """The top k heads vote (a custom set is kept, to come back to)."""
        session = self.session(session)
        clf = fitted(session)
        try:
            k = whole_number(k, "k", 1, clf.layout_.n_heads)
        except DataError as error:  # the box goes back to the k that votes, so that every view agrees with it
            gr.Warning(html.escape(f"{error}; k stays {session.fit.top_k}", quote=False))
            return explore_views(session, k_value=True)
        clf.select(k=k)
        session.fit.top_k = k
        return explore_views(session, k_value=False)

    @ui_errors
    def set_mode(self, mode: str, session: Session | None):
        """ "top-k" or "custom set": which of the two ways of choosing heads votes."""
        session = self.session(session)
        clf = fitted(session)
        fit = session.fit
        if mode == "custom set":
            if fit.custom is None:
                raise DataError("no custom set yet: shift-click cells of the heatmap, or edit the heads below")
            clf.select(heads=fit.custom)
        else:
            clf.select(k=fit.top_k)
        return explore_views(session)

    def mode_view(self, session: Session | None):
        fit = session.fit if isinstance(session, Session) else None
        return gr.update(value=fit.mode if fit else "top-k")

    def banners(self, question: str | None, session: Session | None):
        session = self.session(session)
        text = fit_banner(session, question)
        return text, text

    @ui_errors
    def toggle_head(self, cell: str, session: Session | None):
        """`cell` is "layer,head" (anything after a second comma is ignored: the browser adds a nonce)."""
        return toggle(self.session(session), parse_cell(cell))

    @ui_errors
    def set_heads(self, names: Sequence[str], session: Session | None):
        """Replaces the selection with heads named "L<layer> H<head>" (a head named twice counts once)."""
        session = self.session(session)
        fitted(session)
        heads = []
        for name in names or []:
            match = re.fullmatch(r"\s*L(\d+)\s*H(\d+)\s*", str(name))
            if not match:
                raise DataError(f"expected heads named like 'L3 H5'; got {name!r}")
            heads.append((int(match[1]), int(match[2])))
        if not heads:
            raise DataError("select at least one head")
        return choose_custom(session, heads)
