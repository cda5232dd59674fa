"""A reload keeps the session: the browser keeps a token (gr.BrowserState), the server its session by that
token (`SessionStore`, in memory, until the session's time-to-live); the page's load event finds it and
puts back what the page showed: support set, question, heatmap and k, classified images, evaluation
(the load event's chain then draws the banners, the top-k switch and the image-token count, as after an extraction).

    session, token, *views = handlers.resume(token_from_the_browser, fresh_session)

A token the store does not know (none yet, forged, expired, from an earlier run of the app) gets the
visitor's fresh session and a new token; the page then stays as it loaded.
"""

from __future__ import annotations

import gradio as gr

from .classify import classify_views, evaluation_views
from .common import md, ui_errors
from .explore import explore_views
from .housekeeping import sweep_also
from .mistakes import MistakesHandlers
from .session import SESSION_TTL_S, Session, SessionStore
from .support import model_line, support_views

# what `resume` returns after (session, token), in this order; blocks.py wires the same widgets
RESUMED = (
    "model_status",
    "task",
    "support_table",
    "gallery",
    "question",
    "support_status",
    "heatmap",
    "summary",
    "selection",
    "heads",
    "k",
    "status",
    "results",
    "detail_choice",
    "predicted",
    "votes",
    "head_votes",
    "answer",
    "preview",
    "accuracy",
    "confusion",
    "per_class",
    "mistakes_note",
    "mistakes",
    "projection_head",
    "projection",
)


class ResumeHandlers(MistakesHandlers):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sessions = SessionStore(SESSION_TTL_S)
        sweep_also(self.sessions.expire)  # expired sessions close even when no visitor comes

    @ui_errors
    def resume(self, token: object, session: Session | None):
        """The page's load event: the session the browser's token names, with every view as it was; else
        the fresh session under a new token, and the views left alone."""
        found = self.sessions.find(token)
        if found is None:
            session = self.session(session)
            return (session, self.sessions.issue(session), *[gr.update()] * len(RESUMED))
        return (found, token, *self.resumed_views(found))

    def resumed_views(self, session: Session) -> tuple:
        with session.lock:
            key = session.model_key
            model = model_line(self.registry, key) if key in self.registry else f"Model **{md(key.model_id)}** loads on first use."
            task = gr.update(value=session.example_task) if session.example_task else gr.update()
            _, table, gallery, question, support_status = support_views(session, "")
            _, heatmap, summary, selection, heads, k, _ = explore_views(session)
            status = "Your session is back: support set, heads and results as you left them." if session.fit else ""
            if session.predictions:
                _, results, choice, predicted, votes, head_votes, answer, preview = classify_views(session)
            else:
                results = choice = predicted = votes = head_votes = answer = preview = gr.update()
            _, accuracy, confusion, per_class = evaluation_views(session)
            note, mistakes, head, projection = self.mistakes_views(None, session)
        return (
            model, task, table, gallery, question, support_status, heatmap, summary, selection, heads, k, status,
            results, choice, predicted, votes, head_votes, answer, preview,
            accuracy, confusion, per_class, note, mistakes, head, projection,
        )  # fmt: skip
