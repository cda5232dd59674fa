"""The memory guard on SmolVLM-256M's real shape (random weights): the activation memory of a request is
estimated from the processor's output before the model runs, and a request over the limit is run
one example at a time or refused, saying which and why."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image
from real_size_models import build_real

from sav_explorer.__main__ import main
from sav_explorer.capture import capture_heads
from sav_explorer.data import Example
from sav_explorer.encoding import Encoding, RunOptions
from sav_explorer.models import build_prompt, load_model
from sav_explorer.models.budget import budget_settings
from sav_explorer.models.memory import GB, RUNTIME, MemoryLimitError, activation_estimate
from sav_explorer.models.prompts import processor_inputs
from tests.conftest import REPO

PHOTO = Image.new("RGB", (1024, 768), (40, 90, 160))
QUESTION = "What is in the image?"


@pytest.fixture(scope="module")
def smolvlm(tmp_path_factory):
    return load_model(str(build_real("smolvlm-256m", tmp_path_factory.mktemp("real") / "smolvlm-256m")), device="cpu")


def estimate(loaded, images, budget=None):
    rows = [[image] for image in images]
    inputs = processor_inputs(
        loaded, rows, [build_prompt(loaded.processor, QUESTION, row) for row in rows], budget_settings(loaded, budget)
    )
    return activation_estimate(loaded, inputs)


def forward_calls(loaded):
    calls = []
    handle = loaded.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


def test_the_estimate_follows_image_tokens_and_batch(smolvlm):
    photo, small = estimate(smolvlm, [PHOTO]), estimate(smolvlm, [PHOTO], budget=64)
    assert photo.vision_patches == 13 * 1024 and small.vision_patches == 1024  # 12 splits + global view, or one view
    assert 0.5 * GB < photo.bytes < GB  # the vision tower over 13 views of 1,024 patches dominates
    assert photo.bytes - RUNTIME > 8 * (small.bytes - RUNTIME)
    assert estimate(smolvlm, [PHOTO, PHOTO], budget=64).bytes - RUNTIME > 1.8 * (small.bytes - RUNTIME)


def test_an_example_over_the_memory_limit_is_refused_before_the_model_runs(smolvlm):
    calls, handle = forward_calls(smolvlm)
    try:
        with pytest.raises(MemoryLimitError) as refused:
            capture_heads(smolvlm, [Example((PHOTO,), QUESTION)], run=RunOptions(memory_limit=GB // 2))
    finally:
        handle.remove()
    message, needed = str(refused.value), estimate(smolvlm, [PHOTO]).bytes
    assert f"{needed / GB:.1f} GB" in message and "0.5 GB" in message and "902 tokens" in message and "--max-image-tokens" in message
    assert calls == []


def test_a_batch_over_the_memory_limit_runs_one_example_at_a_time_with_the_same_result(smolvlm, caplog):
    examples = [Example((PHOTO,), QUESTION), Example((Image.new("RGB", (640, 480), (200, 40, 40)),), QUESTION)]
    one, two = estimate(smolvlm, [PHOTO], budget=64).bytes, estimate(smolvlm, [PHOTO, PHOTO], budget=64).bytes
    alone = capture_heads(smolvlm, examples, Encoding(max_image_tokens=64), RunOptions(batch_size=1))
    calls, handle = forward_calls(smolvlm)
    try:
        with caplog.at_level(logging.WARNING, logger="sav_explorer.capture"):
            split = capture_heads(smolvlm, examples, Encoding(max_image_tokens=64), RunOptions(batch_size=2, memory_limit=(one + two) // 2))
    finally:
        handle.remove()
    assert len(calls) == 2 and "one at a time" in caplog.text and "a batch of 2" in caplog.text
    for a, b in zip(alone.blocks, split.blocks):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_the_cli_memory_limit_flag_refuses_with_one_line(tmp_path, capsys):
    data = REPO / "assets" / "examples" / "colour" / "support.jsonl"
    status = main(["fit", "--data", str(data), "--out", str(tmp_path / "o"), "--max-activation-gb", "0.00001"])
    err = capsys.readouterr().err
    assert status == 2 and "activation-memory limit" in err and "Traceback" not in err
