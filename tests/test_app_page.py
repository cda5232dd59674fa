"""The page as a teacher meets it in the first five minutes, in Chromium at 1440 x 1000: what is on screen,
what the current result belongs to, and how the two ways of choosing heads show.

Each test names the defect it guards against (issue "Everything a visitor can break or be puzzled by").
"""

from __future__ import annotations

import re
import time

import pytest
from PIL import Image
from playwright.sync_api import expect

from app_harness import TIMEOUT_MS, load_task_and_extract, open_page, running_app
from sav_explorer.models import EXAMPLES_DIR

expect.set_options(timeout=TIMEOUT_MS)
HELD_BACK_S = 6  # how long the k test holds the server's re-scoring back


@pytest.fixture(scope="module")
def page(browser):
    with running_app() as (url, _):
        yield open_page(browser, url, TIMEOUT_MS)


def load_task(page, name: str, count: str) -> None:
    task = page.locator("#sav-task input")
    task.click()
    task.fill(name)
    page.get_by_role("option", name=name, exact=True).click()
    page.get_by_role("button", name="Load example task").click()
    expect(page.get_by_text(count)).to_be_visible()


def in_viewport(page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 200) <= 1000


def test_the_main_flow_fits_on_screen_with_one_progress_display_and_the_loaded_model_named(page):
    load_task(page, "size", "10 examples in 2 classes")
    assert in_viewport(page, "#sav-extract")  # Extract above the fold at 1440 x 1000
    page.get_by_role("button", name="Extract heads").click()
    expect(page.locator(".progress-text, .meta-text-center").first).to_be_visible()
    assert page.locator(".progress-bar").count() <= 1  # one progress display, not three over the labels
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("20 selected")
    page.wait_for_timeout(300)
    assert page.evaluate("window.scrollY") == 0  # the page did not scroll away from the heatmap's top rows
    assert in_viewport(page, "#sav-heatmap") and in_viewport(page, "#sav-extract")
    expect(page.get_by_text(re.compile(r"8 layers, 64 heads .*loaded in [0-9.]+ s"))).to_be_visible()  # not "loads on first use"


def test_the_colour_scale_marks_chance_and_the_title_names_the_task(page):
    expect(page.locator("#sav-heatmap .cbaxis")).to_contain_text("chance 0.50")
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text('task size · question "is the shape small or large ?"')


def test_the_current_result_is_marked_out_of_date_when_its_inputs_change(page):
    banner = page.locator("#sav-explore-banner")
    expect(banner).to_contain_text("Current classifier: task size")
    expect(banner).not_to_contain_text("Out of date")
    load_task(page, "shape", "20 examples in 4 classes")
    expect(banner).to_contain_text("Out of date: the support set and the question changed")
    page.get_by_role("tab", name="Classify").click()
    expect(page.locator("#sav-classify-banner")).to_contain_text("Out of date")
    page.get_by_role("tab", name="Explore").click()
    load_task(page, "size", "10 examples in 2 classes")
    expect(banner).not_to_contain_text("Out of date")


def test_k_and_a_custom_set_are_two_visible_ways_with_a_way_back_to_each(page):
    k_box = page.locator("#sav-k input[type=number]")
    k_box.fill("5")
    k_box.press("Enter")
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("5 selected")
    expect(page.get_by_text("5 heads vote")).to_be_visible()  # the server's answer, after the page's own frames
    box = page.locator("#sav-heatmap .nsewdrag").first.bounding_box()
    corner = (box["x"] + box["width"] * 15 / 16, box["y"] + box["height"] * 15 / 16)
    page.mouse.move(*corner)
    expect(page.locator("#sav-heatmap .hovertext")).to_contain_text("layer 7, head 7")
    page.keyboard.down("Shift")
    page.mouse.click(*corner)
    page.keyboard.up("Shift")
    expect(page.locator("#sav-heatmap .gtitle")).not_to_contain_text("5 selected")
    mode = page.locator("#sav-mode")
    expect(mode.locator("input[value='custom set']")).to_be_checked()
    expect(k_box).to_have_value("5")  # k still shows the top-k value, not the size of the custom set
    mode.get_by_text("top-k").click()
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("5 selected")
    expect(page.get_by_text("Your custom set of")).to_be_visible()
    mode.get_by_text("custom set").click()
    expect(page.locator("#sav-heatmap .gtitle")).not_to_contain_text("5 selected")


def test_a_single_classified_image_is_shown_whole_and_votes_read_as_head_counts(page, tmp_path):
    page.get_by_role("tab", name="Classify").click()
    page.locator("#sav-queries input[type=file]").set_input_files([str(EXAMPLES_DIR / "size" / "queries_large_0.png")])
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("#sav-label")).to_contain_text(re.compile(r"SAV prediction: (large|small)"))
    expect(page.locator("#sav-label")).to_contain_text(re.compile(r"\d+ of \d+ heads voted for it"))
    expect(page.locator("#sav-label")).not_to_contain_text("%")
    image = page.locator("#sav-preview img").first
    caption = page.locator("#sav-preview .caption-label").first
    expect(image).to_be_visible()
    gallery, picture, label = page.locator("#sav-preview").bounding_box(), image.bounding_box(), caption.bounding_box()
    assert picture["width"] < gallery["width"] / 3  # a thumbnail, not the whole width
    assert picture["y"] + picture["height"] <= label["y"] + 1  # the caption sits under the image, never over it
    page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)
    assert Image.open(tmp_path / "classify.png").size[0] >= 1400


def test_moving_k_redraws_the_frames_at_once_and_the_thumb_never_snaps_back(browser, monkeypatch):
    """The server's re-scoring is held back 6 s: the frames follow k from the page alone, and the
    server's late answers never pull the slider back to an earlier value."""
    from sav_explorer.ui.explore import ExploreHandlers

    real_set_k = ExploreHandlers.set_k

    def slow_set_k(self, k, session):
        time.sleep(HELD_BACK_S)
        return real_set_k(self, k, session)

    monkeypatch.setattr(ExploreHandlers, "set_k", slow_set_k)
    with running_app() as (url, _):
        page = open_page(browser, url, TIMEOUT_MS)
        load_task_and_extract(page, "size")
        frames = page.locator("#sav-heatmap .scatterlayer .point")
        expect(frames).to_have_count(20)
        slider = page.locator("#sav-k input[type=range]")
        started = time.perf_counter()
        for value in range(21, 41):  # a drag from 20 to 40
            slider.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); }", value)
        expect(frames).to_have_count(40, timeout=5000)  # before the held-back server could answer
        assert time.perf_counter() - started < HELD_BACK_S - 0.5
        expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("40 selected")
        page.wait_for_timeout(1000 * HELD_BACK_S + 1500)  # the server's answer arrives
        assert slider.input_value() == "40" and page.locator("#sav-k input[type=number]").input_value() == "40"
        expect(frames).to_have_count(40)
        page.close()
