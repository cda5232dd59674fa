"""The report: one self-contained HTML file of a fit and its results, checked as text and opened in
Chromium with the network blocked (its heatmap renders and answers a hover).

On the teaching model's count task (its SAV misreads a few queries, so the errors section has cards),
with every kind of result the report can hold.
"""

from __future__ import annotations

import html
import re

import pytest
from playwright.sync_api import expect
from plotly.offline import get_plotlyjs

from sav_explorer import Encoding, fit_examples, load_examples, load_model
from sav_explorer.ablation import ablation_study
from sav_explorer.analysis import accuracy_curve, compare_tasks
from sav_explorer.attribution import attribute
from sav_explorer.causal import patch, steering_study
from sav_explorer.models import EXAMPLES_DIR
from sav_explorer.pipeline import evaluate_examples, fit_activations
from sav_explorer.report import LENS_HEADS, ModelInfo, OwnAnswers, Patching, Results, lens_maps, questions_of, write_report

COUNT = EXAMPLES_DIR / "count"
TASK = "count <i>of</i> shapes"  # user text: escaped in the report


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The count task fitted (k = 20), every analysis run on a few queries, and the report written."""
    loaded = load_model()
    support = load_examples(COUNT / "support.jsonl")
    queries = load_examples(COUNT / "queries.jsonl")
    clf, activations = fit_examples(loaded, support, Encoding(max_pixels=448 * 448), k=20)
    labels = [e.label for e in support]
    few = queries[::10]  # one query of each class, for the runs that make the model answer
    ablation = ablation_study(loaded, few, clf.classes_, clf.selected_heads, clf.encoding, mode="mean", support=support, n_random=1)
    evaluation = evaluate_examples(loaded, clf, queries)
    results = Results(
        evaluation=evaluation,
        own_answers=OwnAnswers(evaluate_examples(loaded, clf, few).report, ablation.baseline),
        curve=accuracy_curve(clf),  # leave-one-out only: the CLI's test draws the nested line
        ablation=ablation,
        steering={"four": steering_study(loaded, few, clf.classes_, support, "four", clf.selected_heads, clf.encoding, n_random=0)},
        patching=Patching(support[0].name, support[5].name, patch(loaded, clf, support[0], support[5], clf.selected_heads)),
        attribution=attribute(loaded, few, clf.classes_, clf.encoding),
        comparisons={"count, leave-one-out scoring": compare_tasks(clf, fit_activations(activations, labels, k=20, scoring="loo"), 10)},
    )
    maps = lens_maps(loaded, clf, support)
    path = write_report(
        tmp_path_factory.mktemp("report") / "report.html",
        clf,
        ModelInfo.of(loaded),
        task=TASK,
        results=results,
        maps=maps,
        questions=questions_of(support),
    )
    return path, clf, results, maps


def test_the_report_holds_the_fit_every_result_and_the_lens(made):
    path, clf, results, maps = made
    text = path.read_text(encoding="utf-8")
    for expected in (
        "sav-explorer/shapes-llava",
        "float32",
        html.escape(clf.encoding.describe()),
        html.escape(repr("how many shapes are there ?")),
        "four 5 · one 5 · three 5 · two 5 (20 in all)",
        "k = 20: the top 20 heads of 64",
        "Held-out accuracy",
        "The model&#x27;s own answers",
        "Accuracy against k",
        "Ablation",
        "Steering",
        "Patching",
        "Direct logit attribution",
        "count, leave-one-out scoring",
    ):
        assert expected in text, expected
    assert "Not run" not in text  # every kind of result was given
    assert html.escape(TASK) in text and TASK not in text
    report = results.evaluation.report
    assert f"{report.accuracy:.3f} ({report.interval[0]:.3f}–{report.interval[1]:.3f})" in text
    errors = results.evaluation.misclassified
    assert errors, "the count task's SAV misreads a few queries: the errors section needs some"
    assert f"The {len(errors)} misclassified, with their votes" in text
    for example, prediction in errors:
        votes = " · ".join(f"{c} {v}" for c, v in sorted(prediction.votes.items(), key=lambda item: -item[1]) if v)
        assert f"{example.label} read as {prediction.label}" in text and html.escape(f"votes: {votes}") in text
    assert len(maps.heads) == LENS_HEADS and [m.head for m in maps.heads] == clf.selected_heads[:LENS_HEADS]
    assert all([c.label for c in m.classes] == clf.classes_ and all(c.average.n == 5 for c in m.classes) for m in maps.heads)
    for layer, head in clf.selected_heads[:LENS_HEADS]:
        assert f"Layer {layer}, head {head}" in text


def test_the_report_needs_no_network_plotly_once_every_figure_without_it(made):
    path, *_ = made
    text = path.read_text(encoding="utf-8")
    assert text.count(get_plotlyjs()) == 1  # inline, once
    rest = text.replace(get_plotlyjs(), "")
    assert "plotly.js v" not in rest
    # heatmap, confusion matrix, curve, attribution map and scatter (the patch was not a sweep: no map)
    assert rest.count("Plotly.newPlot(") == 5
    sources = re.findall(r"""<(?:img|script|link|iframe)[^>]*\b(?:src|href)=['"]([^'"]*)""", rest)
    assert sources and all(s.startswith("data:image/") for s in sources)  # every image inline, nothing fetched
    # 3 heads x 4 classes x (overlay, class mean), and one thumbnail per misclassified query
    assert len(sources) == LENS_HEADS * 4 * 2 + len(made[2].evaluation.misclassified)
    assert path.stat().st_size < 6e6


def test_the_report_opens_offline_in_chromium_and_its_heatmap_answers_a_hover(made, browser, tmp_path):
    path, *_ = made
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    asked = []

    def only_the_file(route):
        asked.append(route.request.url)
        route.continue_() if route.request.url.startswith("file:") else route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    expect(page.locator(".plotly-graph-div .main-svg").first).to_be_visible(timeout=60_000)
    expect(page.locator(".plotly-graph-div")).to_have_count(5)
    for index in range(5):  # every figure drawn
        expect(page.locator(".plotly-graph-div").nth(index).locator(".main-svg").first).to_be_attached()
    grid = page.locator("#sav-heatmap .nsewdrag").first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 15 / 16, box["y"] + box["height"] * 15 / 16)  # layer 7, head 7
    expect(page.locator("#sav-heatmap .hovertext")).to_contain_text(
        re.compile(r"layer 7, head 7.*in-sample accuracy [01]\.\d\d.*leave-one-out accuracy [01]\.\d\d", re.S)
    )
    loaded_images = page.evaluate("Array.from(document.images).every(image => image.complete && image.naturalWidth > 0)")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    context.close()
    assert loaded_images and not errors
    assert asked == [path.as_uri()]  # the file itself, nothing else
