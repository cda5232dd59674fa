"""A report to take away: one self-contained HTML file of a fitted classifier and whatever was run on it.

    maps = lens_maps(loaded, clf, support)                      # the top heads' lens: model passes, done first
    results = Results(evaluation=evaluate_examples(loaded, clf, queries), curve=accuracy_curve(clf, activations))
    write_report("report.html", clf, ModelInfo.of(loaded), task="colour", results=results, maps=maps)

The file opens without a network: plotly's script is inlined once, every figure after it is written
without it, and every image is a data: URI. What was not run is left out and named as such. User
text (labels, questions, file names) is HTML-escaped, as everywhere the figures show it.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
from PIL import Image
from plotly.offline import get_plotlyjs

from . import plots
from .ablation import AblationReport
from .analysis import AccuracyCurve, TaskComparison, wilson_interval
from .answers import ZeroShotReport
from .attribution import AttributionReport
from .causal import PatchReport, SteeringReport
from .classifier import SAVClassifier
from .data import Example, is_video, open_image
from .encoding import Encoding
from .heads import Head
from .lens import ClassAverage, average_by_class, average_tile, head_overlay, look
from .models import LoadedModel
from .pipeline import EvalReport, Evaluation

LENS_HEADS = 3  # the top heads whose lens the report shows
AVERAGE_OVER = 12  # images per class in a class-average map (one lens pass each), as the app's Inspect panel
LENS_SIDE = 128  # overlays and class maps are drawn this wide (small images enlarged, pixels kept sharp)
THUMB_SIDE = 96  # misclassified examples' thumbnails
MAX_ERRORS_SHOWN = 48


@dataclass(frozen=True)
class ModelInfo:
    """The model a report's results came from."""

    model_id: str
    revision: str
    dtype: str  # "float32", …; "not loaded" where the report was made without the model
    n_layers: int = 0  # decoder layers (0: as many as the classifier's heads reach)

    @classmethod
    def of(cls, loaded: LoadedModel) -> ModelInfo:
        return cls(loaded.model_id, loaded.revision, str(loaded.model.dtype).removeprefix("torch."), loaded.n_layers)

    @classmethod
    def of_classifier(cls, clf: SAVClassifier) -> ModelInfo:
        """What a saved classifier's manifest says, when the model itself was not loaded."""
        return cls(clf.manifest_.model_id, clf.manifest_.revision, "not loaded")


@dataclass(frozen=True)
class OwnAnswers:
    """SAV beside the model's own answers on the same queries."""

    sav: EvalReport
    own: ZeroShotReport


@dataclass(frozen=True)
class Patching:
    """One support image run with heads patched from another's (`report.effects`: a sweep)."""

    source: str
    target: str
    report: PatchReport


@dataclass
class Results:
    """What was run on one fit, for its report: None (or empty) where it was not run."""

    evaluation: Evaluation | None = None
    own_answers: OwnAnswers | None = None
    curve: AccuracyCurve | None = None
    ablation: AblationReport | None = None
    steering: dict[str, SteeringReport] = field(default_factory=dict)  # by target class, the latest run of each
    patching: Patching | None = None
    attribution: AttributionReport | None = None
    comparisons: dict[str, TaskComparison] = field(default_factory=dict)  # by the other task's name


@dataclass(frozen=True)
class ClassLens:
    """Where one head looks in one class: on the class's first image, and its mean map over the class."""

    label: str
    example: str  # the name of the image under `overlay`
    overlay: Image.Image
    average: ClassAverage


@dataclass(frozen=True)
class HeadMaps:
    head: Head
    classes: list[ClassLens]  # in class order


@dataclass(frozen=True)
class LensMaps:
    source: str  # what the images are, in words ("support images", "queries")
    heads: list[HeadMaps]


def lens_maps(
    loaded: LoadedModel,
    clf: SAVClassifier,
    examples: Sequence[Example],
    heads: Sequence[Head] | None = None,
    encoding: Encoding | None = None,
    *,
    per_class: int = AVERAGE_OVER,
    source: str = "support images",
) -> LensMaps:
    """The lens of `heads` (default: the top `LENS_HEADS` voting heads) over labelled examples, read as the
    classifier's encoding says: one pass per example for every head, at most `per_class` examples a
    class; the overlay on each class's first image, and the mean map per class. Videos are skipped."""
    heads = list(heads) if heads is not None else clf.selected_heads[:LENS_HEADS]
    encoding = encoding or clf.encoding
    by_class: dict[str, list[Example]] = {}
    for example in examples:
        if example.label is not None and example.images and not any(is_video(item) for item in example.images):
            by_class.setdefault(str(example.label), []).append(example)
    chosen = [example for label in sorted(by_class) for example in by_class[label][:per_class]]
    if not chosen:
        return LensMaps(source, [])
    lenses = [look(loaded, example, heads, encoding) for example in chosen]
    averages = average_by_class(lenses, [str(e.label) for e in chosen], heads)  # classes sorted, as `chosen` is
    firsts = [i for i, e in enumerate(chosen) if i == 0 or chosen[i - 1].label != e.label]
    images = [open_image(chosen[i].images[0]) for i in firsts]
    maps = []
    for head in heads:
        classes = [
            ClassLens(str(chosen[i].label), chosen[i].name, head_overlay(lenses[i], head, image, min_side=LENS_SIDE), average)
            for i, image, average in zip(firsts, images, averages[head])
        ]
        maps.append(HeadMaps(head, classes))
    return LensMaps(source, maps)


def questions_of(examples: Sequence[Example]) -> list[str]:
    """The distinct questions examples ask of their own, in order."""
    return list(dict.fromkeys(e.question for e in examples if e.question))


def write_report(path: str | Path, clf: SAVClassifier, model: ModelInfo, **kwargs) -> Path:
    """Writes `report_html` to `path` (UTF-8; its folder made if needed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(clf, model, **kwargs), encoding="utf-8")
    return path


def report_html(
    clf: SAVClassifier,
    model: ModelInfo,
    *,
    task: str = "",
    results: Results | None = None,
    maps: LensMaps | None = None,
    questions: Sequence[str] = (),
) -> str:
    """The whole report as one HTML document (see the module's doc). `questions`: what the support rows
    asked, where the classifier has no question of its own."""
    results = results or Results()
    page = _Page()
    about = _about(clf, model, task, questions)
    page.section("The classifier", about.table)
    page.section(
        "Every head",
        "<p>Each head's accuracy at telling the classes apart on the support set, layers down and heads across (hover a cell "
        "for its in-sample and leave-one-out accuracy); framed cells are the heads that vote. The colour scale is centred on "
        "chance.</p>" + page.figure(plots.head_heatmap(clf, model.n_layers, about.line), "sav-heatmap"),
    )
    page.section("The heads that vote", _selection_table(clf))
    if maps is not None and maps.heads:
        page.section("Where the top heads look", _lens_section(clf, maps))
    not_run = []
    sections = (
        ("Held-out accuracy", results.evaluation, lambda: _evaluation_section(page, results.evaluation)),
        ("The model's own answers", results.own_answers, lambda: _own_answers_section(results.own_answers)),
        ("Accuracy against k", results.curve, lambda: _curve_section(page, results.curve, len(clf.classes_))),
        ("Ablation: does the model need the voting heads?", results.ablation, lambda: _ablation_section(results.ablation)),
        ("Steering: do the voting heads carry the answer?", results.steering, lambda: _steering_section(results.steering)),
        ("Patching", results.patching, lambda: _patching_section(page, clf, model, results.patching)),
        ("Direct logit attribution", results.attribution, lambda: _attribution_section(page, clf, model, results.attribution)),
        ("Compared with other tasks", results.comparisons, lambda: _comparison_section(results.comparisons)),
    )
    for title, result, body in sections:
        if result:
            page.section(title, body())
        else:
            not_run.append(title.split(":")[0].lower())
    if not_run:
        page.section("Not run", f"<p>Not part of this report (not run): {html.escape(', '.join(not_run))}.</p>")
    return page.document(f"SAV report: {task}" if task else "SAV report")


# ----------------------------------------------------------------------------- the page
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1180px; padding: 16px 24px;
  color: #1f2330; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #dde; padding-bottom: 4px; margin-top: 1.6em; }
h3 { font-size: 1.05em; margin: 1em 0 0.3em; }
.meta { color: #667; font-size: 0.9em; margin-top: 0; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 0.92em; }
th, td { border: 1px solid #dde; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f5fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 6px 0 12px; }
figure { margin: 0; text-align: center; font-size: 0.8em; color: #445; max-width: 150px; }
figure img { display: block; margin: 0 auto 2px; image-rendering: pixelated; border: 1px solid #dde; }
.error { border: 1px solid #e4572e55; border-radius: 6px; padding: 4px; width: 150px; }
.plot { margin: 4px 0 12px; }
"""


class _Page:
    """The document being written: its sections, and plotly's script written once, before the first figure."""

    def __init__(self):
        self.parts: list[str] = []
        self.figures = 0

    def section(self, title: str, body: str) -> None:
        self.parts.append(f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>")

    def figure(self, fig: go.Figure, div_id: str | None = None) -> str:
        self.figures += 1
        div_id = div_id or f"sav-figure-{self.figures}"
        config = {"displaylogo": False, "responsive": True}
        return f"<div class='plot'>{fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=config)}</div>"

    def document(self, title: str) -> str:
        made = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style>\n<script type='text/javascript'>{get_plotlyjs()}</script>\n</head><body>\n"
            f"<h1>{html.escape(title)}</h1><p class='meta'>Made by SAV Explorer on {made}: Sparse Attention Vectors "
            "(Mitra et al., 2024, arXiv 2412.00142). This file needs no network.</p>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )


def data_uri(image: Image.Image, max_side: int | None = None) -> str:
    """The image as a data: URI, PNG or JPEG, whichever is smaller (flat drawings: PNG; photos: JPEG)."""
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    encoded = {}
    for kind, options in (("png", {"optimize": True}), ("jpeg", {"quality": 85})):
        buffer = io.BytesIO()
        image.save(buffer, kind.upper(), **options)
        encoded[kind] = buffer.getvalue()
    kind = min(encoded, key=lambda k: len(encoded[k]))
    return f"data:image/{kind};base64,{base64.b64encode(encoded[kind]).decode('ascii')}"


def _figure(images: Sequence[tuple[Image.Image, str]], lines: Sequence[str], width: int, css: str = "") -> str:
    """Images (each with its alt text) drawn `width` wide, stored at up to twice that, over lines of caption
    (the first in bold); all text escaped."""
    pictures = "".join(
        f"<img src='{data_uri(image, 2 * width)}' width='{width}' alt='{html.escape(alt, quote=True)}'>" for image, alt in images
    )
    caption = "<br>".join(f"<b>{html.escape(line)}</b>" if i == 0 else html.escape(line) for i, line in enumerate(lines))
    return f"<figure class='{css}'>{pictures}{caption}</figure>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table of text cells (escaped); numbers right-aligned, floats to three places."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"<td class='num'>{value:.3f}</td>"
        if isinstance(value, int):
            return f"<td class='num'>{value}</td>"
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _rate(value: float, interval: tuple[float, float]) -> str:
    return f"{value:.3f} ({interval[0]:.3f}–{interval[1]:.3f})"


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class _About:
    table: str
    line: str  # for the heatmap's title


def _about(clf: SAVClassifier, model: ModelInfo, task: str, questions: Sequence[str]) -> _About:
    n = int(clf.support_labels_.numel())
    loo = clf.leave_one_out_accuracy()
    question = clf.encoding.question
    if question:
        asked = repr(question)
    elif questions:
        asked = "each example's own: " + "; ".join(repr(q) for q in questions[:5]) + (" …" if len(questions) > 5 else "")
    else:
        asked = "each example's own"
    chosen = f"the top {clf.k} heads" if clf.is_top_k() else f"a custom set of {len(clf.selected_heads)} heads, picked by hand"
    scoring = (
        "in-sample, the paper's: an example counts towards its own class mean"
        if clf.scoring == "in-sample"
        else "leave-one-out: each example left out of its class mean"
    )
    rows = [
        ("task", task or "—"),
        ("model", model.model_id),
        ("revision", model.revision),
        ("dtype", model.dtype),
        ("encoding (how examples are read)", clf.encoding.describe()),
        ("question", asked),
        ("classes (support examples)", " · ".join(f"{c} {count}" for c, count in clf.support_counts_.items()) + f" ({n} in all)"),
        (
            "heads that vote",
            f"k = {len(clf.selected_heads)}: {chosen} of {clf.layout_.n_heads}, ranked by their accuracy on the support set "
            f"({scoring}), ties by {clf.head_order} order; a tie between classes goes to the {clf.tie_break} rule",
        ),
        ("leave-one-out accuracy", f"{_rate(loo, wilson_interval(round(loo * n), n))} (heads not re-selected: slightly optimistic)"),
    ]
    table = "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>"
    line = f"task {task} · model {model.model_id} · {len(clf.classes_)} classes: {', '.join(clf.classes_)}"
    return _About(table, line)


def _selection_table(clf: SAVClassifier) -> str:
    rows = plots.selection_table(clf)
    return _table(["rank", "layer", "head", "in-sample accuracy", "leave-one-out accuracy"], rows)


def _lens_section(clf: SAVClassifier, maps: LensMaps) -> str:
    parts = [
        f"<p>Each head's attention from the last input token (the token SAV reads), over the {html.escape(maps.source)}: "
        "on the first image of each class (above), and its mean map over the class (below: the images scaled to a "
        "square). Brighter: more attention.</p>"
    ]
    selected = clf.selected_heads
    for item in maps.heads:
        layer, head = item.head
        rank = f"rank {selected.index(item.head) + 1} of {len(selected)}" if item.head in selected else "not voting"
        score = float(clf.head_scores_[clf.layout_.position(layer, head)])
        parts.append(f"<h3>Layer {layer}, head {head} <span class='meta'>({rank}; accuracy {score:.2f})</span></h3>")
        cells = []
        for one in item.classes:
            mean = one.average
            images = [(one.overlay, one.example), (average_tile(mean, LENS_SIDE), f"mean of {one.label}")]
            lines = [one.label, one.example, f"mean of {mean.n}: {mean.image_share:.0%} on the image"]
            cells.append(_figure(images, lines, LENS_SIDE))
        parts.append("<div class='tiles'>" + "".join(cells) + "</div>")
    return "\n".join(parts)


def _evaluation_section(page: _Page, evaluation: Evaluation) -> str:
    report = evaluation.report
    intervals = report.per_class_interval()
    per_class = [
        [label, accuracy, f"{intervals[label][0]:.3f}–{intervals[label][1]:.3f}"] for label, accuracy in report.per_class_accuracy.items()
    ]
    errors = evaluation.misclassified
    cards = []
    for example, prediction in errors[:MAX_ERRORS_SHOWN]:
        votes = " · ".join(f"{c} {v}" for c, v in sorted(prediction.votes.items(), key=lambda item: -item[1]) if v)
        lines = [f"{example.label} read as {prediction.label}", example.name, f"votes: {votes}"]
        first = example.images[0] if example.images else None
        images = [(open_image(first), example.name)] if first is not None and not is_video(first) else []
        cards.append(_figure(images, lines, THUMB_SIDE, "error"))
    more = f"<p>… and {len(errors) - MAX_ERRORS_SHOWN} more.</p>" if len(errors) > MAX_ERRORS_SHOWN else ""
    wrong = (
        f"<h3>The {len(errors)} misclassified, with their votes</h3><div class='tiles'>{''.join(cards)}</div>{more}"
        if errors
        else "<p>No query was misclassified.</p>"
    )
    return (
        f"<p>SAV ({len(evaluation.predictions[0].heads) if evaluation.predictions else 0} heads) on {report.n} labelled queries: "
        f"accuracy <b>{_rate(report.accuracy, report.interval)}</b> (95 % Wilson interval).</p>"
        + _table(["class", "accuracy", "95 % interval"], per_class)
        + page.figure(plots.confusion_chart(report), "sav-confusion")
        + wrong
    )


def _own_answers_section(result: OwnAnswers) -> str:
    own, sav = result.own, result.sav
    unmatched = f"; {own.unmatched} answers named no class" if own.method == "generate" else ""
    return (
        f"<p>On {own.n} queries: SAV <b>{_rate(sav.accuracy, sav.interval)}</b> · the model's own answers ({html.escape(own.method)}) "
        f"<b>{_rate(own.accuracy, own.interval)}</b>{html.escape(unmatched)}.</p>"
    )


def _curve_section(page: _Page, curve: AccuracyCurve, n_classes: int) -> str:
    best, by = curve.best_k()
    skipped = f" {html.escape(curve.nested_skipped[0].upper() + curve.nested_skipped[1:])}." if curve.nested_skipped else ""
    return (
        page.figure(plots.curve_chart(curve, n_classes), "sav-curve")
        + f"<p>Best k by the {html.escape(by)}: <b>{best}</b>. Leave-one-out on the support set is optimistic: the heads were "
        f"chosen on every example.{skipped}</p>"
    )


def _ablation_section(report: AblationReport) -> str:
    rows = [
        ["nothing ablated", report.baseline.accuracy, f"{report.baseline.interval[0]:.3f}–{report.baseline.interval[1]:.3f}"],
        [
            f"the {len(report.heads)} heads ablated",
            report.ablated.accuracy,
            f"{report.ablated.interval[0]:.3f}–{report.ablated.interval[1]:.3f}",
        ],
    ]
    for i, draw in enumerate(report.random, start=1):
        rows.append([f"random heads, same layers (draw {i})", draw.accuracy, f"{draw.interval[0]:.3f}–{draw.interval[1]:.3f}"])
    changed = sum(before != after for before, after in zip(report.baseline.answers, report.ablated.answers))
    return (
        f"<p>The model's own answers ({html.escape(report.baseline.method)}) on {report.baseline.n} queries, the heads "
        f"{html.escape(report.mode)}-ablated, beside as many random heads of the same layers. {changed} of "
        f"{report.baseline.n} answers changed with the heads ablated.</p>" + _table(["condition", "accuracy", "95 % interval"], rows)
    )


def _steering_section(steering: dict[str, SteeringReport]) -> str:
    rows = []
    for target, report in steering.items():
        how = report.mode if report.mode == "replace" else f"add, alpha {report.alpha:g}"
        randoms = ", ".join(f"{r:.3f}" for r in report.random_flip_rates) or "—"
        rows.append([target, how, report.n, _rate(report.flip_rate, report.flip_interval), randoms, report.before_rate])
    return (
        "<p>The other classes' queries answered with the voting heads set to the target class's mean over its support "
        "images (replace) or shifted towards it (add). The flip rate is the share whose answer becomes the target.</p>"
        + _table(["steered to", "steering", "queries", "flip rate (95 % interval)", "random heads' flip rates", "before steering"], rows)
    )


def _patching_section(page: _Page, clf: SAVClassifier, model: ModelInfo, patching: Patching) -> str:
    report = patching.report
    text = (
        f"<p>Target {html.escape(patching.target)} (read as {html.escape(report.target_label)}) run with "
        f"{len(report.heads)} heads taken from source {html.escape(patching.source)} (read as {html.escape(report.source_label)}). "
        f"The model's answer: {html.escape(report.answer_before)} → {html.escape(report.answer_after)}; logit difference "
        f"(source class − target class, first answer token) {report.logit_diff_before:.2f} → {report.logit_diff_after:.2f}.</p>"
    )
    if report.effects is None:
        return text
    effects = {(layer, head): effect for layer, head, effect in report.effects}
    values = [effects.get(h, 0.0) for h in clf.heads_]
    return (
        text
        + "<p>Each head patched alone, 1 = the change of patching every head:</p>"
        + page.figure(plots.measure_heatmap(clf, model.n_layers, values, "patching effect"), "sav-patching")
    )


def _attribution_section(page: _Page, clf: SAVClassifier, model: ModelInfo, report: AttributionReport) -> str:
    values = report.head_scores().tolist()
    lens = ", ".join(f"{layer}: {p:.2f}" for layer, p in enumerate(report.true_class_lens))
    return (
        f"<p>Each head's direct push on the true class's first answer token over the queries (the parts add up to the logits "
        f"within {report.decomposition_error:.1e}). Logit lens, the true class's probability read off each layer: {lens}.</p>"
        + page.figure(plots.measure_heatmap(clf, model.n_layers, values, "direct logit attribution"), "sav-attribution")
        + page.figure(plots.decodable_causal_scatter(clf, clf.head_scores_.tolist(), values, "direct logit attribution"))
    )


def _comparison_section(comparisons: dict[str, TaskComparison]) -> str:
    rows = [[other, c.k, c.shared, c.jaccard, c.spearman] for other, c in comparisons.items()]
    return "<p>How this task's heads relate to other tasks' fitted on the same model.</p>" + _table(
        ["other task", "top k", "shared heads", "Jaccard", "rank correlation (Spearman)"], rows
    )
