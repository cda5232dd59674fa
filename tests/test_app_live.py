"""Live classification in Chromium: a dropped image is classified at once; a drawing as soon as a stroke ends.

To refresh the README's screenshot of a drawing being classified (assets/screenshot-draw.png):
    SAV_REFRESH_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_app_live.py -k draw
"""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect
from test_app_browser import REPO

from app_harness import TIMEOUT_MS, chromium, load_task_and_extract, open_page, running_app
from sav_explorer.models import EXAMPLES_DIR

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def page():
    with running_app() as (url, _), chromium() as browser:
        page = open_page(browser, url, TIMEOUT_MS)
        load_task_and_extract(page, "colour")
        page.get_by_role("tab", name="Classify").click()
        yield page


def stroke(page, points, steps=6):
    """A stroke through `points` (fractions of the canvas), pressed from the first to the last."""
    canvas = page.locator("#sav-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    at = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for point in at[1:]:
        page.mouse.move(*point, steps=steps)
    page.mouse.up()


def test_a_dropped_image_is_classified_at_once(page):
    page.locator("#sav-queries input[type=file]").set_input_files([str(EXAMPLES_DIR / "colour" / "queries_green_0.png")])
    expect(page.locator("#sav-results")).to_contain_text("queries_green_0.png")  # no button pressed
    expect(page.locator("#sav-label")).to_contain_text("SAV prediction: green")


def test_draw_red_and_see_red_win_then_draw_over_it_in_blue_and_see_blue_win(page):
    zigzag = [(0.3, 0.35), (0.7, 0.4), (0.35, 0.6), (0.65, 0.65)]
    stroke(page, zigzag)  # the first swatch, red, is chosen
    label = page.locator("#sav-label")
    expect(label).to_contain_text("SAV prediction: red")
    expect(page.locator("#sav-live-result")).to_contain_text("SAV prediction: red")  # beside the canvas too
    expect(page.locator("#sav-results")).to_contain_text("drawing.png")
    timing = re.fullmatch(
        r"Read in (\d+) ms on the server \((\d+) ms of it the model\)\.", page.locator("#sav-live-timing").text_content().strip()
    )
    assert timing and int(timing[2]) <= int(timing[1])  # a sentence a visitor can read, not raw JSON

    page.get_by_role("button", name="blue", exact=True).click()
    page.locator("#sav-brush").evaluate("(el) => { el.value = 48; }")
    stroke(page, zigzag)  # a wider stroke on the same path covers the red one
    expect(label).to_contain_text("SAV prediction: blue")
    expect(page.locator("#sav-voting-maps img").first).to_be_visible()  # where the voting heads look, for the drawing
    if os.environ.get("SAV_REFRESH_SCREENSHOT"):
        page.wait_for_timeout(1500)
        page.locator("#sav-draw-block").scroll_into_view_if_needed()
        page.screenshot(path=str(REPO / "assets" / "screenshot-draw.png"))
    assert re.search(r"\d+ of 20 heads voted for it", label.text_content())
