"""An image the model has already seen costs only the decoder, and changes no result.

Every pass takes each example's image features from the loaded model's `ImageFeatureCache`, or
computes them from that example alone. On every tiny family the cache must give what no cache
gives, bit for bit: activations, lens maps, the model's own answers and ablation reports, cold and
warm, and for batches that mix seen and unseen examples. A hit must not run the vision tower.
"""

from __future__ import annotations

import gc
import inspect

import pytest
import torch
from PIL import Image

from sav_explorer import Encoding, Example, RunOptions, encode, load_model
from sav_explorer.ablation import ablation_study
from sav_explorer.answers import generate_answers, zero_shot
from sav_explorer.capture import capture_heads
from sav_explorer.errors import DataError
from sav_explorer.image_cache import CACHE_ENV, ImageFeatureCache, caches_images, default_cache_bytes, megabytes
from sav_explorer.lens import look
from tiny_models import FAMILIES, build_tiny

ENCODING = Encoding("What colour is it?")
BIG = 10**9


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Four labelled examples of different sizes and textures (resampling and padding differ between them)."""
    folder = tmp_path_factory.mktemp("pictures")
    generator = torch.Generator().manual_seed(1)
    examples = []
    for index, (width, height) in enumerate([(40, 30), (24, 48), (64, 64), (50, 20)]):
        pixels = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8).numpy()
        path = folder / f"picture-{index}.png"
        Image.fromarray(pixels).save(path)
        examples.append(Example((path,), label=("red", "blue")[index % 2]))
    return examples


class TowerCalls:
    """Counts the family's image-feature computations (the vision tower and projector)."""

    def __init__(self, loaded):
        self.base, self.calls = loaded.model.base_model, 0

    def __enter__(self):
        original = getattr(self.base, "get_image_features", None)
        if original is None:  # Mllama: its vision model runs inside the forward pass, uncached
            return self

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        counted.__signature__ = inspect.signature(original)
        self.base.get_image_features = counted
        return self

    def __exit__(self, *exc):
        self.base.__dict__.pop("get_image_features", None)


def activations(loaded, examples, batch_size=2):
    return capture_heads(loaded, examples, ENCODING, RunOptions(batch_size=batch_size)).blocks


def assert_same_blocks(got, expected):
    assert len(got) == len(expected)
    for layer, (a, b) in enumerate(zip(got, expected)):
        assert torch.equal(a, b), f"layer block {layer} differs by {(a - b).abs().max().item():.3g}"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_cache_changes_no_result(tmp_path, pictures, family):
    model = load_model(str(build_tiny(family, tmp_path / family)), device="cpu")
    off = model.with_image_cache(ImageFeatureCache(0))
    on = model.with_image_cache(ImageFeatureCache(BIG))
    head = model.layout.heads[0]
    classes = ["red", "blue"]

    expected, reordered = activations(off, pictures), activations(off, pictures[::-1], batch_size=4)
    with TowerCalls(on) as cold:
        assert_same_blocks(activations(on, pictures), expected)
    with TowerCalls(on) as warm:  # `off` shares the model: it runs outside this block
        assert_same_blocks(activations(on, pictures), expected)
        assert_same_blocks(activations(on, pictures[::-1], batch_size=4), reordered)
        lens_on = look(on, pictures[2], [head], ENCODING).heads[head]
        texts_on = generate_answers(on, pictures, ENCODING, max_new_tokens=3)
        report_on = ablation_study(on, pictures, classes, [head], ENCODING, support=pictures, n_random=1, method="likelihood")
        likelihood_on = zero_shot(on, pictures, classes, ENCODING, method="likelihood")
    lens_off = look(off, pictures[2], [head], ENCODING).heads[head]
    assert torch.equal(lens_on.weights, lens_off.weights) and lens_on.maps == lens_off.maps
    assert texts_on == generate_answers(off, pictures, ENCODING, max_new_tokens=3)
    assert report_on == ablation_study(off, pictures, classes, [head], ENCODING, support=pictures, n_random=1, method="likelihood")
    assert likelihood_on == zero_shot(off, pictures, classes, ENCODING, method="likelihood")

    if caches_images(model):
        assert cold.calls == len(pictures), "each example's features are computed once, from that example alone"
        assert warm.calls == 0, "a seen image ran the vision tower again"
        assert on.image_cache.encoded == len(pictures) and on.image_cache.reused > 0
    else:  # Mllama: its images enter by cross-attention, not as input features
        assert on.image_cache.reused == on.image_cache.encoded == 0
        assert "cross-attention" in on.image_cache.count().describe()
    del model, off, on
    gc.collect()


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "smolvlm", "gemma3", "qwen3_vl"])
def test_a_batch_mixing_seen_and_unseen_examples_encodes_only_the_unseen(tmp_path, pictures, family):
    model = load_model(str(build_tiny(family, tmp_path / family)), device="cpu")
    on = model.with_image_cache(ImageFeatureCache(BIG))
    activations(on, pictures[:2])  # examples 0 and 1 are seen
    mixed = [pictures[2], pictures[0], pictures[3], pictures[1]]
    with TowerCalls(on) as tower:
        got = activations(on, mixed, batch_size=4)
    assert tower.calls == 2
    assert_same_blocks(got, activations(model.with_image_cache(ImageFeatureCache(0)), mixed, batch_size=4))
    assert on.image_cache.count().describe() == "2 of 6 images from the cache"


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "internvl"])
def test_cached_features_are_the_features_the_model_computes_itself(tmp_path, pictures, family):
    """Against the processor's batch handed to the model as it is (its own feature step on the whole batch):
    equal up to float rounding (the vision tower's sums run in another order for a batch than for one example)."""
    model = load_model(str(build_tiny(family, tmp_path / family)), device="cpu")
    batch = encode(model, pictures, ENCODING)
    with torch.no_grad():
        own = model.model(**batch.inputs, use_cache=False).logits
        cached = model.model(**batch.model_inputs(), use_cache=False).logits
    assert "pixel_values" not in batch.model_inputs() and "pixel_values" in batch.inputs
    torch.testing.assert_close(cached, own, rtol=1e-5, atol=1e-5)


def test_the_cache_is_bounded_in_bytes_and_drops_the_least_recently_used(tmp_path, pictures):
    model = load_model(str(build_tiny("llava", tmp_path / "llava")), device="cpu")
    probe = model.with_image_cache(ImageFeatureCache(BIG))
    activations(probe, pictures[:1])
    one = probe.image_cache.bytes  # one example's features
    assert one > 0
    bounded = model.with_image_cache(ImageFeatureCache(2 * one))
    activations(bounded, pictures[:3], batch_size=1)  # the third pushes out the first
    assert len(bounded.image_cache) == 2 and bounded.image_cache.bytes <= 2 * one
    with TowerCalls(bounded) as tower:
        activations(bounded, pictures[1:3], batch_size=1)
    assert tower.calls == 0
    with TowerCalls(bounded) as tower:
        activations(bounded, pictures[:1], batch_size=1)
    assert tower.calls == 1

    off = model.with_image_cache(ImageFeatureCache(0))
    activations(off, pictures[:2])
    activations(off, pictures[:2])
    assert len(off.image_cache) == 0 and off.image_cache.encoded == 4 and off.image_cache.reused == 0


def test_another_model_object_empties_the_cache(tmp_path, pictures):
    folder = build_tiny("llava", tmp_path / "llava")
    cache = ImageFeatureCache(BIG)
    first = load_model(str(folder), device="cpu").with_image_cache(cache)
    activations(first, pictures[:2])
    assert len(cache) == 2
    reloaded = load_model(str(folder), device="cpu").with_image_cache(cache)  # unloaded and loaded again
    with TowerCalls(reloaded) as tower:
        activations(reloaded, pictures[:2])
    assert tower.calls == 2 and len(cache) == 2


def test_a_key_is_the_pixels_not_the_file_name(tmp_path, pictures):
    """The same file name holding another picture is encoded again; another name holding the same pixels is not."""
    model = load_model(str(build_tiny("llava", tmp_path / "llava")), device="cpu").with_image_cache(ImageFeatureCache(BIG))
    path = tmp_path / "drawing.png"
    Image.open(pictures[0].images[0]).save(path)
    activations(model, [Example((path,), label="red")])
    Image.open(pictures[1].images[0]).save(path)  # a second stroke overwrites the file
    copy = tmp_path / "copy.png"
    Image.open(pictures[2].images[0]).save(copy)
    with TowerCalls(model) as tower:
        activations(model, [Example((path,), label="red")])
    assert tower.calls == 1
    activations(model, [pictures[2]])
    with TowerCalls(model) as tower:
        activations(model, [Example((copy,), label="red")])
    assert tower.calls == 0


def test_the_default_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "64")
    assert default_cache_bytes() == 64 * 1024**2 and ImageFeatureCache().max_bytes == 64 * 1024**2
    monkeypatch.setenv(CACHE_ENV, "0")
    assert ImageFeatureCache().max_bytes == 0
    monkeypatch.delenv(CACHE_ENV)
    assert 0 < default_cache_bytes() <= 2 * 1024**3
    for bad in ("lots", "-1", "nan"):
        with pytest.raises(DataError, match="MB"):
            megabytes(bad, CACHE_ENV)


def test_a_batch_with_video_reads_its_pixels_and_says_so(tmp_path, pictures):
    """Qwen's video features cannot go beside precomputed image features: such a batch runs as the processor gave it."""
    from test_video import write_video

    model = load_model(str(build_tiny("qwen2_vl", tmp_path / "qwen2_vl")), device="cpu")
    clip = Example((write_video(tmp_path / "clip.mp4"),), label="red")
    mixed = [pictures[0], clip]
    on = model.with_image_cache(ImageFeatureCache(BIG))
    got = activations(on, mixed)
    assert_same_blocks(got, activations(model.with_image_cache(ImageFeatureCache(0)), mixed))
    count = on.image_cache.count()
    assert (count.reused, count.encoded, count.uncached) == (0, 0, 2)
    assert count.describe() == "images not cached: a batch with video reads its pixels"
