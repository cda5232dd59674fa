"""Where a head looks: the lens equals eager attention, the layouts put each image token where its pixels are."""

from __future__ import annotations

import contextlib
import statistics

import numpy as np
import pytest
import torch
from PIL import Image

from sav_explorer import Encoding, Example, encode, load_examples, load_model
from sav_explorer.lens import class_averages, density_on_image, last_token_attention, look, region_share
from sav_explorer.models import EXAMPLES_DIR, decoder_layers
from sav_explorer.models.layouts import image_token_layout
from sav_explorer.teaching.shapes import BACKGROUND
from tiny_models import FAMILIES, build_tiny

LAYOUT_UNKNOWN = {"mllama"}
HALF = 6  # half the side of the square of changed pixels, in a 64 x 48 image  # its image enters through cross-attention only


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-lens")
    return {family: load_model(str(build_tiny(family, root / family)), device="cpu") for family in FAMILIES}


def noise_image(width=64, height=48, seed=0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def inputs_for(loaded, image, question="What is it?"):
    return encode(loaded, [Example((image,), question)], Encoding())


def eager_reference(loaded, inputs):
    """The same checkpoint loaded with eager attention, full forward with output_attentions: last-token rows per layer."""
    model = type(loaded.model).from_pretrained(loaded.model_id, attn_implementation="eager").eval()
    with torch.no_grad():
        attentions = model(**inputs, use_cache=False, output_attentions=True).attentions
    layers = [i for i, layer in enumerate(decoder_layers(model)) if getattr(layer, "self_attn", None) or getattr(layer, "cross_attn", None)]
    if len(attentions) != len(layers):  # Qwen3.5 reports only its attention layers
        layers = [site.layer for site in loaded.sites]
    return {layer: attentions[i][:, :, -1] for i, layer in enumerate(layers)}


def attention_modules(loaded):
    layers = decoder_layers(loaded.model)
    return [getattr(layers[site.layer], "self_attn", None) or layers[site.layer].cross_attn for site in loaded.sites]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_lens_equals_the_eager_attention_weights(models, family):
    loaded = models[family]
    batch = inputs_for(loaded, noise_image())
    inputs = batch.inputs
    heads = [(site.layer, h) for site in loaded.sites for h in range(site.n_heads)]
    before = [module.config._attn_implementation for module in attention_modules(loaded)]
    lens = last_token_attention(loaded, batch, heads)
    assert [module.config._attn_implementation for module in attention_modules(loaded)] == before == ["sdpa"] * len(before)
    reference = eager_reference(loaded, inputs)
    for (layer, head), weights in lens.items():
        torch.testing.assert_close(weights[0], reference[layer][0, head].float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_shares_sum_to_one_and_every_image_token_is_in_exactly_one_cell(models, family):
    loaded = models[family]
    lens = look(loaded, Example((noise_image(),), "What is it?"), [(loaded.sites[-1].layer, 0)])
    view = next(iter(lens.heads.values()))
    assert view.image_share + view.layout_share + view.text_share == pytest.approx(1, abs=1e-5)
    layout = lens.layout
    if family in LAYOUT_UNKNOWN:
        assert not layout.known and "layout unknown" in layout.note and view.maps == [[]]
        assert "image" not in layout.kinds  # Mllama's placeholder is a layout token: the image enters by cross-attention
        return
    assert layout.known, layout.note
    cells = [p for views in layout.grids for grid in views for p in grid.positions]
    assert len(cells) == len(set(cells))
    assert sorted(cells) == [p for p, kind in enumerate(layout.kinds) if kind == "image"]
    assert sum(sum(map(sum, m.grid)) for m in view.maps[0]) == pytest.approx(view.image_share, abs=1e-5)


@contextlib.contextmanager
def vision_layers_skipped(model):
    """Every transformer layer of the vision tower hands its input straight on, so that each image token
    depends only on its own patches (patch embeddings go straight to the projector). The layers' forward
    is wrapped rather than hooked, so that transformers' own output hooks see the skipped output too."""

    def skipping(layer):
        original = layer.forward

        def forward(*args, **kwargs):
            output = original(*args, **kwargs)
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return forward

    layers = [
        layer
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList)
        and any(word in name for word in ("vision", "visual"))
        and name.split(".")[-1] in ("layers", "layer", "blocks")
        for layer in module
    ]
    assert layers, "no vision layers found"
    for layer in layers:
        layer.forward = skipping(layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def decoder_input(loaded, inputs) -> torch.Tensor:
    seen = {}

    def keep(module, args, kwargs):
        seen.setdefault("h", kwargs.get("hidden_states", args[0] if args else None))

    handle = decoder_layers(loaded.model)[0].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with torch.no_grad():
            loaded.model(**inputs, use_cache=False)
    finally:
        handle.remove()
    return seen["h"][0].float()


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - LAYOUT_UNKNOWN))
@pytest.mark.parametrize("spot", [(0.8, 0.25), (0.2, 0.75)])  # two corners: a transposed layout fails one
def test_a_patch_of_changed_pixels_shows_in_the_cell_that_covers_it(models, family, spot):
    """Derived without the layout code: change the pixels of one small square and see which image
    token's decoder input changes most, in each view; the layout must put that token over the square."""
    loaded = models[family]
    if family == "gemma3":  # its tiny projector starts at zero, so image features would not depend on the pixels
        loaded = load_model(loaded.model_id)
        torch.nn.init.normal_(loaded.model.model.multi_modal_projector.mm_input_projection_weight, std=0.5)
    width, height = 64, 48
    base = noise_image(width, height)
    changed = base.copy()
    x, y = int(spot[0] * width), int(spot[1] * height)
    changed.paste((255, 255, 255) if sum(base.getpixel((x, y))) < 384 else (0, 0, 0), (x - HALF, y - HALF, x + HALF, y + HALF))
    inputs, inputs_changed = inputs_for(loaded, base).inputs, inputs_for(loaded, changed).inputs
    with vision_layers_skipped(loaded.model):
        delta = (decoder_input(loaded, inputs) - decoder_input(loaded, inputs_changed)).norm(dim=-1)
    layout = image_token_layout(loaded, inputs, [(width, height)])
    for grid in layout.grids[0]:
        x0, y0, x1, y1 = grid.box
        if not (x0 <= x < x1 and y0 <= y < y1):
            continue  # this view does not show the spot (a cropped base view)
        assert float(delta[list(grid.positions)].max()) > 0, grid.view  # the view sees the change at all
        strongest = max(range(len(grid.positions)), key=lambda i: float(delta[grid.positions[i]]))
        cx0, cy0, cx1, cy1 = grid.cell_box(*divmod(strongest, grid.cols))
        assert cx0 - HALF <= x <= cx1 + HALF and cy0 - HALF <= y <= cy1 + HALF, (grid.view, (x, y), (cx0, cy0, cx1, cy1))


def test_the_density_on_the_image_sums_to_one_and_follows_the_cells(models):
    loaded = models["qwen2_vl"]
    lens = look(loaded, Example((noise_image(),), "What is it?"), [(0, 1)])
    density = density_on_image(lens.heads[(0, 1)].maps[0], lens.sizes[0], (24, 32))
    assert density.shape == (24, 32) and float(density.sum()) == pytest.approx(1, abs=1e-5)


def object_cells_share(lens, head, image) -> float:
    """The share of a head's image attention on grid cells that cover any pixel of the object."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.int64))
    return region_share(lens, head, (pixels - torch.tensor(BACKGROUND)).abs().sum(-1) > 60)


def test_the_teaching_models_pointer_head_looks_at_the_object_a_question_is_about():
    """Head 0 of layer 2 was trained to point at the object asked about: the lens must show it there."""
    loaded = load_model()
    queries = load_examples(EXAMPLES_DIR / "colour" / "queries.jsonl")
    shares = [object_cells_share(look(loaded, q, [(2, 0)]), (2, 0), Image.open(q.images[0])) for q in queries]
    assert len(shares) == 60 and statistics.median(shares) >= 0.95, statistics.median(shares)


def test_class_averages_are_the_mean_of_each_classs_maps_and_shares():
    loaded = load_model()
    support = load_examples(EXAMPLES_DIR / "colour" / "support.jsonl")
    red = [e for e in support if e.label == "red"]
    averages = class_averages(loaded, support[:10], (2, 0), resolution=8)  # 5 red, then 5 green
    assert [(a.label, a.n) for a in averages] == [("green", 5), ("red", 5)]
    mean_red = averages[1]
    lenses = [look(loaded, e, [(2, 0)]) for e in red]
    expected = torch.stack([density_on_image(x.heads[(2, 0)].maps[0], x.sizes[0], (8, 8)) for x in lenses]).mean(0)
    torch.testing.assert_close(mean_red.density, expected)
    assert float(mean_red.density.sum()) == pytest.approx(1, abs=1e-5)
    assert mean_red.image_share == pytest.approx(statistics.mean(x.heads[(2, 0)].image_share for x in lenses))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_value_weighting_multiplies_each_weight_by_its_tokens_value_norm(models, family):
    loaded = models[family]
    batch = inputs_for(loaded, noise_image())
    inputs = batch.inputs
    layer = loaded.sites[-1].layer
    heads = [(layer, h) for h in range(loaded.sites[-1].n_heads)]
    plain = last_token_attention(loaded, batch, heads)
    weighted = last_token_attention(loaded, batch, heads, "value")
    seen = {}
    attention = decoder_layers(loaded.model)[layer].self_attn
    handle = attention.v_proj.register_forward_hook(lambda module, args, output: seen.__setitem__("v", output.detach()))
    try:
        with torch.no_grad():
            loaded.model(**inputs, use_cache=False)
    finally:
        handle.remove()
    head_dim = loaded.sites[-1].head_dim
    values = seen["v"][0].view(seen["v"].shape[1], -1, head_dim)  # (seq, n_kv, head_dim)
    per_kv = len(heads) // values.shape[1]
    for (_, head), weights in plain.items():
        expected = weights[0] * values[:, head // per_kv].norm(dim=-1)
        torch.testing.assert_close(weighted[(layer, head)][0], expected / expected.sum(), atol=1e-6, rtol=1e-5)


GATED_OUTPUT = {"qwen3_5"}  # a learned gate multiplies the attention output before o_proj: no longer a weighted sum of values


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in GATED_OUTPUT])
def test_the_lens_weights_times_the_values_give_the_captured_head_output(models, family):
    """Checked from outside the lens: Σ over tokens of the lens's weight × that token's value (as `v_proj`
    and its norm give it, the key-value head shared by grouped queries) is the head's output that
    capture reads, for every head of the last layer."""
    from sav_explorer.capture import capture_heads

    loaded = models[family]
    batch = inputs_for(loaded, noise_image())
    site = loaded.sites[-1]
    heads = [(site.layer, h) for h in range(site.n_heads)]
    weights = last_token_attention(loaded, batch, heads)
    attention = attention_modules(loaded)[-1]
    seen = {}

    def keep(module, args, output):
        seen["v"] = output.detach()

    projection = attention.v_proj
    hooks = [projection.register_forward_hook(keep)]
    if getattr(attention, "v_norm", None) is not None:  # Gemma 4 normalises values after the projection
        hooks.append(attention.v_norm.register_forward_hook(keep))
    try:
        captured = capture_heads(loaded, [Example((noise_image(),), "What is it?")])
    finally:
        for hook in hooks:
            hook.remove()
    values = seen["v"][0].view(seen["v"].shape[1], -1, site.head_dim)  # (seq, n_kv, head_dim)
    per_kv = site.n_heads // values.shape[1]
    output = captured.blocks[-1][0]  # (n_heads, head_dim)
    for (_, head), row in weights.items():
        expected = (row[0, :, None] * values[:, head // per_kv].float()).sum(0)
        torch.testing.assert_close(output[head].float(), expected, atol=1e-5, rtol=1e-4)
