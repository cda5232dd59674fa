"""Analyse: does the model need the voting heads, how accuracy moves with k, how two tasks' heads relate.

    handlers = AnalyseHandlers(default_model)
    summary, rows = handlers.own_answers(files, True, "generate", "", session)
    summary, rows = handlers.ablate(files, True, "mean", "generate", 3, "", session)
    figure, note = handlers.curve(files, True, True, "", session)
    left, right, summary = handlers.compare("colour", "shape", 10, session)  # each map frames its task's top 10

Each accuracy carries its 95 % interval: with a few dozen queries, a few points are noise.
"""

from __future__ import annotations

import gradio as gr

from .. import plots
from ..ablation import ablation_study
from ..analysis import accuracy_curve, class_indices, compare_tasks, top_heads
from ..answers import ZeroShotReport, zero_shot
from ..capture import capture_heads
from ..errors import DataError
from ..pipeline import evaluate
from ..report import OwnAnswers
from .classify import ClassifyHandlers, check_same_model, classify_test_set, query_encoding, query_run
from .common import md, ui_errors, whole_number
from .explore import fitted
from .session import Session

MAX_ABLATION_QUERIES = 200  # every random draw answers every query again
MAX_RANDOM_DRAWS = 5


def interval_text(accuracy: float, interval: tuple[float, float]) -> str:
    low, high = interval
    return f"**{accuracy:.3f}** ({low:.3f}–{high:.3f})"


def answer_rows(report: ZeroShotReport) -> list[list[str]]:
    """A few answers of each kind (right, wrong, unmatched); table cells show text as text."""
    return [[f"{kind}: {row['example']}", row["label"], row["answer"]] for kind, rows in report.samples.items() for row in rows]


class AnalyseHandlers(ClassifyHandlers):
    @ui_errors
    def own_answers(self, files, use_example: bool, method: str, question: str, session: Session | None, progress=gr.Progress()):
        """SAV's accuracy and the model's own answers' on the same queries, as in the paper's table."""
        session = self.session(session)
        clf = fitted(session)
        fit = session.fit  # the results go to the fit they were run on, whatever happens meanwhile
        examples = self.test_set(session, files, use_example, question)
        loaded = self.model(session, progress)
        check_same_model(session, loaded)
        encoding, note = query_encoding(session, question)
        predictions = classify_test_set(loaded, clf, examples, encoding)
        sav = evaluate([p.label for p in predictions], [e.label for e in examples], clf.classes_)
        answering = query_run(lambda done, n: progress((done, n), desc=f"the model answers ({method})", unit="queries"))
        own = zero_shot(loaded, examples, clf.classes_, encoding, answering, method=method)
        fit.results.own_answers = OwnAnswers(sav, own)
        unmatched = f"; {own.unmatched} answers named no class" if method == "generate" else ""
        summary = (
            f"On {own.n} queries: **SAV** ({clf.k} heads) {interval_text(sav.accuracy, sav.interval)} · "
            f"**the model's own answers** ({method}) {interval_text(own.accuracy, own.interval)}{unmatched}. "
            "95 % intervals in brackets." + (f"\n\n*Note: {md(note)}*" if note else "")
        )
        return summary, answer_rows(own)

    @ui_errors
    def ablate(
        self, files, use_example: bool, mode: str, method: str, draws: float, question: str, session: Session | None, progress=gr.Progress()
    ):
        """The model's own answers with the voting heads ablated, beside random heads of the same layers."""
        session = self.session(session)
        clf = fitted(session)
        fit = session.fit
        examples = self.test_set(session, files, use_example, question, limit=MAX_ABLATION_QUERIES)
        support = fit.examples
        if mode == "mean" and not support:
            raise DataError("mean ablation averages over the support set, which a restored classifier lacks: choose zero")
        loaded = self.model(session, progress)
        check_same_model(session, loaded)
        draws = whole_number(draws or 0, "random-head draws", 0, MAX_RANDOM_DRAWS)
        encoding, note = query_encoding(session, question)
        report = ablation_study(
            loaded,
            examples,
            clf.classes_,
            clf.selected_heads,
            encoding,
            query_run(),
            mode=mode,
            support=support,
            n_random=draws,
            method=method,
            on_run=lambda what: progress(None, desc=what),
        )
        fit.results.ablation = report
        random_line = (
            f"as many **random heads** of the same layers ablated: **{report.random_accuracy:.3f}** "
            f"(mean of {len(report.random)} draws: {', '.join(f'{a:.3f}' for a in report.random_accuracies)})"
            if report.random
            else ("no random control asked for" if not draws else "no random control: those layers have too few other heads")
        )
        summary = (
            f"The model's own answers ({method}) on {report.baseline.n} queries, {len(report.heads)} voting heads "
            f"{mode}-ablated. Nothing ablated: {interval_text(report.baseline.accuracy, report.baseline.interval)} · "
            f"**voting heads ablated**: {interval_text(report.ablated.accuracy, report.ablated.interval)} · {random_line}."
            + (f"\n\n*Note: {md(note)}*" if note else "")
        )
        rows = [
            [example.name, example.label, before, after]
            for example, before, after in zip(examples, report.baseline.answers, report.ablated.answers)
        ]
        return summary, rows

    @ui_errors
    def curve(self, files, use_example: bool, with_test: bool, question: str, session: Session | None, progress=gr.Progress()):
        """Accuracy for every k: from cached similarities, plus a test set captured once (every layer)."""
        session = self.session(session)
        clf = fitted(session)
        fit = session.fit
        test_sims = test_labels = None
        override = ""
        if with_test:
            examples = self.test_set(session, files, use_example, question)
            loaded = self.model(session, progress)
            check_same_model(session, loaded)
            encoding, override = query_encoding(session, question)
            capturing = query_run(lambda done, n: progress((done, n), desc="capturing the test set once", unit="examples"))
            activations = capture_heads(loaded, examples, encoding, capturing)
            test_sims = clf.similarities(activations)
            test_labels = class_indices(clf, [e.label for e in examples])
        result = accuracy_curve(clf, fit.activations, test_sims, test_labels)
        fit.results.curve = result
        best, by = result.best_k()
        nested = f" {result.nested_skipped[0].upper()}{result.nested_skipped[1:]}." if result.nested_skipped else ""
        note = (
            f"Leave-one-out on the support set is optimistic: the heads were chosen on every example. "
            f"Best k by the {by}: {best}.{nested}" + (f" Note: {override}" if with_test and override else "")
        )
        return plots.curve_chart(result, len(clf.classes_)), note

    def task_choices(self, session: Session | None):
        names = list(self.session(session).fits)
        first = names[-2] if len(names) > 1 else (names[0] if names else None)
        return gr.update(choices=names, value=first), gr.update(choices=names, value=names[-1] if names else None)

    @ui_errors
    def compare(self, first: str | None, second: str | None, k: float, session: Session | None):
        """Two fitted tasks' heatmaps side by side, with their shared top-k heads, Jaccard and rank correlation."""
        session = self.session(session)
        if len(session.fits) < 2:
            raise DataError("compare needs two fitted tasks: extract another task (or restore a classifier), then come back")
        if first not in session.fits or second not in session.fits:
            raise DataError("choose two of this session's fitted tasks")
        a, b = session.fits[first], session.fits[second]
        k = whole_number(k, "top k", 1, min(a.clf.layout_.n_heads, b.clf.layout_.n_heads))
        result = compare_tasks(a.clf, b.clf, k)
        a.results.comparisons[second] = b.results.comparisons[first] = result  # the measures are symmetric
        summary = (
            f"Top {k} heads of **{md(first)}** and **{md(second)}** (framed on both maps): **{result.shared}** shared "
            f"(gold frames), Jaccard **{result.jaccard:.3f}**; rank correlation of all head scores (Spearman) **{result.spearman:.3f}**."
        )
        top_a, top_b = top_heads(a.clf, k), top_heads(b.clf, k)
        shared = set(top_a) & set(top_b)

        def heatmap(fit, top, name):
            title = f"{name}: top {k} framed, {len(shared)} shared (gold)"
            return plots.head_heatmap(fit.clf, fit.n_layers, fit.describe(), framed=top, shared=shared, title=title, about_width=56)

        return heatmap(a, top_a, first), heatmap(b, top_b, second), summary
