"""Video rows: a row image that is a video file goes to the processor as a video, for families whose
processor reads video; the others refuse it by name. Videos are written here with PyAV."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from sav_explorer.capture import HeadCapture, capture_heads
from sav_explorer.data import Example, load_examples
from sav_explorer.encoding import Encoding
from sav_explorer.errors import DataError
from sav_explorer.lens import look
from sav_explorer.models import build_prompt, load_model
from sav_explorer.models.prompts import processor_inputs
from tiny_models import build_tiny

VIDEO_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "llava_onevision", "smolvlm", "internvl", "gemma4")


def write_video(path, frames: int = 8, size=(64, 48)):
    """A short clip: a bright square moving left to right over a dark ground."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=4)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    for i in range(frames):
        picture = np.full((size[1], size[0], 3), 20, dtype=np.uint8)
        x = 4 + i * (size[0] - 20) // frames
        picture[16:32, x : x + 16] = (230, 200, 40)
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


FRAMES_AS_IMAGES = ("smolvlm", "internvl")  # their processors hand a video's frames to the tower as images
FRAMES_NEEDED = {"gemma4": 8}  # Gemma 4 samples 32 frames by default, more than the 8-frame clip has: --frames


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_a_video_row_is_captured_and_its_heads_are_the_o_proj_input(tmp_path, clip, family):
    loaded = load_model(str(build_tiny(family, tmp_path / family)), device="cpu")
    example = Example((clip,), "What moves?")
    frames = FRAMES_NEEDED.get(family)
    activations = capture_heads(loaded, [example, example], Encoding(video_frames=frames))
    assert activations.n_examples == 2 and activations.image_tokens[0] > 0  # a video's tokens are counted
    # the invariant: concatenated heads equal the o_proj input at the last token, read directly
    row = example.load_images()
    inputs = processor_inputs(loaded, [row], [build_prompt(loaded.processor, "What moves?", row)], video_frames=frames)
    if family in FRAMES_AS_IMAGES:
        assert inputs["pixel_values"].shape[:2].numel() >= 2  # several frames went in
    else:
        assert "pixel_values_videos" in inputs and "pixel_values" not in inputs
    seen = {}
    site = loaded.sites[-1]
    handle = site.module.register_forward_pre_hook(lambda module, args: seen.update(x=args[0][0, -1].detach()))
    try:
        with torch.no_grad():
            loaded.model(**inputs)
    finally:
        handle.remove()
    assert torch.allclose(activations.blocks[-1][0].reshape(-1), seen["x"].float(), atol=1e-5)
    with HeadCapture(loaded, inputs["attention_mask"]) as capture, torch.no_grad():
        loaded.model(**inputs)
    assert torch.allclose(capture.blocks()[-1][0], activations.blocks[-1][0], atol=1e-5)


def test_a_family_without_a_video_processor_refuses_video_by_name(tmp_path, clip):
    loaded = load_model(str(build_tiny("llava", tmp_path / "llava")), device="cpu")
    with pytest.raises(DataError, match="reads no video"):
        capture_heads(loaded, [Example((clip,), "What moves?")])


def test_video_rows_load_from_a_data_file_and_the_lens_says_it_reads_images_only(tmp_path, clip):
    (tmp_path / "rows.jsonl").write_text(f'{{"image": "{clip}", "question": "What moves?", "label": "right"}}\n')
    examples = load_examples(tmp_path / "rows.jsonl")
    assert examples[0].images == (clip.resolve(),)
    loaded = load_model(str(build_tiny("qwen2_vl", tmp_path / "qwen")), device="cpu")
    with pytest.raises(DataError, match="does not read video yet"):
        look(loaded, examples[0], [(0, 0)])


def test_frames_samples_that_many_frames_evenly_and_refuses_more_than_a_video_has(tmp_path, clip):
    loaded = load_model(str(build_tiny("qwen2_vl", tmp_path / "qwen")), device="cpu")
    row = Example((clip,), "What moves?").load_images()
    prompt = [build_prompt(loaded.processor, "What moves?", row)]

    def temporal_groups(frames):
        return int(processor_inputs(loaded, [row], prompt, video_frames=frames)["video_grid_thw"][0, 0])

    assert [temporal_groups(n) for n in (8, 4, 2)] == [4, 2, 1]  # two frames per temporal patch
    with pytest.raises(DataError, match="between 1 and the shortest video's 8 frames"):
        temporal_groups(9)
    fewer = capture_heads(loaded, [Example((clip,), "What moves?")], Encoding(video_frames=2))
    assert fewer.n_examples == 1 and fewer.image_tokens[0] < capture_heads(loaded, [Example((clip,), "What moves?")]).image_tokens[0]
