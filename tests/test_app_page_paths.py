"""Click paths of the page in Chromium that must keep working, and views that must follow what they show.

Each test names the defect it guards against (issue "What a visitor can still break or be misled by").
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect, sync_playwright
from test_app_browser import ARGS, CHROMIUM, TIMEOUT_MS, settled_box

from app_harness import load_task_and_extract, open_page, running_app
from sav_explorer.models import EXAMPLES_DIR

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


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
