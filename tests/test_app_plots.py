"""Figures: layers without heads are blank rows, selected heads are marked, user labels are escaped."""

from __future__ import annotations

import re

import torch
from PIL import Image

from sav_explorer import HeadActivations, HeadLayout, LayerBlock, SAVClassifier, evaluate, plots


def fitted(labels=("a", "a", "b", "b")) -> SAVClassifier:
    """Heads in layers 0 and 2 only (layer 1 has none, like Qwen3.5's linear-attention layers)."""
    torch.manual_seed(0)
    layout = HeadLayout((LayerBlock(0, 3, 4), LayerBlock(2, 2, 4)))
    blocks = [torch.randn(len(labels), 3, 4), torch.randn(len(labels), 2, 4)]
    return SAVClassifier(k=2).fit(HeadActivations(layout, blocks), list(labels))


def test_heatmap_has_blank_rows_for_layers_without_heads_and_marks_the_selection():
    clf = fitted()
    figure = plots.head_heatmap(clf, n_layers=4)
    grid, marks = figure.data[0], figure.data[1]
    assert len(grid.z) == 4 and all(v is None for v in grid.z[1]) and all(v is None for v in grid.z[3])
    assert grid.z[2][2] is None  # layer 2 has only 2 heads
    assert grid.z[0][0] == float(clf.in_sample_scores_[0])
    assert grid.customdata[2][1] == [float(clf.in_sample_scores_[4]), float(clf.loo_scores_[4])]
    assert sorted(zip(marks.y, marks.x)) == sorted(clf.selected_heads)
    assert "layer %{y}, head %{x}" in grid.hovertemplate and "leave-one-out" in grid.hovertemplate


def test_labels_are_escaped_in_votes_and_confusion(tmp_path):
    clf = fitted(("<b>x</b>", "<b>x</b>", "y", "y"))
    from sav_explorer.classifier import Prediction

    bars = plots.votes_chart(Prediction("<b>x</b>", {"<b>x</b>": 2, "y": 0}, []))
    assert list(bars.data[0].x) == ["&lt;b&gt;x&lt;/b&gt;", "y"] and "<b>" not in bars.layout.title.text
    report = evaluate(["<b>x</b>", "<b>x</b>"], ["<b>x</b>", "y"], ["<b>x</b>", "y"])
    matrix = plots.confusion_chart(report)
    assert "<b>x</b>" not in str(matrix.to_plotly_json())
    png = plots.heatmap_png(clf, 4, tmp_path / "h.png")
    assert Image.open(png).mode == "RGB"


def test_the_exported_heatmap_names_its_task_keeps_its_title_whole_and_marks_chance(tmp_path):
    clf = fitted()
    about = "task colour · question " + '"what color is the shape ?"' + " · model sav-explorer/shapes-llava · 2 classes: a, b"
    png = Image.open(plots.heatmap_png(clf, 4, tmp_path / "h.png", about=about)).convert("RGB")
    width, _ = png.size
    title_band = [png.getpixel((x, y)) for x in range(width - 6, width) for y in range(0, 50)]
    assert all(pixel == (255, 255, 255) for pixel in title_band)  # nothing runs off the right edge
    assert plots.chance_scale(2)[1] == [0.5, "rgb(247, 247, 247)"]  # the neutral middle of the scale is chance
    figure = plots.head_heatmap(clf, 4, about)
    assert "task colour" in figure.layout.title.text and "chance 0.50" in figure.data[0].colorbar.ticktext


def test_frames_of_selected_heads_sit_inside_their_cells_so_that_adjacent_ones_stay_apart():
    """The frames were markers of a fixed size in pixels: in short cells they overran the cells above and
    below, and with every head selected (k = 63, 64) the map was covered in stripes."""
    clf = fitted()
    clf.select(k=len(clf.heads_))
    figure = plots.head_heatmap(clf, n_layers=4)
    frames = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    assert len(frames) == len(clf.heads_)
    for frame, (layer, head) in zip(frames, clf.selected_heads):
        assert head - 0.5 < frame.x0 < frame.x1 < head + 0.5 and layer - 0.5 < frame.y0 < frame.y1 < layer + 0.5
        assert (frame.x0, frame.y0) == (head - 0.5 + plots.FRAME_INSET, layer - 0.5 + plots.FRAME_INSET)
    assert figure.data[1].marker.opacity == 0  # the selected points carry the hover only


def test_curves_that_coincide_all_show_and_the_legend_says_they_overlap():
    """With every curve at 1.0 only the last line drawn was visible."""
    from sav_explorer.analysis import AccuracyCurve

    ones = [1.0] * 5
    figure = plots.curve_chart(AccuracyCurve(k=list(range(1, 6)), loo=ones, nested_loo=ones, test=ones, n_support=10, n_test=10), 2)
    lines = [trace for trace in figure.data if trace.name != "95 % interval"]
    assert len(lines) == 3 and all("markers" in trace.mode for trace in lines)
    assert len({trace.marker.symbol for trace in lines}) == 3 and len({trace.marker.size for trace in lines}) == 3
    assert "overlapping" not in lines[0].name
    assert "(overlapping leave-one-out)" in lines[1].name and "(overlapping leave-one-out and nested leave-one-out)" in lines[2].name


def test_compared_maps_frame_the_compared_top_k_mark_shared_heads_and_wrap_their_subtitle():
    """Compare spoke of the top 10 while both maps framed the 20 voting heads and did not mark the shared
    ones; the subtitle ran out of the half-width map."""
    from sav_explorer.analysis import top_heads

    clf = fitted()
    top = top_heads(clf, 3)
    about = "task colour · question " + '"what color is the shape ?"' + " · model sav-explorer/shapes-llava · 6 classes: " + "x, " * 20
    figure = plots.head_heatmap(clf, 4, about, framed=top, shared=top[:1], title="colour: top 3 framed, 1 shared", about_width=56)
    frames = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    assert len(frames) == 3 and len(clf.selected_heads) == 2
    gold = [frame for frame in frames if frame.line.color == plots.SHARED_COLOUR]
    assert [(round(f.y0 + 0.5 - plots.FRAME_INSET), round(f.x0 + 0.5 - plots.FRAME_INSET)) for f in gold] == top[:1]
    title = figure.layout.title.text
    assert title.startswith("colour: top 3 framed") and title.count("<br>") >= 2
    assert all(len(re.sub("<[^>]+>", "", line)) <= 56 for line in title.split("<br>")[1:])
