"""One example, one model input: every pass on a classifier reads an example exactly as its fit did.

The spy is a forward pre-hook on the whole model: it records the `input_ids` and `pixel_values`
of every forward pass that carries an image, whichever pass made it. For one 1000 x 1000 photo,
the fit's capture and every later pass (classify, evaluate, the curve, the lens and class
averages, support means, the model's own answers generated and scored, ablation, Ray's capture
task) must hand the model bit-identical inputs. On tiny Qwen2-VL the processor's own pixel limit
is raised so that the pixel cap changes the token count (1,024 image tokens uncapped, 256 capped),
as it does for Qwen2-VL-2B's published settings.
"""

from __future__ import annotations

import functools

import pytest
import torch
from PIL import Image

from sav_explorer import Encoding, Example, RunOptions, SAVClassifier, encode, load_model
from sav_explorer.ablation import ablation_study
from sav_explorer.answers import generate_answers, zero_shot
from sav_explorer.attribution import attribute
from sav_explorer.capture import capture_heads
from sav_explorer.causal import label_tokens, patch, steering_study
from sav_explorer.distributed import CaptureTask
from sav_explorer.errors import DataError
from sav_explorer.interventions import support_means
from sav_explorer.lens import class_averages, look
from sav_explorer.models.budget import BudgetError, budget_settings
from sav_explorer.pipeline import capture_for, fit_examples, predict_examples
from tiny_models import build_tiny

QUESTION = "What colour is it?"
FAMILIES = ("qwen2_vl", "smolvlm", "llava_onevision")
APP_PIXELS = 128 * 128  # a pixel cap that scales the photo down (the page's slider)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-encoding")
    # no image cache: every pass computes its images' features, so that the spy sees the pixels each reads
    loaded = {family: load_model(str(build_tiny(family, root / family)), device="cpu", image_cache_bytes=0) for family in FAMILIES}
    qwen = loaded["qwen2_vl"].processor.image_processor
    qwen.size = {"shortest_edge": qwen.size["shortest_edge"], "longest_edge": 256 * 256}  # 1,024 tokens for a big photo
    return loaded


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two labelled 1000 x 1000 photos with texture (a solid image would hide resampling differences)."""
    folder = tmp_path_factory.mktemp("photos")
    generator = torch.Generator().manual_seed(0)
    paths = []
    for name, tint in (("red.png", (1.0, 0.2, 0.2)), ("blue.png", (0.2, 0.2, 1.0))):
        noise = torch.rand(1000, 1000, 1, generator=generator) * torch.tensor(tint) * 255
        Image.fromarray(noise.to(torch.uint8).numpy()).save(folder / name)
        paths.append(folder / name)
    return [Example((paths[0],), label="red"), Example((paths[1],), label="blue")]


def encodings(loaded) -> dict[str, Encoding]:
    """The app's extraction (a pixel cap and, where the family takes one, 256 image tokens) and the CLI's defaults."""
    try:
        budget_settings(loaded, 256)
        budget = 256
    except BudgetError:
        budget = None
    return {"app": Encoding(QUESTION, max_pixels=APP_PIXELS, max_image_tokens=budget), "cli": Encoding(QUESTION)}


class InputSpy:
    """Records what the model is given, whichever pass gives it: the real `input_ids` of every forward pass
    over a prompt (not the one-token steps of generation) and the `pixel_values` of every image encoding.
    Generation encodes images before its first step (`get_image_features`), so that is watched too."""

    def __init__(self, loaded):
        self.loaded, self.prompts, self.pixels = loaded, [], []

    def __enter__(self):
        def record_prompt(module, args, kwargs):
            ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
            if ids is not None and ids.shape[1] > 1:
                self.prompts.append(ids[0][mask[0].bool()].tolist() if mask is not None else ids[0].tolist())

        encoder = self.loaded.model.base_model
        original = encoder.get_image_features

        @functools.wraps(original)
        def record_pixels(*args, **kwargs):
            self.pixels.append((kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]).detach().clone())
            return original(*args, **kwargs)

        encoder.get_image_features = record_pixels
        self.handle = self.loaded.model.register_forward_pre_hook(record_prompt, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        del self.loaded.model.base_model.get_image_features


def passes(loaded, clf, example):
    """Every pass that reads a query or a support example, each on `example` alone, under the classifier's encoding."""
    encoding, one = clf.encoding, [example]
    runs = {
        "classify": lambda: predict_examples(loaded, clf, one),
        "evaluate": lambda: capture_for(loaded, clf, one, RunOptions(batch_size=8)),
        "curve": lambda: capture_heads(loaded, one, encoding),
        "lens": lambda: look(loaded, example, [clf.selected_heads[0]], encoding),
        "class averages": lambda: class_averages(loaded, one, clf.selected_heads[0], encoding),
        "support means": lambda: support_means(loaded, one, clf.selected_heads, encoding),
        "generate": lambda: generate_answers(loaded, one, encoding, max_new_tokens=2),
        "zero-shot generate": lambda: zero_shot(loaded, one, clf.classes_, encoding, max_new_tokens=2),
        "zero-shot likelihood": lambda: zero_shot(loaded, one, clf.classes_, encoding, method="likelihood"),
        "ablation": lambda: ablation_study(
            loaded, one, clf.classes_, clf.selected_heads, encoding, mode="mean", support=one, n_random=0, method="likelihood"
        ),
        "ray capture task": lambda: ray_capture(loaded, encoding, one),
        "steering": lambda: steering_study(
            loaded,
            [Example(example.images, example.question, "other")],
            [*clf.classes_, "other"],
            one,
            example.label,
            clf.selected_heads,
            encoding,
            n_random=0,
            method="likelihood",
        ),
    }
    try:  # patching and attribution compare labels' first tokens: a tokenizer that writes "Ġ" first cannot
        label_tokens(loaded, example, clf.classes_, encoding)
    except DataError:
        return runs
    runs["patching"] = lambda: patch(loaded, clf, example, example, clf.selected_heads, encoding, max_new_tokens=2)
    runs["attribution"] = lambda: attribute(loaded, one, clf.classes_, encoding)
    return runs


def ray_capture(loaded, encoding, examples):
    """What a Ray actor runs on its batch (`distributed.CaptureTask`), in this process."""
    task = CaptureTask(None, encoding, None)
    task.setup(loaded)
    return task(loaded, examples)


@pytest.mark.parametrize("setting", ["app", "cli"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_pass_gives_the_model_the_input_the_fit_gave_it(models, photos, family, setting):
    loaded = models[family]
    encoding = encodings(loaded)[setting]
    with InputSpy(loaded) as fitting:
        clf, _ = fit_examples(loaded, photos, encoding, RunOptions(batch_size=1), k=2)
    assert clf.encoding == encoding
    fit_ids, fit_pixels = fitting.prompts[0], fitting.pixels[0]
    assert torch.equal(encode(loaded, photos[:1], clf.encoding).inputs["pixel_values"], fit_pixels)
    differing = {}
    for name, run in passes(loaded, clf, photos[0]).items():
        with InputSpy(loaded) as spy:
            run()
        assert spy.prompts and spy.pixels, f"{name} never ran the model on the image"
        for ids in spy.prompts:
            if ids[: len(fit_ids)] != fit_ids:  # likelihood scoring appends a label to the prompt
                differing[name] = f"{len(ids)} input ids against the fit's {len(fit_ids)}"
        for pixels in spy.pixels:  # patching runs source and target (here both the photo) in one batch
            copies = max(1, pixels.shape[0] // fit_pixels.shape[0])
            if pixels.shape[1:] != fit_pixels.shape[1:] or not torch.equal(pixels, torch.cat([fit_pixels] * copies)):
                differing[name] = f"pixel values {tuple(pixels.shape)} against the fit's {tuple(fit_pixels.shape)}"
    assert not differing, f"passes that read the photo differently from the fit ({family}, {setting}): {differing}"


def test_the_pixel_cap_changes_what_qwen_reads(models, photos):
    """The case the invariant guards: with Qwen2-VL's settings, the cap changes the image tokens four-fold."""
    loaded = models["qwen2_vl"]
    capped = encode(loaded, photos[:1], Encoding(QUESTION, max_pixels=APP_PIXELS)).image_tokens[0]
    uncapped = encode(loaded, photos[:1], Encoding(QUESTION)).image_tokens[0]
    assert (capped, uncapped) == (256, 1024)


def test_a_saved_classifier_keeps_its_encoding_and_later_passes_read_with_it(models, photos, tmp_path):
    loaded = models["qwen2_vl"]
    encoding = Encoding(QUESTION, max_pixels=APP_PIXELS, max_image_tokens=200)
    with InputSpy(loaded) as fitting:
        clf, _ = fit_examples(loaded, photos, encoding, RunOptions(batch_size=1), k=2)
    clf.save(tmp_path / "clf", model_id=loaded.model_id, revision=loaded.revision)
    restored = SAVClassifier.load(tmp_path / "clf")
    assert restored.encoding == encoding
    with InputSpy(loaded) as later:
        predict_examples(loaded, restored, photos[:1])
    assert later.prompts[0] == fitting.prompts[0] and torch.equal(later.pixels[0], fitting.pixels[0])


def test_an_override_is_named(models):
    encoding = Encoding(QUESTION, max_pixels=APP_PIXELS)
    same, none = encoding.overridden(question=QUESTION, max_pixels=None)
    assert same == encoding and none == []
    changed, notes = encoding.overridden(max_pixels=1024 * 1024)
    assert changed.max_pixels == 1024 * 1024 and len(notes) == 1
    assert "max pixels 1,048,576 instead of the fit's 16,384" in notes[0]
