"""Analyse, decodable or causal: steer the voting heads with a class's mean, patch heads between two
support images (one or every head), and colour the heads by SAV accuracy, direct logit attribution
or patching effect, with a scatter of accuracy against the causal measure.

    summary, rows = handlers.steer("red", "replace", 1.0, 3, files, True, "generate", "", session)
    summary, figure, colouring = handlers.patch_heads(source, target, True, session)
    figure, scatter, note, colouring = handlers.attribute_heads(files, True, "", "direct logit attribution", session)

Every run reads its images as the classifier's encoding says, shows progress and stops at the next
batch when Cancel is pressed.
"""

from __future__ import annotations

import gradio as gr
import torch

from .. import plots
from ..attribution import attribute
from ..causal import patch, steering_study
from ..encoding import RunOptions
from ..errors import DataError
from ..report import Patching
from .analyse import MAX_ABLATION_QUERIES, MAX_RANDOM_DRAWS, interval_text
from .classify import check_same_model, query_encoding, query_run
from .common import md, ui_errors, whole_number
from .explore import fitted
from .session import Session, cancel_flag, cancellable

COLOURINGS = ("SAV accuracy", "direct logit attribution", "patching effect")


def stoppable(session: Session, on_batch=None) -> RunOptions:
    """The page's query runs (`query_run`), stopped at the next batch by Cancel."""
    flag = cancel_flag(session.id)
    flag.clear()
    return query_run(on_batch, flag.is_set)


def support_choices(session: Session) -> list[str]:
    fit = session.fit
    return [f"{i + 1}: {e.name} ({e.label})" for i, e in enumerate(fit.examples)] if fit else []


class CausalHandlers:
    @ui_errors
    def causal_choices(self, session: Session | None):
        """The classes to steer to and the support images to patch between, for the current fit."""
        session = self.session(session)
        classes = list(session.clf.classes_) if session.clf else []
        images = support_choices(session)
        first = images[0] if images else None
        other = next((c for c in images if session.fit and c.rsplit("(", 1)[-1] != first.rsplit("(", 1)[-1]), None) if first else None
        return (
            gr.update(choices=classes, value=classes[0] if classes else None),
            gr.update(choices=images, value=first),
            gr.update(choices=images, value=other),
        )

    @ui_errors
    @cancellable
    def steer(
        self, target: str, mode: str, alpha: float, draws: float, files, use_example: bool, method: str, question: str,
        session: Session | None, progress=gr.Progress(),
    ):  # fmt: skip
        """The other classes' queries answered with the voting heads set to `target`'s mean, beside random heads."""
        session = self.session(session)
        clf = fitted(session)
        fit = session.fit  # the results go to the fit they were run on, whatever happens meanwhile
        support = fit.examples
        if not support:
            raise DataError("steering puts a class's mean over its support images into the heads; a restored classifier has none")
        if not target:
            raise DataError("choose the class to steer to")
        if alpha is None or not -100 <= float(alpha) <= 100:
            raise DataError("alpha must be a number between -100 and 100")
        examples = self.test_set(session, files, use_example, question, limit=MAX_ABLATION_QUERIES)
        loaded = self.model(session, progress)
        check_same_model(session, loaded)
        draws = whole_number(draws or 0, "random-head draws", 0, MAX_RANDOM_DRAWS)
        encoding, note = query_encoding(session, question)
        report = steering_study(
            loaded, examples, clf.classes_, support, target, clf.selected_heads, encoding,
            stoppable(session, lambda done, n: progress((done, n), unit="queries")),
            mode=mode, alpha=float(alpha), n_random=draws, method=method, on_run=lambda what: progress(None, desc=what),
        )  # fmt: skip
        fit.results.steering[target] = report
        random_line = (
            f"as many **random heads** of the same layers: {', '.join(f'**{r:.3f}**' for r in report.random_flip_rates)}"
            if report.random
            else "no random control asked for"
        )
        how = "set to its mean" if mode == "replace" else f"shifted by {float(alpha):g} × (its mean − the support mean)"
        summary = (
            f"**Steering to {md(target)}**: the {len(report.heads)} voting heads {how}, on the {report.n} queries of the "
            f"other classes ({method}). **Flip rate** (answer becomes {md(target)}): "
            f"{interval_text(report.flip_rate, report.flip_interval)} · {random_line} · before steering: {report.before_rate:.3f}."
            + (f"\n\n*Note: {md(note)}*" if note else "")
        )
        rows = [[row["example"], row["label"], row["before"], row["after"]] for row in report.answers()]
        return summary, rows

    def patch_pair(self, source: str, target: str, session: Session | None, progress=gr.Progress()):
        return self.patch_heads(source, target, False, session, progress)

    def sweep_pair(self, source: str, target: str, session: Session | None, progress=gr.Progress()):
        return self.patch_heads(source, target, True, session, progress)

    @ui_errors
    @cancellable
    def patch_heads(self, source: str, target: str, sweep: bool, session: Session | None, progress=gr.Progress()):
        """A support image run with the voting heads (or, swept, each head alone) taken from another's run."""
        session = self.session(session)
        clf = fitted(session)
        fit = session.fit
        choices = support_choices(session)
        if source not in choices or target not in choices:
            raise DataError("choose a source and a target image among the support set")
        first, second = (fit.examples[choices.index(name)] for name in (source, target))
        loaded = self.model(session, progress)
        check_same_model(session, loaded)
        flag = cancel_flag(session.id)
        flag.clear()

        def on_progress(done: int, n: int) -> None:
            if flag.is_set():
                raise DataError(f"cancelled after {done} of {n} heads")
            progress((done, n), desc="each head patched alone", unit="heads")

        report = patch(
            loaded, clf, first, second, clf.selected_heads, clf.encoding, sweep=bool(sweep), batch_size=16, on_progress=on_progress
        )
        fit.results.patching = Patching(source, target, report)
        summary = (
            f"Target read as **{md(report.target_label)}**, source as **{md(report.source_label)}**; "
            f"the {len(report.heads)} voting heads patched from the source. The model's answer: "
            f"**{md(report.answer_before)}** → **{md(report.answer_after)}** · logit difference "
            f"({md(report.source_label)} − {md(report.target_label)}, first answer token): "
            f"**{report.logit_diff_before:.2f}** → **{report.logit_diff_after:.2f}**."
        )
        if report.effects is None:
            return summary, gr.update(), gr.update()
        effects = torch.zeros(len(loaded.layout.heads))
        index = {head: i for i, head in enumerate(loaded.layout.heads)}
        for layer, head, effect in report.effects:
            effects[index[(layer, head)]] = effect
        session.lens_cache[("patching effect", session.current)] = effects
        summary += " The map: each head patched alone, 1 = the change of patching every head."
        # the colouring follows, and its change draws the scatter beside the map
        return summary, plots.measure_heatmap(clf, session.fit.n_layers, effects, "patching effect"), gr.update(value="patching effect")

    @ui_errors
    @cancellable
    def attribute_heads(self, files, use_example: bool, question: str, colouring: str, session: Session | None, progress=gr.Progress()):
        """Direct logit attribution over the test set (kept for the colouring), then the map and the scatter."""
        session = self.session(session)
        clf = fitted(session)
        fit = session.fit
        examples = self.test_set(session, files, use_example, question, limit=MAX_ABLATION_QUERIES)
        loaded = self.model(session, progress)
        check_same_model(session, loaded)
        encoding, note = query_encoding(session, question)
        report = attribute(loaded, examples, clf.classes_, encoding, stoppable(session, lambda d, n: progress((d, n), unit="queries")))
        session.lens_cache[("direct logit attribution", session.current)] = report.head_scores()
        fit.results.attribution = report
        lens = ", ".join(f"{layer}: {p:.2f}" for layer, p in enumerate(report.true_class_lens))
        text = (
            f"Direct logit attribution over {len(examples)} queries (the parts add up to the logits within "
            f"{report.decomposition_error:.1e}). **Logit lens**, the true class's probability read off each layer: {lens}."
            + (f"\n\n*Note: {md(note)}*" if note else "")
        )
        colouring = "direct logit attribution"
        figure, scatter, _ = self.colour_heads(colouring, session)
        return figure, scatter, text, gr.update(value=colouring)

    @ui_errors
    def colour_heads(self, colouring: str, session: Session | None):
        """The heads coloured by the chosen measure, and accuracy against it (no model call)."""
        session = self.session(session)
        clf = fitted(session)
        if colouring not in COLOURINGS:
            raise DataError(f"colour heads by one of: {', '.join(COLOURINGS)}")
        scores = clf.in_sample_scores_ if clf.scoring == "in-sample" else clf.loo_scores_
        if colouring == "SAV accuracy":
            return plots.measure_heatmap(clf, session.fit.n_layers, scores, colouring), gr.update(), ""
        measure = session.lens_cache.get((colouring, session.current))
        if measure is None:
            run = "Attribute" if colouring == "direct logit attribution" else "Sweep"
            return gr.update(), gr.update(), f"Run *{run}* first: no {colouring} for this task yet."
        return (
            plots.measure_heatmap(clf, session.fit.n_layers, measure, colouring),
            plots.decodable_causal_scatter(clf, scores, measure, colouring),
            "",
        )
