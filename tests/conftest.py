"""Shared fixtures: tiny images and hand-made activations. Models are built in the tests that need them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the closed network would swallow telemetry calls
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def solid_image():
    """A 64 x 64 solid-colour RGB image, the smallest input every processor accepts."""

    def make(colour=(200, 30, 30), size=64):
        return Image.new("RGB", (size, size), colour)

    return make


@pytest.fixture
def write_png(tmp_path, solid_image):
    def write(name, colour=(200, 30, 30), size=64):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        solid_image(colour, size).save(path)
        return path

    return write


@pytest.fixture(scope="module")
def app():
    """The app on the bundled model, launched once per test module on a free port."""
    from app_harness import running_app

    with running_app() as (url, demo):
        yield url, demo


@pytest.fixture(scope="module")
def url(app):
    return app[0]


@pytest.fixture(scope="module")
def browser():
    """Chromium for a module's browser tests (`app_harness.chromium`)."""
    from app_harness import chromium

    with chromium() as launched:
        yield launched
