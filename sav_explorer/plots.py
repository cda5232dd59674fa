"""Figures: the layers x heads heatmap, votes per class, the confusion matrix, a head's projection, accuracy
against k, and a PNG of the heatmap.

    fig = head_heatmap(clf, n_layers=8)          # plotly; hover: layer, head, in-sample, leave-one-out
    png = heatmap_png(clf, n_layers=8, path)     # the same picture without a browser (Pillow)

Every label that reaches a figure is HTML-escaped first: plotly renders tags in tick labels and
hover text, and labels come from users.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from .analysis import AccuracyCurve
from .classifier import Prediction, SAVClassifier
from .pipeline import EvalReport

SELECTED_COLOUR = "#e4572e"
SHARED_COLOUR = "#ffc400"  # heads in the top k of both compared tasks: gold, seen on the dark cells of top heads
HEAD_HOVER = "layer %{y}, head %{x}<br>in-sample accuracy %{customdata[0]:.2f}<br>leave-one-out accuracy %{customdata[1]:.2f}"
FONT = dict(family="Inter, system-ui, sans-serif", size=12)


def esc(text: object) -> str:
    """Text for plotly or HTML: tags become visible characters, never markup."""
    return html.escape(str(text), quote=True)


def score_grid(clf: SAVClassifier, n_layers: int) -> tuple[list[list[float | None]], list[list[float | None]], int]:
    """In-sample and leave-one-out scores as (n_layers, max_heads) grids; None where a layer has no such head."""
    n_layers = max(n_layers, 1 + max(layer for layer, _ in clf.heads_))
    width = 1 + max(head for _, head in clf.heads_)
    in_sample = [[None] * width for _ in range(n_layers)]
    loo = [[None] * width for _ in range(n_layers)]
    for (layer, head), a, b in zip(clf.heads_, clf.in_sample_scores_.tolist(), clf.loo_scores_.tolist()):
        in_sample[layer][head] = a
        loo[layer][head] = b
    return in_sample, loo, width


FRAME_INSET = 0.12  # of a cell, on each side: the frames of adjacent heads never touch, and the cell shows between them


def frame_heads(fig: go.Figure, heads: Sequence[tuple[int, int]], colour: str = SELECTED_COLOUR, dash: str = "solid") -> None:
    """An outline inside each (layer, head) cell of a heatmap, sized in cells, not pixels: a fixed-size
    marker overran short cells, and at k = 63 or 64 the frames covered the map in stripes."""
    for layer, head in heads:
        fig.add_shape(
            type="rect", xref="x", yref="y", layer="above",
            x0=head - 0.5 + FRAME_INSET, x1=head + 0.5 - FRAME_INSET, y0=layer - 0.5 + FRAME_INSET, y1=layer + 0.5 - FRAME_INSET,
            line=dict(color=colour, width=2, dash=dash),
        )  # fmt: skip


def measure_heatmap(clf: SAVClassifier, n_layers: int, values, measure: str) -> go.Figure:
    """Heads coloured by one measure (SAV accuracy, direct logit attribution or patching effect), the
    voting heads framed: the same grid as the accuracy map, so that the two read side by side."""
    values = [float(v) for v in values]
    n_layers = max(n_layers, 1 + max(layer for layer, _ in clf.heads_))
    width = 1 + max(head for _, head in clf.heads_)
    grid: list[list[float | None]] = [[None] * width for _ in range(n_layers)]
    for (layer, head), value in zip(clf.heads_, values):
        grid[layer][head] = value
    if measure == "SAV accuracy":
        scale, low, high = chance_scale(len(clf.classes_)), 0.0, 1.0
    else:  # signed: white at 0, blue where a head pushes the answer its way
        bound = max(1e-6, max(abs(v) for v in values))
        scale, low, high = [[0.0, f"rgb{BELOW_CHANCE}"], [0.5, f"rgb{AT_CHANCE}"], [1.0, f"rgb{ABOVE_CHANCE}"]], -bound, bound
    fig = go.Figure(
        go.Heatmap(
            z=grid, colorscale=scale, zmin=low, zmax=high, xgap=1, ygap=1, hoverongaps=False,
            hovertemplate=f"layer %{{y}}, head %{{x}}<br>{esc(measure)} %{{z:.3f}}<extra></extra>",
            colorbar=dict(title=dict(text=esc(measure), side="right"), thickness=12, len=0.8),
        )
    )  # fmt: skip
    selected = clf.selected_heads
    fig.add_trace(
        go.Scatter(
            x=[h for _, h in selected], y=[layer for layer, _ in selected], mode="markers", name="voting heads", showlegend=False,
            marker=dict(opacity=0), hoverinfo="skip",
        )
    )  # fmt: skip
    frame_heads(fig, selected)
    fig.update_layout(
        template="plotly_white", font=FONT, height=int(min(720, max(340, 90 + 30 * n_layers))), margin=dict(l=50, r=20, t=40, b=45),
        title=dict(text=f"Heads by {esc(measure)}: {len(selected)} voting heads framed", font=dict(size=14), x=0.01),
        xaxis=dict(title="head", dtick=1 if width <= 32 else None, showgrid=False, zeroline=False),
        yaxis=dict(title="layer", dtick=1 if n_layers <= 32 else None, range=[n_layers - 0.5, -0.5], showgrid=False, zeroline=False),
    )  # fmt: skip
    return fig


def decodable_causal_scatter(clf: SAVClassifier, accuracy, measure_values, measure: str) -> go.Figure:
    """Each head's SAV accuracy against a causal measure, the voting heads marked: heads that are
    decodable and causal sit top right, decodable only top left."""
    selected = set(clf.selected_heads)
    fig = go.Figure()
    for chosen in (False, True):
        points = [(h, float(a), float(m)) for h, a, m in zip(clf.heads_, accuracy, measure_values) if (h in selected) == chosen]
        fig.add_trace(
            go.Scatter(
                x=[m for _, _, m in points], y=[a for _, a, _ in points], mode="markers",
                name="voting heads" if chosen else "other heads",
                marker=dict(
                    size=11 if chosen else 7, color=SELECTED_COLOUR if chosen else "#7a8ca8", symbol="diamond" if chosen else "circle"
                ),
                text=[f"{layer}:{head}" for (layer, head), _, _ in points],
                hovertemplate="head %{text}<br>" + esc(measure) + " %{x:.3f}<br>SAV accuracy %{y:.2f}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        template="plotly_white", font=FONT, height=360, margin=dict(l=50, r=20, t=40, b=45),
        title=dict(text=f"SAV accuracy against {esc(measure)}", font=dict(size=14), x=0.01),
        xaxis=dict(title=esc(measure), zeroline=True), yaxis=dict(title="SAV accuracy", range=[-0.02, 1.05]),
        legend=dict(orientation="h", y=-0.2),
    )  # fmt: skip
    return fig


BELOW_CHANCE, AT_CHANCE, ABOVE_CHANCE = (178, 24, 43), (247, 247, 247), (33, 102, 172)


def chance_scale(n_classes: int) -> list:
    """A diverging colour scale over accuracy 0..1 whose neutral middle sits at chance (1 / number of classes):
    red below chance, white at chance, blue above it, so that on two classes a 0.5 head does not look good."""
    chance = 1 / max(1, n_classes)
    rgb = lambda c: f"rgb{c}"  # noqa: E731
    return [[0.0, rgb(BELOW_CHANCE)], [chance, rgb(AT_CHANCE)], [1.0, rgb(ABOVE_CHANCE)]]


def head_heatmap(
    clf: SAVClassifier | None,
    n_layers: int,
    about: str = "",
    empty: str = "Extract heads to see how well each one separates the classes",
    framed: Sequence[tuple[int, int]] | None = None,
    shared: Collection[tuple[int, int]] = (),
    title: str = "",
    about_width: int = 160,
) -> go.Figure:
    """Per-head accuracy, layers down and heads across, on a scale centred at chance; selected heads
    carry an orange frame. `about` names the task, question, model and classes (user text: escaped here),
    wrapped at `about_width` characters. `framed`: other heads to frame (default: the selected ones), of
    which `shared` get a dark frame; `title` (escaped here) replaces the count of selected heads."""
    fig = go.Figure()
    if clf is None:
        fig.update_layout(
            template="plotly_white",
            height=360,
            font=FONT,
            margin=dict(l=40, r=20, t=40, b=40),
            annotations=[dict(text=esc(empty), showarrow=False, font=dict(size=14, color="#666"))],
            xaxis=dict(visible=False),
            yaxis=dict(visible=False),
        )
        return fig
    in_sample, loo, width = score_grid(clf, n_layers)
    rows = len(in_sample)
    scored = clf.in_sample_scores_ if clf.scoring == "in-sample" else clf.loo_scores_
    colour = in_sample if clf.scoring == "in-sample" else loo
    fig.add_trace(
        go.Heatmap(
            z=colour,
            x=list(range(width)),
            y=list(range(rows)),
            customdata=[[[a, b] for a, b in zip(ra, rb)] for ra, rb in zip(in_sample, loo)],
            hovertemplate=HEAD_HOVER + "<extra></extra>",
            hoverongaps=False,
            colorscale=chance_scale(len(clf.classes_)),
            zmin=0,
            zmax=1,
            xgap=1,
            ygap=1,
            colorbar=dict(
                title=dict(text="accuracy", side="right"),
                thickness=12,
                len=0.8,
                tickvals=[0, 1 / len(clf.classes_), 1],
                ticktext=["0", f"chance {1 / len(clf.classes_):.2f}", "1"],
            ),
            name="heads",
        )
    )
    selected = clf.selected_heads if framed is None else list(framed)
    fig.add_trace(
        go.Scatter(
            x=[h for _, h in selected],
            y=[layer for layer, _ in selected],
            mode="markers",
            marker=dict(opacity=0),  # the frames are shapes (`frame_heads`); these points carry the hover
            customdata=[[in_sample[layer][head], loo[layer][head]] for layer, head in selected],
            hovertemplate=HEAD_HOVER.replace("%{x}", "%{x} (selected)") + "<extra></extra>",
            name="selected",
            showlegend=False,
        )
    )
    frame_heads(fig, [h for h in selected if h not in shared])
    frame_heads(fig, [h for h in selected if h in shared], colour=SHARED_COLOUR)
    best = float(scored.max()) if len(scored) else 0.0
    lines = textwrap.wrap(about[:320], about_width) if about else []
    fig.update_layout(
        template="plotly_white",
        font=FONT,
        height=int(min(720, max(340, 90 + 30 * rows))) + 16 * max(0, len(lines) - 1),
        margin=dict(l=50, r=20, t=(58 if len(lines) == 1 else 46 + 16 * len(lines)) if lines else 40, b=45),
        title=dict(
            text=(esc(title) if title else f"Per-head accuracy ({esc(clf.scoring)}): {len(selected)} selected, best {best:.2f}")
            + "".join(f"<br><span style='font-size:11px'>{html.escape(line, quote=False)}</span>" for line in lines),
            font=dict(size=14),
            x=0.01,
            # several lines grow downwards from the top, within the margin made for them (one line stays where it was)
            **(dict(yref="container", y=1, yanchor="top", pad=dict(t=14)) if len(lines) > 1 else {}),
        ),
        xaxis=dict(
            title="head", dtick=1 if width <= 32 else None, range=[-0.5, width - 0.5], showgrid=False, zeroline=False, constrain="domain"
        ),
        yaxis=dict(title="layer", dtick=1 if rows <= 32 else None, range=[rows - 0.5, -0.5], showgrid=False, zeroline=False),
        clickmode="event",
        dragmode=False,
        # A heatmap cell yields the hover (and the click) to any marker within `hoverdistance`
        # pixels: at plotly's default of 20 the frame of a selected head took the hover and click
        # of the cell below it, so a click inspected the wrong head. Now a frame answers only
        # when the pointer is on it.
        hoverdistance=1,
    )
    return fig


def votes_chart(prediction: Prediction | None) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(template="plotly_white", font=FONT, height=260, margin=dict(l=40, r=10, t=36, b=40))
    if prediction is None:
        fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False))
        return fig
    labels = list(prediction.votes)
    fig.add_trace(
        go.Bar(
            x=[esc(c) for c in labels],
            y=[prediction.votes[c] for c in labels],
            marker_color=[SELECTED_COLOUR if c == prediction.label else "#8da0cb" for c in labels],
            hovertemplate="%{x}: %{y} vote(s)<extra></extra>",
        )
    )
    fig.update_layout(
        title=dict(text=f"Votes per class (winner: {esc(prediction.label)})", font=dict(size=13), x=0.01),
        yaxis=dict(title="votes", dtick=1 if max(prediction.votes.values(), default=0) <= 10 else None),
    )
    return fig


def curve_chart(curve: AccuracyCurve | None, n_classes: int = 0) -> go.Figure:
    """Accuracy against k: the support set's leave-one-out (optimistic), nested leave-one-out, and a test set."""
    fig = go.Figure()
    fig.update_layout(template="plotly_white", font=FONT, height=340, margin=dict(l=50, r=10, t=40, b=45))
    if curve is None:
        fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False))
        return fig
    lines = [  # each its own marker, open and of its own size: lines that coincide (all at 1.0) still all show
        ("leave-one-out, heads chosen on all (optimistic)", curve.loo, "dot", "#8da0cb", "circle-open", 11),
        ("nested leave-one-out (heads re-chosen)", curve.nested_loo, "solid", "#66a61e", "square-open", 8),
        ("test set", curve.test, "solid", SELECTED_COLOUR, "x-thin-open", 6),
    ]
    band = curve.intervals("test") or curve.intervals("nested_loo")
    if band:  # the 95 % interval of the lowest line that has one: how much of a wiggle is noise
        fig.add_trace(
            go.Scatter(
                x=[*curve.k, *curve.k[::-1]], y=[high for _, high in band] + [low for low, _ in band][::-1],
                fill="toself", fillcolor="rgba(228,87,46,0.12)" if curve.test else "rgba(102,166,30,0.12)",
                line=dict(width=0), hoverinfo="skip", name="95 % interval",
            )
        )  # fmt: skip
    drawn: list[tuple[str, list[float]]] = []
    for name, values, dash, colour, symbol, size in lines:
        if values:
            same = [short for short, other in drawn if all(abs(a - b) < 1e-9 for a, b in zip(values, other))]
            legend = name + (f" (overlapping {' and '.join(same)})" if same else "")
            fig.add_trace(
                go.Scatter(
                    x=curve.k, y=values, name=legend, mode="lines+markers", line=dict(dash=dash, color=colour, width=2),
                    marker=dict(symbol=symbol, size=size, color=colour, line=dict(width=1.5, color=colour), maxdisplayed=24),
                    hovertemplate="k = %{x}: %{y:.3f}<extra>" + name + "</extra>",
                )
            )  # fmt: skip
            drawn.append((name.split(",")[0].split(" (")[0], values))
    if n_classes:
        fig.add_hline(y=1 / n_classes, line=dict(color="#999", width=1, dash="dash"), annotation_text="chance")
    fig.update_layout(
        title=dict(text="Accuracy against k (the number of voting heads)", font=dict(size=13), x=0.01),
        xaxis=dict(title="k", type="log" if len(curve.k) > 64 else "linear"),
        yaxis=dict(title="accuracy", range=[0, 1.02]),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def confusion_chart(report: EvalReport | None) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(template="plotly_white", font=FONT, height=360, margin=dict(l=70, r=10, t=40, b=60))
    if report is None:
        fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False))
        return fig
    truth = [esc(x) for x in report.confusion_labels]
    predicted = [esc(x) for x in report.confusion_predicted]
    matrix = report.confusion_matrix
    fig.add_trace(
        go.Heatmap(
            z=matrix,
            x=predicted,
            y=truth,
            colorscale="Blues",
            showscale=False,
            text=[[str(v) for v in row] for row in matrix],
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_layout(
        title=dict(text=f"Confusion matrix: accuracy {report.accuracy:.3f} on {report.n} examples", font=dict(size=13), x=0.01),
        xaxis=dict(title="predicted", type="category"),
        yaxis=dict(title="true", type="category", autorange="reversed"),
    )
    return fig


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class ProjectedPoint:
    """One example in a head's projection: where it lies, its true class, where it came from, what SAV said."""

    x: float
    y: float
    label: str  # the true class (the colour)
    source: str  # "support" or "query"
    name: str
    predicted: str | None = None  # SAV's label, for queries
    thumbnail: str = ""  # a data: URI the page shows on hover ("" for none)

    @property
    def wrong(self) -> bool:
        return self.predicted is not None and self.predicted != self.label


def projection_chart(points: Sequence[ProjectedPoint], classes: Sequence[str], title: str = "", empty: str = "") -> go.Figure:
    """A 2-D projection of examples: colour = true class; support dots, query diamonds, misclassified
    queries a large cross. The hover names the file and the labels; `customdata` carries each point's
    thumbnail for the page to show beside it."""
    fig = go.Figure()
    fig.update_layout(template="plotly_white", font=FONT, height=460, margin=dict(l=50, r=10, t=60, b=45))
    if not points:
        fig.update_layout(
            xaxis=dict(visible=False), yaxis=dict(visible=False),
            annotations=[dict(text=esc(empty), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=13))],
        )  # fmt: skip
        return fig
    order = list(classes) + sorted({p.label for p in points} - set(classes))  # unknown true labels after the classes
    styles = {
        "support": dict(symbol="circle", size=8, opacity=0.55, line=dict(width=0)),
        "query": dict(symbol="diamond", size=10, opacity=0.9, line=dict(width=1, color="white")),
        "wrong": dict(symbol="x", size=15, opacity=1.0, line=dict(width=1.5, color="black")),
    }
    kinds = {"support": "support", "query": "query", "wrong": "query, misclassified"}
    for index, label in enumerate(order):
        colour = PALETTE[index % len(PALETTE)]
        for kind, style in styles.items():
            chosen = [p for p in points if p.label == label and ("wrong" if p.wrong else p.source) == kind]
            if not chosen:
                continue
            said = lambda p: "" if p.predicted is None else f"<br>SAV: {esc(p.predicted)}" + (" ✗" if p.wrong else " ✓")  # noqa: E731
            fig.add_trace(
                go.Scatter(
                    x=[p.x for p in chosen], y=[p.y for p in chosen], mode="markers", name=f"{esc(label)} · {kinds[kind]}",
                    marker=dict(color=colour, **style), customdata=[[p.thumbnail] for p in chosen],
                    text=[f"{esc(p.name)}<br>{p.source}, class {esc(p.label)}{said(p)}" for p in chosen],
                    hovertemplate="%{text}<extra></extra>",
                )
            )  # fmt: skip
    fig.update_layout(
        title=dict(text=title, font=dict(size=13), x=0.01),
        xaxis=dict(title="PC 1", zeroline=False), yaxis=dict(title="PC 2", zeroline=False, scaleanchor="x", scaleratio=1),
        legend=dict(font=dict(size=11)), hoverlabel=dict(align="left"),
    )  # fmt: skip
    return fig


# ----------------------------------------------------------------------------- PNG without a browser
def _on_scale(value: float, chance: float) -> tuple[int, int, int]:
    if value < chance:
        low, high, t = BELOW_CHANCE, AT_CHANCE, value / chance
    else:
        low, high, t = AT_CHANCE, ABOVE_CHANCE, (value - chance) / (1 - chance)
    t = min(1.0, max(0.0, t))
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(low, high))  # type: ignore[return-value]


def heatmap_png(clf: SAVClassifier, n_layers: int, path: Path, about: str = "", cell: int = 28) -> Path:
    """Writes the heatmap as a PNG: cells coloured by the ranking score on the chance-centred scale,
    selected heads framed, a title naming the task, question and model, and a labelled colour bar."""
    in_sample, loo, width = score_grid(clf, n_layers)
    grid = in_sample if clf.scoring == "in-sample" else loo
    chance = 1 / len(clf.classes_)
    rows = len(grid)
    cell = max(6, min(cell, 900 // max(width, rows)))
    font = ImageFont.load_default(size=max(9, min(14, cell // 2)))
    title = f"Per-head accuracy ({clf.scoring}); framed: {len(clf.selected_heads)} selected heads"
    lines = [title, *textwrap.wrap(about, 110)]
    left, top, bottom, right = 60, 16 + 18 * len(lines), 50, 150
    text_width = max(int(font.getlength(line)) for line in lines) + 20
    image = Image.new("RGB", (max(left + width * cell + right, text_width), top + rows * cell + bottom), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((10, 8 + 18 * i), line, fill="black", font=font)
    for layer in range(rows):
        for head in range(width):
            value = grid[layer][head]
            x0, y0 = left + head * cell, top + layer * cell
            if value is not None:
                draw.rectangle([x0, y0, x0 + cell - 2, y0 + cell - 2], fill=_on_scale(value, chance))
    for layer, head in clf.selected_heads:
        x0, y0 = left + head * cell, top + layer * cell
        draw.rectangle([x0, y0, x0 + cell - 2, y0 + cell - 2], outline=SELECTED_COLOUR, width=max(2, cell // 8))
    step = max(1, math.ceil(12 / cell))
    for layer in range(0, rows, step):
        draw.text((left - 8, top + layer * cell + cell // 2), str(layer), fill="black", font=font, anchor="rm")
    for head in range(0, width, step):
        draw.text((left + head * cell + cell // 2, top + rows * cell + 6), str(head), fill="black", font=font, anchor="mt")
    draw.text((left + width * cell // 2, top + rows * cell + 28), "head", fill="black", font=font, anchor="mt")
    draw.text((10, top + rows * cell // 2), "layer", fill="black", font=font, anchor="lm")
    bar_x, bar_h = left + width * cell + 25, rows * cell
    for i in range(bar_h):
        draw.line([bar_x, top + i, bar_x + 14, top + i], fill=_on_scale(1 - i / max(1, bar_h - 1), chance))
    draw.text((bar_x + 18, top), "1.0", fill="black", font=font, anchor="lt")
    draw.text((bar_x + 18, top + int((1 - chance) * bar_h)), f"chance {chance:.2f}", fill="black", font=font, anchor="lm")
    draw.text((bar_x + 18, top + bar_h), "0.0", fill="black", font=font, anchor="lb")
    draw.text((bar_x, top + bar_h + 8), "accuracy", fill="black", font=font, anchor="lt")
    image.save(path)
    return path


def selection_table(clf: SAVClassifier, heads: Sequence[tuple[int, int]] | None = None) -> list[list]:
    """Rows (rank, layer, head, in-sample, leave-one-out) for the selected heads."""
    rows = []
    for rank, (layer, head) in enumerate(heads if heads is not None else clf.selected_heads, start=1):
        i = clf.layout_.position(layer, head)
        rows.append([rank, layer, head, round(float(clf.in_sample_scores_[i]), 3), round(float(clf.loo_scores_[i]), 3)])
    return rows
