"""Head capture on tiny random-weight instances of real VLM families, loaded like hub models.

Each family is built from transformers' config classes with a locally built processor, saved,
and loaded back through `load_model`, the function a user calls with a hub id.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sav_explorer import Example, HeadCapture, RunOptions, build_prompt, capture_heads, count_image_tokens, load_model
from sav_explorer.models import decoder_layers
from sav_explorer.models.prompts import processor_inputs
from tiny_models import FAMILIES, build_tiny

EXPECTED_PROMPTS = {
    "llava": "<s>USER: <image>\nWhat is it?\nASSISTANT:",
    "llava_next": "<s>[INST] <image>\nWhat is it? [/INST]",
    "llava_onevision": "<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n",
    "qwen2_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n",
    "qwen2_5_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n",
    "qwen3_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n",
    "qwen3_5": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n",
    "idefics3": "<|begin_of_text|>User:<image>What is it?<end_of_utterance>\nAssistant:",
    "smolvlm": "<|im_start|>User:<image>What is it?<end_of_utterance>\nAssistant:",
    "gemma3": "<bos><start_of_turn>user\n<start_of_image>What is it?<end_of_turn>\n<start_of_turn>model\n",
    "gemma4": "<bos><|turn>user\n<|image|>What is it?<turn|>\n<|turn>model\n",
    "paligemma": "<image>What is it?",  # no chat template: image tokens, then the question
    "internvl": "<|im_start|>user\n<IMG_CONTEXT>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n",
    "mllama": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What is it?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral3": "<s>[INST][IMG]What is it?[/INST]",
}
REQUIRED = {
    "llava",
    "llava_next",
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "idefics3",
    "smolvlm",
    "gemma3",
    "gemma4",
    "paligemma",
    "internvl",
    "mllama",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: load_model(str(build_tiny(family, root / family)), device="cpu") for family in FAMILIES}


def examples():
    """Two examples whose prompts differ in length, so a batch of them needs padding."""
    return [
        Example((Image.new("RGB", (40, 30), (200, 30, 30)),), "What is it?", "a"),
        Example((Image.new("RGB", (40, 30), (30, 30, 200)),), "And this one here, which colour is it really?", "b"),
    ]


def reference_o_proj(loaded, example):
    """Full forward with plain hooks: each site's o_proj input and output at the last token."""
    images = [example.load_images()]
    inputs = processor_inputs(loaded, images, [build_prompt(loaded.processor, example.question, 1)])
    seen_in, seen_out, handles = {}, {}, []
    for site in loaded.sites:
        handles.append(site.module.register_forward_pre_hook(lambda m, a, name=site.name: seen_in.__setitem__(name, a[0][0, -1])))
        handles.append(site.module.register_forward_hook(lambda m, a, out, name=site.name: seen_out.__setitem__(name, out[0, -1])))
    try:
        with torch.no_grad():
            loaded.model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return seen_in, seen_out


def test_every_required_family_is_covered():
    assert REQUIRED <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_uses_the_family_format(models, family):
    assert build_prompt(models[family].processor, "What is it?", 1) == EXPECTED_PROMPTS[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_head_layout_is_read_from_the_attention_modules(models, family):
    loaded = models[family]
    layers = loaded.model.get_decoder().layers
    for site in loaded.sites:
        attention = site.module  # the o_proj
        assert site.n_heads * site.head_dim == attention.in_features
        owner = layers[site.layer]
        assert (getattr(owner, "self_attn", None) or owner.cross_attn).head_dim == site.head_dim
    layout = loaded.layout
    assert layout.heads == [(s.layer, h) for s in loaded.sites for h in range(s.n_heads)]
    assert layout.sizes == [s.head_dim for s in loaded.sites for _ in range(s.n_heads)]
    last = loaded.sites[-1]
    assert layout.position(last.layer, last.n_heads - 1) == layout.n_heads - 1


def test_family_quirks_are_handled(models):
    gemma3 = models["gemma3"]
    text = gemma3.model.config.get_text_config()
    assert gemma3.sites[0].head_dim != text.hidden_size // text.num_attention_heads  # hidden // heads would be wrong
    assert sorted({s.head_dim for s in models["gemma4"].sites}) == [16, 32]  # per-layer head size
    assert [s.layer for s in models["qwen3_5"].sites] == [3]  # linear-attention layers have no o_proj
    assert "cross_attn" in models["mllama"].sites[1].name  # cross-attention layer read too


@pytest.mark.parametrize("family", FAMILIES)
def test_heads_concatenated_equal_o_proj_input_and_project_to_its_output(models, family):
    loaded = models[family]
    example = examples()[0]
    inputs_seen, outputs_seen = reference_o_proj(loaded, example)
    captured = capture_heads(loaded, [example])
    assert captured.layout == loaded.layout
    for site, block in zip(loaded.sites, captured.blocks):
        heads = block[0]  # (n_heads, head_dim)
        torch.testing.assert_close(heads.reshape(-1), inputs_seen[site.name].float())
        weight, bias = site.module.weight.float(), site.module.bias
        per_head = [heads[h] @ weight[:, h * site.head_dim : (h + 1) * site.head_dim].T for h in range(site.n_heads)]
        projected = torch.stack(per_head).sum(0) + (bias.float() if bias is not None else 0)
        torch.testing.assert_close(projected, outputs_seen[site.name].float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_padded_batch_equals_one_example_at_a_time(models, family):
    loaded = models[family]
    batched = capture_heads(loaded, examples(), run=RunOptions(batch_size=2))
    single = capture_heads(loaded, examples(), run=RunOptions(batch_size=1))
    for a, b in zip(batched.blocks, single.blocks):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_early_stop_equals_full_forward_and_never_runs_the_lm_head(models, family):
    loaded = models[family]
    example = examples()[1]
    inputs = processor_inputs(loaded, [example.load_images()], [build_prompt(loaded.processor, example.question, 1)])
    with torch.no_grad(), HeadCapture(loaded, inputs["attention_mask"], stop_early=False) as capture:
        loaded.model(**inputs, use_cache=False)
    full = capture.blocks()
    lm_head_calls = []
    handle = loaded.model.get_output_embeddings().register_forward_hook(lambda *a: lm_head_calls.append(1))
    try:
        early = capture_heads(loaded, [example])
    finally:
        handle.remove()
    assert lm_head_calls == []
    for a, b in zip(full, early.blocks):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "gemma4"])
def test_no_hook_is_left_behind_after_an_exception(models, family):
    loaded = models[family]
    mask = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ZeroDivisionError):
        with HeadCapture(loaded, mask):
            raise ZeroDivisionError("the forward pass failed")
    assert all(not site.module._forward_pre_hooks for site in loaded.sites)


@pytest.mark.parametrize("family", ["llava", "gemma3", "mllama"])
def test_the_early_stop_is_swallowed_by_the_capture_block(models, family):
    """A model called directly inside the block is safe: the block ends the pass and keeps the heads."""
    loaded = models[family]
    example = examples()[0]
    inputs = processor_inputs(loaded, [example.load_images()], [build_prompt(loaded.processor, example.question, 1)])
    with torch.no_grad(), HeadCapture(loaded, inputs["attention_mask"], loaded.sites[:1]) as capture:
        loaded.model(**inputs, use_cache=False)
        pytest.fail("the forward pass should have stopped after the first site")
    assert capture.blocks()[0].shape == (1, loaded.sites[0].n_heads, loaded.sites[0].head_dim)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "smolvlm", "gemma3", "mllama"])
def test_only_the_needed_layers_are_captured(models, family):
    loaded = models[family]
    first = loaded.sites[:1]
    partial = capture_heads(loaded, examples(), run=RunOptions(batch_size=2), sites=first)
    full = capture_heads(loaded, examples(), run=RunOptions(batch_size=2))
    assert partial.layout.layers == [first[0].layer]
    torch.testing.assert_close(partial.blocks[0], full.blocks[0])


def test_several_images_per_example(models):
    loaded = models["qwen2_vl"]
    two = Example((Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (40, 30), (30, 200, 30))), "Same colour?", "no")
    captured = capture_heads(loaded, [two, examples()[0]], run=RunOptions(batch_size=2))
    assert captured.n_examples == 2
    alone = capture_heads(loaded, [two])
    torch.testing.assert_close(captured.blocks[0][:1], alone.blocks[0], atol=1e-5, rtol=1e-4)


def test_a_model_without_attention_output_projections_is_refused(models):
    from torch import nn

    from sav_explorer import ModelLoadError, find_attention_sites

    loaded = models["llava"]
    layers = loaded.model.get_decoder().layers
    saved = [layer.self_attn.o_proj for layer in layers]
    try:
        for layer in layers:
            layer.self_attn.o_proj = nn.Identity()
        with pytest.raises(ModelLoadError, match="no decoder layer with an attention output projection"):
            find_attention_sites(loaded.model)
    finally:
        for layer, o_proj in zip(layers, saved):
            layer.self_attn.o_proj = o_proj


@pytest.mark.parametrize("options", [{"device_map": "cpu"}, {"dtype": "bfloat16"}])
def test_device_map_and_dtype_options_load_and_capture(models, options):
    path = models["llava"].model_id
    loaded = load_model(path, **options)
    captured = capture_heads(loaded, examples(), run=RunOptions(batch_size=2))
    assert captured.blocks[0].dtype == torch.float32  # activations are always kept in float32
    reference = capture_heads(models["llava"], examples(), run=RunOptions(batch_size=2))
    tolerance = 5e-2 if "dtype" in options else 1e-6
    torch.testing.assert_close(captured.blocks[0], reference.blocks[0], atol=tolerance, rtol=tolerance)


def image_feature_positions(loaded, inputs) -> list[int]:
    """Positions whose decoder input is not the token's own embedding: where image features were placed.

    Derived without the token counter: the first decoder layer's input is compared, by cosine, with the
    embedding of each input id (some families scale embeddings, so values are not compared directly).
    """
    seen = {}

    def keep_input(module, args, kwargs):
        seen.setdefault("h", kwargs.get("hidden_states", args[0] if args else None))

    layer0 = decoder_layers(loaded.model)[0]
    handle = layer0.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        with torch.no_grad():
            loaded.model(**inputs, use_cache=False)
    finally:
        handle.remove()
    embedded = loaded.model.get_input_embeddings()(inputs["input_ids"]).float()
    cosine = torch.nn.functional.cosine_similarity(seen["h"].float(), embedded, dim=-1)  # (batch, seq)
    real = inputs["attention_mask"].bool()  # padding is no image
    return ((cosine < 0.999) & real).sum(-1).tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_image_tokens_are_counted_where_image_features_enter_the_decoder(models, family):
    loaded = models[family]
    rows = examples()
    images = [row.load_images() for row in rows]
    inputs = processor_inputs(loaded, images, [build_prompt(loaded.processor, row.question, 1) for row in rows])
    counted = count_image_tokens(loaded, inputs["input_ids"])
    if family == "mllama":  # images enter through cross-attention; the sequence keeps one placeholder per image
        assert counted == [1, 1] and image_feature_positions(loaded, inputs) == [0, 0]
    else:
        assert counted == image_feature_positions(loaded, inputs) and counted[0] > 0
