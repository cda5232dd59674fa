"""Launching the app for tests: once per module, on a free port, in a thread; closed afterwards.

    @pytest.fixture(scope="module")
    def app_url():
        with running_app() as (url, demo):
            yield url

The model is `$SAV_MODEL` if set, else the bundled teaching model (tiny, offline). Browsers are
Debian's chromium driven by Playwright (`chromium()`); a browser is never downloaded: set
`SAV_CHROMIUM` if chromium lives elsewhere than on the PATH.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
from pathlib import Path

from sav_explorer.models import default_model_id
from sav_explorer.ui import build_demo, launch_options

CHROMIUM = os.environ.get("SAV_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 120_000  # generous for a busy 2-core machine; nothing asserts on time


@contextlib.contextmanager
def chromium():
    """A headless chromium under Playwright, closed afterwards."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"chromium not found at {CHROMIUM}: apt-get install chromium (CI's .ci/run does), or set SAV_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_app(default_model: str | None = None):
    demo = build_demo(default_model=default_model or default_model_id())
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        yield url.rstrip("/"), demo
    finally:
        demo.close()


def client(url: str):
    """An HTTP client of the app; a generous timeout: on 2 busy cores the app answers slowly, yet it must answer."""
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": 120})


def open_page(browser, url: str, timeout_ms: int = TIMEOUT_MS):
    """A new page at 1440 x 1000 on the app, as the browser tests and benchmarks use it."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(timeout_ms)
    page.goto(url)
    # The page's load event issues the session's token (kept in the browser as it returns): a click
    # before then may run on a session of its own that a reload would not find.
    page.wait_for_function("() => localStorage.getItem('sav-explorer-session') !== null")
    return page


def load_task_and_extract(page, name: str, extract: bool = True) -> None:
    """Picks a bundled task in the page, loads it and (by default) extracts its heads, waiting for the heatmap."""
    from playwright.sync_api import expect

    task = page.locator("#sav-task input")
    task.click()
    task.fill(name)
    page.get_by_role("option", name=name, exact=True).click()
    page.get_by_role("button", name="Load example task").click()
    expect(page.get_by_text(re.compile(r"\d+ examples in \d+ classes"))).to_be_visible()
    if extract:
        page.get_by_role("button", name="Extract heads").click()
        expect(page.locator("#sav-heatmap .gtitle")).to_contain_text(f"task {name}")
