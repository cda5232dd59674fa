"""The app in a real browser (Debian's chromium driven by Playwright): example task, extraction,
k, a click on a heatmap cell, classification, a screenshot; and a label shown as text, not HTML.

Screenshots go to the test's tmp folder. To refresh the README's screenshot (assets/screenshot.png):
    SAV_REFRESH_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_app_browser.py -k whole_flow
Never downloads a browser: set `SAV_CHROMIUM` if chromium lives elsewhere than on the PATH.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect

from app_harness import TIMEOUT_MS, load_task_and_extract, open_page
from sav_explorer.models import EXAMPLES_DIR

REPO = Path(__file__).resolve().parent.parent
expect.set_options(timeout=TIMEOUT_MS)


def settled_box(page, locator) -> dict:
    """The locator's bounding box once it has stopped moving: the heatmap is redrawn by late events
    (the k chain, the token count under the support set), and a box measured before a redraw put
    the pointer one row off under load."""
    box = locator.bounding_box()
    for _ in range(40):
        page.wait_for_timeout(250)
        again = locator.bounding_box()
        if again == box:
            return box
        box = again
    return box


def title_count(page) -> int:
    """How many heads the heatmap's title says are selected."""
    text = page.locator("#sav-heatmap .gtitle").text_content()
    return int(re.search(r"(\d+) selected", text)[1])


def test_whole_flow_in_the_browser(browser, url, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)

    task = page.locator("#sav-task input")
    task.click()
    task.fill("size")
    page.get_by_role("option", name="size", exact=True).click()
    page.get_by_role("button", name="Load example task").click()
    expect(page.get_by_text("10 examples in 2 classes")).to_be_visible()

    page.get_by_role("button", name="Extract heads").click()
    expect(page.get_by_text("Leave-one-out accuracy")).to_be_visible()
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("20 selected")

    k_box = page.locator("#sav-k input[type=number]")
    k_box.fill("5")
    k_box.press("Enter")
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("5 selected")
    selected_marks = page.locator("#sav-heatmap .scatterlayer .point")
    expect(selected_marks).to_have_count(5)
    expect(page.get_by_text("5 heads vote")).to_be_visible()  # the server's answer, after the page's own frames

    # a click on the cell of layer 7, head 7 (bottom right) inspects that head; a shift-click toggles it.
    # The extraction's events end with the token count under the support set: once it shows (and the
    # k events have answered, above), nothing above the heatmap moves any more.
    expect(page.locator("#sav-token-preview")).to_contain_text("Image tokens per example")
    grid = page.locator("#sav-heatmap .nsewdrag").first
    box = settled_box(page, grid)
    corner = (box["x"] + box["width"] * 15 / 16, box["y"] + box["height"] * 15 / 16)
    page.mouse.move(*corner)
    expect(page.locator("#sav-heatmap .hovertext")).to_contain_text(
        re.compile(r"layer 7, head 7.*in-sample accuracy [01]\.\d\d.*leave-one-out accuracy [01]\.\d\d", re.S)
    )
    page.mouse.click(*corner)
    expect(page.locator("#sav-inspect").first).to_contain_text("Layer 7, head 7")
    expect(page.locator("#sav-overlay img")).to_be_visible()
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("5 selected")  # inspecting selects nothing
    page.keyboard.down("Shift")
    page.mouse.click(*corner)
    page.keyboard.up("Shift")
    expect(page.locator("#sav-heatmap .gtitle")).not_to_contain_text("5 selected")
    after = title_count(page)
    assert after in (4, 6)
    expect(selected_marks).to_have_count(after)
    heads = page.locator("#sav-k").locator("xpath=following::*[contains(@class,'token')]")
    assert heads.count() >= after
    expect(page.get_by_text("L7 H7", exact=True)).to_have_count(1 if after == 6 else 0)
    inspected = page.locator("#sav-inspect").first  # the inspected head's line follows the toggle, never stale
    expect(inspected).to_contain_text("selected, rank" if after == 6 else "not selected")
    page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)

    page.get_by_role("tab", name="Classify").click()
    page.locator("#sav-queries input[type=file]").set_input_files([str(EXAMPLES_DIR / "size" / "queries_large_0.png")])
    expect(page.locator("#sav-queries")).to_contain_text("queries_large_0")
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("#sav-results")).to_contain_text("queries_large_0.png")
    expect(page.locator("#sav-label")).to_contain_text(re.compile("large|small"))
    page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)

    for name in ("explore.png", "classify.png"):
        assert Image.open(tmp_path / name).size[0] >= 1400
    if os.environ.get("SAV_REFRESH_SCREENSHOT"):
        page.get_by_role("tab", name="Explore").click()
        page.set_viewport_size({"width": 1440, "height": 1000})
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(500)  # let the tab switch and scroll settle before the picture
        page.screenshot(path=str(REPO / "assets" / "screenshot.png"))
    page.close()


def test_a_click_on_a_cell_shows_where_that_head_looks(browser, url, tmp_path):
    """The colour task: head (2, 0) was trained to point at the object; a click shows its overlay."""
    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "colour")
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("20 selected")
    expect(page.locator("#sav-token-preview")).to_contain_text("Image tokens per example")  # the last event of the extraction
    drag = page.locator("#sav-heatmap .nsewdrag").first
    drag.scroll_into_view_if_needed()
    box = settled_box(page, drag)
    cell = (box["x"] + box["width"] * 0.5 / 8, box["y"] + box["height"] * 2.5 / 8)
    page.mouse.move(*cell)
    expect(page.locator("#sav-heatmap .hovertext")).to_contain_text("layer 2, head 0")
    page.mouse.click(*cell)
    inspect = page.locator("#sav-inspect").first
    expect(inspect).to_contain_text("Layer 2, head 0")
    expect(inspect).to_contain_text(re.compile(r"image (99|100)\.\d%"))
    expect(page.locator("#sav-overlay img")).to_be_visible()
    expect(page.locator("#sav-class-maps img")).to_have_count(6)
    inspect.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    shot = tmp_path / "inspect.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1400
    if os.environ.get("SAV_REFRESH_SCREENSHOT"):
        inspect.screenshot(path=str(REPO / "assets" / "screenshot-inspect.png"))
    page.close()


def test_labels_show_as_text_never_as_html(browser, url, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (220, 20, 20)).save(image)
    page.get_by_role("tab", name="Label images").click()
    page.locator("#sav-new-images input[type=file]").set_input_files([str(image)])
    expect(page.locator("#sav-new-images")).to_contain_text("red")
    page.locator("#sav-new-label textarea, #sav-new-label input").first.fill("<b>x</b> <img src=x onerror=alert(1)>")
    page.get_by_role("button", name="Add to support set").click()
    expect(page.get_by_text("1 examples in 1 classes")).to_be_visible()
    expect(page.locator("#sav-gallery")).to_contain_text("<b>x</b>")
    assert page.locator("#sav-gallery b, #sav-gallery img[src=x]").count() == 0
    page.get_by_text("Support set as a table").click()
    expect(page.locator("#sav-support-table")).to_contain_text("<b>x</b>")
    assert page.locator("#sav-support-table b, #sav-support-table img[src=x]").count() == 0
    assert page.locator("b:text-is('x'), img[src='x']").count() == 0
    page.locator("#sav-question textarea, #sav-question input").first.fill("what colour ?")
    page.get_by_role("button", name="Extract heads").click()  # one class only: refused, and the message quotes the label
    toast = page.get_by_text("need at least 2 classes")
    expect(toast).to_be_visible()
    expect(toast).to_contain_text("<b>x</b>")
    assert page.locator("b:text-is('x'), img[src='x']").count() == 0
    page.close()


def test_the_analyse_tab_ablates_the_voting_heads_and_draws_the_curve(browser, url, tmp_path):
    """The colour task: ablating its voting heads, beside random heads; accuracy against k; a screenshot."""
    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "colour")
    page.get_by_role("tab", name="Analyse").click()
    page.get_by_role("button", name="Ablate the voting heads").click()
    summary = page.locator("#sav-ablation-summary")
    expect(summary).to_contain_text("voting heads ablated", timeout=4 * TIMEOUT_MS)
    expect(summary).to_contain_text("random heads")
    page.get_by_role("button", name="Draw the curve").click()
    expect(page.locator("#sav-curve .scatterlayer .trace")).to_have_count(4)  # three lines and a band
    page.locator("#sav-curve").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    shot = tmp_path / "analyse.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1400
    if os.environ.get("SAV_REFRESH_SCREENSHOT"):
        page.locator("#sav-analyse").screenshot(path=str(REPO / "assets" / "screenshot-analyse.png"))
    page.close()


def test_the_analyse_tab_steers_the_voting_heads_and_sweeps_a_patch(browser, url, tmp_path):
    """The colour task at k = 5: steering to the first colour flips the other colours' answers (the flip
    rate shows), and a sweep colours every head by its patching effect; a screenshot of the section."""
    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "colour")
    k_box = page.locator("#sav-k input[type=number]")
    k_box.fill("5")
    k_box.press("Enter")
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("5 selected")
    page.get_by_role("tab", name="Analyse").click()
    expect(page.locator("#sav-steer-target input")).to_have_value("blue")  # the classes came with the tab
    page.get_by_role("button", name="Steer the voting heads").click()
    summary = page.locator("#sav-steer-summary")
    try:
        expect(summary).to_contain_text("Flip rate", timeout=4 * TIMEOUT_MS)
    except AssertionError:
        page.screenshot(path=str(tmp_path / "steer-failed.png"), full_page=True)
        raise
    rate = float(re.search(r"Flip rate[^0-9]*([0-9.]+)", summary.text_content())[1])
    assert rate >= 0.95
    page.get_by_role("button", name="Sweep every head").click()
    expect(page.locator("#sav-patch-summary")).to_contain_text("logit difference", timeout=4 * TIMEOUT_MS)
    expect(page.locator(".gtitle", has_text="Heads by patching effect")).to_be_visible()
    expect(page.locator(".gtitle", has_text="SAV accuracy against patching effect")).to_be_visible()
    page.locator("#sav-patch-summary").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    shot = tmp_path / "causal.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1400
    if os.environ.get("SAV_REFRESH_SCREENSHOT"):
        page.locator("#sav-analyse").screenshot(path=str(REPO / "assets" / "screenshot-causal.png"))
    page.close()
