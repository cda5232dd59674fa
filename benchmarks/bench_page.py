"""Prints the page's latency figures in Chromium; no timed assertions anywhere.

    python benchmarks/bench_page.py

k: the median time, over 20 moves of the slider, from the input event to the heatmap's frames
redrawn for the new k and painted (measured in the page: the input, then the next animation
frame; goal < 100 ms). The server's re-scoring follows and replaces the heatmap; it is not waited for.

draw: on the colour task, the median over 20 strokes (red and blue in turn) from the mouse release
to the updated votes beside the canvas (goal < 500 ms), split into the model (reading the drawing and
the forward pass), the rest of the server's handler, and the page (the debounce, the transfer,
Gradio's queue and the re-render). The strokes run twice in one run: on an idle machine, then
beside a CPU load the benchmark starts itself (`--load N` busy processes, default one per core;
0 skips it), because the figure depends on what else the machine is doing: the model's pass and
Chromium's rendering share the same cores.
Needs Debian's chromium (`apt-get install chromium`), as the browser tests do.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # run as a script from anywhere in a checkout

from playwright.sync_api import expect  # noqa: E402

from app_harness import TIMEOUT_MS, chromium, load_task_and_extract, open_page, running_app  # noqa: E402

expect.set_options(timeout=TIMEOUT_MS)
MOVE = """
async ([value]) => {
  const slider = document.querySelector('#sav-k input[type=range]');
  const start = performance.now();
  slider.value = value;
  slider.dispatchEvent(new Event('input', { bubbles: true }));
  await new Promise((done) => requestAnimationFrame(() => done()));
  const frames = document.querySelectorAll('#sav-heatmap .scatterlayer .point').length;
  return [performance.now() - start, frames];
}
"""


WATCH_LABEL = """
() => {
  const label = document.querySelector('#sav-live-result');
  new MutationObserver(() => { window.__savLabelAt = performance.now(); })
    .observe(label, { childList: true, subtree: true, characterData: true });
}
"""


def _spin() -> None:
    while True:
        pass


@contextmanager
def cpu_load(processes: int):
    """`processes` busy loops beside the benchmark, ended on the way out."""
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()


def open_draw_view(page) -> None:
    load_task_and_extract(page, "colour")
    page.get_by_role("tab", name="Classify").click()


def bench_draw(page) -> list[tuple[float, float, float]]:
    """(release to votes, model, server) in ms for each stroke, on the colour task."""
    canvas = page.locator("#sav-canvas")
    canvas.scroll_into_view_if_needed()
    page.locator("#sav-brush").evaluate("(el) => { el.value = 40; }")
    page.evaluate(WATCH_LABEL)
    box = canvas.bounding_box()
    results = []
    for i in range(20):
        colour = ("red", "blue")[i % 2]
        page.locator("#sav-canvas-clear").click()
        page.get_by_role("button", name=colour, exact=True).click()
        page.mouse.move(box["x"] + 70, box["y"] + 80)
        page.mouse.down()
        page.mouse.move(box["x"] + 190, box["y"] + 100, steps=5)
        page.mouse.move(box["x"] + 80, box["y"] + 170, steps=5)
        page.mouse.up()
        expect(page.locator("#sav-live-result")).to_contain_text(f"SAV prediction: {colour}")
        page.wait_for_timeout(300)  # the timing line and the voting heads' overlays land
        took = page.evaluate("() => window.__savLabelAt - window.__savStrokeEnd")
        timing = re.search(r"Read in (\d+) ms on the server \((\d+) ms of it the model\)", page.locator("#sav-live-timing").text_content())
        results.append((took, float(timing[2]), float(timing[1])))
    return results


def draw_line(draws: list[tuple[float, float, float]], condition: str) -> str:
    total, model, server = (statistics.median(values) for values in zip(*draws))
    low, high = min(d[0] for d in draws), max(d[0] for d in draws)
    return (
        f"[draw, {condition}] mouse release to updated votes: median {total:.0f} ms ({low:.0f}-{high:.0f}) "
        f"over {len(draws)} strokes (goal < 500 ms): model {model:.0f} ms, rest of the server "
        f"{server - model:.0f} ms, page {total - server:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy processes for the loaded run (0: none)")
    args = parser.parse_args()
    with running_app() as (url, _), chromium() as browser:
        page = open_page(browser, url)
        load_task_and_extract(page, "size")
        expect(page.locator("#sav-heatmap .scatterlayer .point")).to_have_count(20)
        frames_ms = []
        for value in [5, 30, 12, 40, 3, 25, 8, 33, 17, 50, 6, 28, 14, 45, 9, 36, 21, 60, 2, 20]:
            took, count = page.evaluate(MOVE, [value])
            assert count == value, (count, value)
            frames_ms.append(took)
            expect(page.locator("#sav-heatmap .gtitle")).to_contain_text(f"{value} selected")
            page.wait_for_timeout(400)  # let the server's answer land before the next move
        open_draw_view(page)
        draws = {"idle": bench_draw(page)}
        if args.load:
            with cpu_load(args.load):
                draws[f"beside {args.load} busy processes"] = bench_draw(page)
    for condition, measured in draws.items():
        print(draw_line(measured, condition))
    if len(draws) == 2:
        idle, loaded = (statistics.median(d[0] for d in measured) for measured in draws.values())
        print(f"[draw] loaded / idle: {loaded / idle:.2f}")
    print(
        f"[k] frames redrawn and painted after an input: median {statistics.median(frames_ms):.1f} ms, "
        f"max {max(frames_ms):.1f} ms over {len(frames_ms)} moves (goal < 100 ms)"
    )


if __name__ == "__main__":
    main()
