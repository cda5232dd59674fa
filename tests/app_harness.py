"""Launching the app for tests: once per module, on a free port, in a thread; closed afterwards.

    @pytest.fixture(scope="module")
    def app_url():
        with running_app() as (url, demo):
            yield url

The model is `$SAV_MODEL` if set, else the bundled teaching model (tiny, offline).
"""

from __future__ import annotations

import contextlib
import socket

from sav_explorer.models import default_model_id
from sav_explorer.ui import build_demo, launch_options


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
