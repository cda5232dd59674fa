"""Ablating heads: the model run with chosen heads' outputs replaced, in the prompt and in generation."""

import contextlib
import random

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, LlavaForConditionalGeneration

from sav_explorer.data import Example
from sav_explorer.encoding import Encoding, encode
from sav_explorer.errors import DataError
from sav_explorer.interventions import ablated_heads, answer_tokens, position_keys, random_heads, support_means
from sav_explorer.models import build_prompt, load_model
from sav_explorer.models.prompts import processor_inputs
from tiny_models import build_tiny

FAMILIES = ("llava", "qwen2_vl", "smolvlm")


def noise(seed: int, size=(48, 40)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8).numpy())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-ablation")
    loaded = {family: load_model(str(build_tiny(family, root / family)), device="cpu") for family in FAMILIES}
    # LLaVA with biased attention projections: a zero-ablated layer must leave exactly the o_proj bias.
    config = AutoConfig.from_pretrained(root / "llava")
    config.text_config.attention_bias = True
    torch.manual_seed(0)
    biased = LlavaForConditionalGeneration(config)
    with torch.no_grad():  # initialised to zero; random biases make the check mean something
        for module in biased.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(std=0.1)
    biased.save_pretrained(root / "llava-bias")
    loaded["llava"].processor.save_pretrained(root / "llava-bias")
    loaded["llava-bias"] = load_model(str(root / "llava-bias"), device="cpu")
    return loaded


def inputs_for(loaded, images, question="What is it?"):
    return processor_inputs(loaded, [[image] for image in images], [build_prompt(loaded.processor, question, 1)] * len(images))


def o_proj_inputs(loaded, layer):
    """Records the input of one layer's o_proj at every call (after any ablation hook has changed it)."""
    seen = []
    handle = loaded.sites[layer].module.register_forward_hook(lambda module, args, output: seen.append(args[0].detach().clone()))
    return seen, handle


@pytest.mark.parametrize("family", FAMILIES)
def test_ablating_no_heads_changes_nothing(models, family):
    loaded = models[family]
    inputs = inputs_for(loaded, [noise(0), noise(1)])
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with ablated_heads(loaded, [], mode="zero"):
            ablated = loaded.model(**inputs).logits
    assert torch.equal(plain, ablated)


@pytest.mark.parametrize("family", ["llava-bias", "qwen2_vl"])
def test_zero_ablating_a_whole_layer_leaves_only_the_o_proj_bias(models, family):
    loaded = models[family]
    site = loaded.sites[0]
    outputs = []
    handle = site.module.register_forward_hook(lambda module, args, output: outputs.append(output.detach()))
    try:
        with torch.no_grad(), ablated_heads(loaded, [(site.layer, h) for h in range(site.n_heads)], mode="zero"):
            loaded.model(**inputs_for(loaded, [noise(2)]))
    finally:
        handle.remove()
    bias = site.module.bias if site.module.bias is not None else torch.zeros(site.module.out_features)
    if family == "llava-bias":
        assert site.module.bias is not None and bias.abs().max() > 0  # the check means something
    assert torch.equal(outputs[0], bias.expand_as(outputs[0]))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_ablation_reaches_every_generated_position(models, family):
    loaded = models[family]
    site = loaded.sites[-1]
    heads = [(site.layer, 1)]
    support = [Example((noise(10 + i),), "What is it?") for i in range(3)]
    means = support_means(loaded, support, heads)
    columns = slice(site.head_dim, 2 * site.head_dim)
    for mode in ("zero", "mean"):
        seen, handle = o_proj_inputs(loaded, -1)
        try:
            with torch.no_grad(), ablated_heads(loaded, heads, mode=mode, means=means):
                loaded.model.generate(**inputs_for(loaded, [noise(3)]), max_new_tokens=4, min_new_tokens=4, do_sample=False)
        finally:
            handle.remove()
        generated = seen[1:]
        assert len(generated) == 3 and all(call.shape[1] == 1 for call in generated)  # one call per token after the first
        expected = torch.zeros(site.head_dim) if mode == "zero" else means.means[site.layer][("end", 0)]
        for call in [seen[0][:, -1:], *generated]:  # the prompt's last position and every generated one
            assert torch.allclose(call[0, 0, columns], expected, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_ablation_by_the_query_itself_changes_nothing(models, family):
    """The support set's mean, position by position, of a support set that is the query alone is the query's own output."""
    loaded = models[family]
    image = noise(4)
    heads = [(site.layer, h) for site in loaded.sites for h in range(site.n_heads)]
    means = support_means(loaded, [Example((image,), "What is it?")], heads)
    inputs = inputs_for(loaded, [image])
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with ablated_heads(loaded, heads, mode="mean", means=means):
            ablated = loaded.model(**inputs).logits
        with ablated_heads(loaded, heads, mode="zero"):
            zeroed = loaded.model(**inputs).logits
    assert torch.allclose(plain, ablated, atol=1e-4)
    assert not torch.allclose(plain, zeroed, atol=1e-4)  # ablating every head does change the answer


def test_position_keys_name_text_before_images_by_start_image_tokens_by_index_and_the_rest_by_end():
    ids = torch.tensor([0, 0, 5, 6, 9, 9, 9, 7, 8])  # two pads, two text tokens, three image tokens, two text tokens
    mask = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1])
    assert position_keys(ids, mask, image_token=9) == [
        None,
        None,
        ("start", 0),
        ("start", 1),
        ("image", 0),
        ("image", 1),
        ("image", 2),
        ("end", 1),
        ("end", 0),
    ]


def test_hooks_are_removed_even_when_the_block_fails(models):
    loaded = models["llava"]
    before = [len(site.module._forward_pre_hooks) for site in loaded.sites] + [len(loaded.model._forward_pre_hooks)]
    with pytest.raises(RuntimeError), ablated_heads(loaded, [(0, 0)], mode="zero"):
        raise RuntimeError("boom")
    after = [len(site.module._forward_pre_hooks) for site in loaded.sites] + [len(loaded.model._forward_pre_hooks)]
    assert before == after


def test_unknown_heads_modes_and_missing_means_are_refused(models):
    loaded = models["llava"]
    with pytest.raises(DataError, match="no head 9:0"), ablated_heads(loaded, [(9, 0)]):
        pass
    with pytest.raises(DataError, match="unknown ablation mode"), ablated_heads(loaded, [(0, 0)], mode="noise"):
        pass
    with pytest.raises(DataError, match="needs the support set"), ablated_heads(loaded, [(0, 0)], mode="mean"):
        pass


def test_random_heads_come_from_the_same_layers_and_never_repeat_the_ablated_ones(models):
    layout = models["llava"].layout  # 2 layers of 4 heads
    heads = [(0, 0), (0, 1), (1, 3)]
    for seed in range(20):
        drawn = random_heads(layout, heads, random.Random(seed))
        assert sorted(layer for layer, _ in drawn) == [0, 0, 1]  # each from its ablated head's layer
        assert not set(drawn) & set(heads) and len(set(drawn)) == 3


def test_random_heads_borrow_from_the_other_ablated_layers_when_one_runs_short(models):
    layout = models["llava"].layout
    heads = [(0, 0), (0, 1), (0, 2), (1, 0)]  # layer 0 has one head left for three draws
    drawn = random_heads(layout, heads, random.Random(0))
    assert len(set(drawn)) == 4 and not set(drawn) & set(heads)
    assert (0, 3) in drawn and sum(layer == 1 for layer, _ in drawn) == 3
    with pytest.raises(DataError, match="too few"):
        random_heads(layout, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)], random.Random(0))


def test_an_answer_scored_after_the_prompt_is_ablated_like_generated_tokens(models):
    """Likelihood scoring runs prompt + label in one pass: the label's tokens take the last prompt
    position's mean, and the prompt's positions keep theirs (not shifted by the label)."""
    loaded = models["llava"]
    site = loaded.sites[0]
    heads = [(site.layer, 0)]
    image = noise(5)
    means = support_means(loaded, [Example((image,), "What is it?")], heads)
    batch = encode(loaded, [Example((image,), "What is it?")], Encoding(), answers=["ab"])
    n_answer = sum(batch.answer_spans[0])
    seen, handle = o_proj_inputs(loaded, 0)
    try:
        with torch.no_grad(), ablated_heads(loaded, heads, mode="mean", means=means), answer_tokens([n_answer]):
            loaded.model(**batch.inputs)
    finally:
        handle.remove()
    head = seen[0][0, :, : site.head_dim]
    last = means.means[site.layer][("end", 0)]
    assert n_answer >= 1
    assert all(torch.allclose(row, last, atol=1e-6) for row in head[-n_answer:])
    assert torch.allclose(head[-n_answer - 1], last, atol=1e-6)  # the prompt's own last position, matched from its own end
    assert torch.allclose(head[0], means.means[site.layer][("start", 0)], atol=1e-6)


@contextlib.contextmanager
def padding(loaded, side: str):
    tokenizer = loaded.processor.tokenizer
    before, tokenizer.padding_side = tokenizer.padding_side, side
    try:
        yield
    finally:
        tokenizer.padding_side = before


PADDED = [  # questions of different lengths, so that every batch is padded
    Example((noise(10),), "What is it?"),
    Example((noise(11),), "What is the shape in the middle of this picture , and its colour ?"),
    Example((noise(12),), "Colour?"),
]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_mean_ablation_of_a_padded_batch_equals_one_example_at_a_time(models, family, side):
    """The support means of a padded batch, and each padded query's last-token logits under mean
    ablation, equal those of the examples run alone, whichever side the processor pads."""
    from sav_explorer.encoding import RunOptions

    loaded = models[family]
    heads = [(site.layer, h) for site in loaded.sites for h in range(0, site.n_heads, 2)]
    with padding(loaded, side):
        together = support_means(loaded, PADDED, heads, run=RunOptions(batch_size=3))
        alone = support_means(loaded, PADDED, heads, run=RunOptions(batch_size=1))
        for layer, table in alone.means.items():
            assert table.keys() == together.means[layer].keys()
            for key, mean in table.items():
                torch.testing.assert_close(together.means[layer][key], mean, atol=1e-5, rtol=1e-4)
        queries = [Example((noise(20 + i),), e.question) for i, e in enumerate(PADDED)]
        batch = encode(loaded, queries, Encoding())
        assert (batch.attention_mask == 0).any()
        with torch.no_grad(), ablated_heads(loaded, heads, mode="mean", means=alone):
            logits = loaded.model(**batch.inputs).logits
            batched = logits[torch.arange(len(queries)), batch.last]
            single = [loaded.model(**encode(loaded, [q], Encoding()).inputs).logits[0, -1] for q in queries]
    torch.testing.assert_close(batched, torch.stack(single), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_the_lens_of_a_padded_batch_equals_one_example_at_a_time(models, family, side):
    from sav_explorer.lens import last_token_attention

    loaded = models[family]
    heads = [(site.layer, h) for site in loaded.sites for h in range(site.n_heads)]
    with padding(loaded, side):
        batch = encode(loaded, PADDED, Encoding())
        together = last_token_attention(loaded, batch, heads, "value")
        for row, example in enumerate(PADDED):
            alone = last_token_attention(loaded, encode(loaded, [example], Encoding()), heads, "value")
            real = batch.attention_mask[row].bool()
            for head in heads:
                assert float(together[head][row][~real].abs().sum()) < 1e-6  # no weight on padding
                torch.testing.assert_close(together[head][row][real], alone[head][0], atol=1e-5, rtol=1e-4)
