"""Click paths of the page in Chromium that must keep working, and views that must follow what they show.

Each test names the defect it guards against (issue "What a visitor can still break or be misled by").
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from test_app_browser import settled_box
from test_app_live import stroke

from app_harness import TIMEOUT_MS, client, load_task_and_extract, open_page, running_app
from sav_explorer.models import EXAMPLES_DIR
from sav_explorer.ui.live import DRAW_PROMPT

expect.set_options(timeout=TIMEOUT_MS)
ZIGZAG = [(0.3, 0.35), (0.7, 0.4), (0.35, 0.6), (0.65, 0.65)]  # a red scribble across the canvas


@pytest.fixture(scope="module")
def url():
    with running_app() as (url, _):
        yield url


def errors_shown(page) -> list[str]:
    """The text of the error toasts on the page."""
    return [text for text in page.locator(".toast-body").all_text_contents() if "rror" in text]


def click_cell(page, layer: int, head: int, n: int = 8) -> None:
    """A plain click on the heatmap cell of (layer, head) in an n x n grid."""
    drag = page.locator("#sav-heatmap .nsewdrag").first
    drag.scroll_into_view_if_needed()
    box = settled_box(page, drag)
    cell = (box["x"] + box["width"] * (head + 0.5) / n, box["y"] + box["height"] * (layer + 0.5) / n)
    page.mouse.move(*cell)
    expect(page.locator("#sav-heatmap .hovertext")).to_contain_text(f"layer {layer}, head {head}")
    page.mouse.click(*cell)


def test_a_row_of_the_per_head_votes_inspects_that_head_and_heatmap_clicks_keep_working(browser, url):
    """Clicking a row failed with "query 1: … is not in the list of choices", and every heatmap click
    after it failed too (the image list kept a value outside its choices)."""
    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "colour")
    expect(page.locator("#sav-token-preview")).to_contain_text("Image tokens per example")  # the extraction's last event
    page.get_by_role("tab", name="Classify").click()
    page.locator("#sav-queries input[type=file]").set_input_files([str(EXAMPLES_DIR / "colour" / "queries_red_0.png")])
    expect(page.locator("#sav-label")).to_contain_text("SAV prediction: red")
    rows = page.locator("#sav-head-votes [role=row]")
    expect(rows).to_have_count(21)  # the header and 20 voting heads
    second = rows.nth(2)
    layer, head = (int(x) for x in second.inner_text().split()[:2])
    second.get_by_text("red", exact=True).click()
    inspect = page.locator("#sav-inspect").first
    expect(inspect).to_be_visible()  # the Explore tab, where Inspect lives, comes to the front
    expect(inspect).to_contain_text(f"Layer {layer}, head {head}")
    expect(page.locator("#sav-inspect-image input")).to_have_value("query 1: queries_red_0.png")
    expect(page.locator("#sav-overlay img")).to_be_visible()
    assert not errors_shown(page)

    click_cell(page, 2, 0)  # a heatmap click after the row's: that head, still on the classified image
    expect(inspect).to_contain_text("Layer 2, head 0")
    expect(inspect).to_contain_text(re.compile(r"image \d+\.\d%"))
    expect(page.locator("#sav-inspect-image input")).to_have_value("query 1: queries_red_0.png")
    assert not errors_shown(page)
    page.close()


def test_a_new_fit_empties_the_views_of_the_fit_before_and_a_restore_says_whose_support_set_shows(browser, url):
    """After another extraction the Inspect panel kept the old task's maps and the Classify tab the old
    drawing's result, under the new banner; the canvas's Clear left the result; after a restore the
    support panel showed a support set that was not the classifier's, with no note; and the status line
    of an extraction stayed after the support set had changed."""
    other = client(url)  # a classifier zip, as Export makes it
    other.predict("size", api_name="/load_example")
    other.predict("", 200704, 4, 8, "in-sample", api_name="/extract")
    classifier_zip = other.predict(api_name="/export")[0]

    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "colour")
    expect(page.locator("#sav-token-preview")).to_contain_text("Image tokens per example")
    click_cell(page, 2, 0)
    inspect = page.locator("#sav-inspect").first
    expect(inspect).to_contain_text("Layer 2, head 0")
    expect(page.locator("#sav-class-maps img")).to_have_count(6)

    page.get_by_role("tab", name="Classify").click()
    live, results = page.locator("#sav-live-result"), page.locator("#sav-results")
    head_votes = page.locator("#sav-head-votes")
    expect(head_votes).to_contain_text("layer")  # an empty table has its column names, not "1 2 3"
    stroke(page, ZIGZAG)
    expect(live).to_contain_text("SAV prediction: red")
    expect(results).to_contain_text("drawing.png")
    page.locator("#sav-canvas-clear").click()  # the canvas's Clear clears its result too
    expect(live).to_have_text(DRAW_PROMPT)
    expect(results).not_to_contain_text("drawing.png")
    expect(head_votes.locator("[role=row]")).to_have_count(1)
    stroke(page, ZIGZAG)
    expect(live).to_contain_text("SAV prediction: red")
    expect(page.locator("#sav-voting-maps img").first).to_be_visible()

    load_task_and_extract(page, "shape")  # a new fit: the drawing's result belonged to the colour task
    expect(page.locator("#sav-classify-banner")).to_contain_text("task shape")
    expect(live).to_have_text(DRAW_PROMPT)
    expect(results).not_to_contain_text("drawing.png")
    expect(page.locator("#sav-voting-maps img")).to_have_count(0)
    expect(head_votes).to_contain_text("layer")
    page.get_by_role("tab", name="Explore").click()
    expect(inspect).to_contain_text("Click a cell of the heatmap")
    expect(inspect).not_to_contain_text("Layer 2, head 0")
    expect(page.locator("#sav-class-maps img")).to_have_count(0)

    status = page.locator("#sav-status")
    expect(status).to_contain_text("Extracted")
    load_task_and_extract(page, "size", extract=False)  # the status line spoke of the extraction before
    expect(status).not_to_contain_text("Extracted")

    page.get_by_role("tab", name="Export").click()
    page.locator("#sav-restore-file input[type=file]").set_input_files([classifier_zip])
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(status).to_contain_text("Restored a classifier")
    support_status = page.get_by_text("restored from a file")
    expect(support_status).to_contain_text("not the ones it was fitted on")
    page.close()


@pytest.mark.parametrize("how", ["paste", "script"])
def test_a_question_pasted_or_set_by_script_marks_the_result_out_of_date(browser, url, how):
    """Typing a new question marked the result out of date; the same text pasted, or set by a script, did not."""
    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "size")
    banner = page.locator("#sav-explore-banner")
    expect(banner).to_contain_text("Current classifier: task size")
    box = page.locator("#sav-question textarea, #sav-question input").first
    if how == "paste":
        box.select_text()
        page.evaluate("document.execCommand('insertText', false, 'how big is it ?')")  # what Ctrl+V does to the text
    else:
        box.evaluate("(el) => { el.value = 'how big is it ?'; el.dispatchEvent(new Event('input', { bubbles: true })); }")
    expect(banner).to_contain_text("Out of date: the question changed")
    page.close()


def test_a_model_that_failed_to_load_leaves_the_list_showing_the_model_in_use(browser, url, monkeypatch):
    """The list kept showing the model that failed to load, while Extract used the one before."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the app runs in this process: the hub is unreachable, the load fails
    page = open_page(browser, url, TIMEOUT_MS)
    model = page.locator("#sav-model input")
    in_use = model.input_value()
    model.click()
    page.get_by_role("option", name="Qwen/Qwen2-VL-2B-Instruct", exact=True).click()
    expect(model).to_have_value("Qwen/Qwen2-VL-2B-Instruct")
    page.get_by_role("button", name="Load model").click()
    expect(page.get_by_text("could not load model 'Qwen/Qwen2-VL-2B-Instruct'").first).to_be_visible()
    expect(model).to_have_value(in_use)
    expect(page.locator("#sav-model-status")).to_contain_text(f"Still using {in_use}")
    page.close()


def test_cancel_with_nothing_running_stops_nothing_and_the_status_says_the_budget_note_once(url):
    """Cancel pressed when nothing ran set the flag anyway and said "Cancelling after the current batch…":
    the next extraction was then cancelled before it started. And the bundled model's note "(not applicable:
    llava always uses 64 tokens per image)" came in every status line, not only beside the budget control."""
    visitor = client(url)
    visitor.predict("size", api_name="/load_example")
    assert visitor.predict(api_name="/cancel").startswith("Nothing to cancel")
    _, summary, *_, status = visitor.predict("", 200704, 4, 4, "in-sample", api_name="/extract")
    assert "Leave-one-out accuracy" in summary and status.startswith("Extracted 64 heads")
    assert "not applicable" not in status and "the model's fixed 64 tokens each" in status
    assert "not applicable: llava always uses 64 tokens per image" in visitor.predict(256, 200704, api_name="/token_preview")
    assert visitor.predict(api_name="/cancel").startswith("Nothing to cancel")  # the extraction has finished


def test_cancel_reaches_an_extraction_armed_or_running_and_its_status_goes_once_it_ends(browser, url, monkeypatch):
    """ "Cancelling after the current batch…" stayed after the extraction had finished anyway (and a Cancel
    pressed after the end said it too): the finished extraction's status replaces it, and a later Cancel
    says there is nothing to cancel."""
    import threading
    import time

    from sav_explorer.ui import explore

    finished = threading.Event()
    real_fit = explore.fit_examples

    def fit_that_ends_after_a_cancel(loaded, examples, encoding, run, **kwargs):
        result = real_fit(loaded, examples, encoding, run, **kwargs)  # every batch done: a Cancel now comes too late
        finished.set()
        for _ in range(600):  # waits (at most a minute) for the visitor's Cancel
            if run.should_stop():
                break
            time.sleep(0.1)
        return result

    monkeypatch.setattr(explore, "fit_examples", fit_that_ends_after_a_cancel)
    page = open_page(browser, url, TIMEOUT_MS)
    status = page.locator("#sav-status")
    load_task_and_extract(page, "size", extract=False)
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(status).to_contain_text("Nothing to cancel")
    page.get_by_role("button", name="Extract heads").click()
    assert finished.wait(120)
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("task size")
    expect(status).to_contain_text("Extracted 64 heads")
    expect(page.locator("#sav-token-preview")).to_contain_text("Image tokens per example")  # the extraction's last event
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(status).to_contain_text("Nothing to cancel")
    page.close()


def test_analyse_results_keep_their_own_places_and_compare_frames_the_compared_top_k(browser, url):
    """Each result of the Analyse tab replaced the one before in the same place (an ablation hid the
    comparison with the model's own answers); Compare spoke of the top 10 while both maps framed the 20
    voting heads, and the heads in both tops were not marked."""
    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "size")
    load_task_and_extract(page, "colour")
    expect(page.locator("#sav-token-preview")).to_contain_text("Image tokens per example")
    page.get_by_role("tab", name="Analyse").click()
    own, ablation = page.locator("#sav-analysis-summary"), page.locator("#sav-ablation-summary")
    page.get_by_role("button", name="Compare with the model's own answers").click()
    expect(own).to_contain_text("the model's own answers")
    page.get_by_role("button", name="Ablate the voting heads").click()
    expect(ablation).to_contain_text("voting heads ablated")
    expect(own).to_contain_text("the model's own answers")  # still there, beside it
    expect(page.locator("#sav-analysis-rows")).to_contain_text("the model's answer")
    expect(page.locator("#sav-ablation-rows")).to_contain_text("after ablation")

    page.get_by_role("button", name="Compare", exact=True).click()
    summary = page.locator("#sav-comparison")
    expect(summary).to_contain_text("Top 10 heads of size and colour")
    shared = int(re.search(r"(\d+) shared", summary.inner_text())[1])
    for name, side in (("size", "first"), ("colour", "second")):
        expect(page.locator(f"#sav-compare-{side} .gtitle")).to_contain_text(f"{name}: top 10 framed, {shared} shared")
        frames = page.locator(f"#sav-compare-{side} .shapelayer path")
        expect(frames).to_have_count(10)
        gold = [style for style in frames.evaluate_all("(paths) => paths.map((p) => p.style.stroke)") if style == "rgb(255, 196, 0)"]
        assert len(gold) == shared
    page.close()


def test_the_support_gallery_cuts_no_thumbnail_at_its_edge(browser, url):
    """The gallery's 170 px showed its second row cut through the shapes, as if the images were cropped."""
    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "colour", extract=False)
    expect(page.locator("#sav-gallery img").nth(29)).to_be_attached()
    cut = page.evaluate(
        """() => {
          const wrap = document.querySelector('#sav-gallery .grid-wrap');
          const top = wrap.getBoundingClientRect().top, seen = wrap.clientHeight;
          return [...wrap.querySelectorAll('.thumbnail-item')]
            .map((item) => item.getBoundingClientRect())
            .filter((box) => box.top - top < seen && box.bottom - top > seen).length;
        }"""
    )
    assert cut == 0
    page.close()
