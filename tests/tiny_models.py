"""Tiny random-weight vision-language models for tests (offline).

`build_tiny(family, folder)` builds a tiny random-weight instance of a real
transformers image-text-to-text architecture together with a processor built
locally (byte-level BPE tokenizer without merges, the family's own image
processor with small sizes, a chat template in the family's style), and saves
both with `save_pretrained`, so that

    AutoModelForImageTextToText.from_pretrained(folder)
    AutoProcessor.from_pretrained(folder)

load them back through the same code path a hub checkpoint takes.

Run `python tests/tiny_models.py` for a smoke check of every family.

Using the saved folders (all families: tokenizer padding_side="left"; call the model
with the processor's full output, e.g. Qwen needs `mm_token_type_ids`, Mllama
`cross_attention_mask`/`aspect_ratio_*`, Gemma 4 `image_position_ids`):

* prompts: `processor.apply_chat_template(messages, add_generation_prompt=True)` where a
  user message's content is a list of {"type": "image"} / {"type": "text", "text": ...};
  then `processor(text=prompt(s), images=..., return_tensors="pt", padding=True)`.
* paligemma has no chat template (`processor.chat_template is None`): the prompt is
  "<image>" * n_images + task text, e.g. "<image>caption en"; the processor inserts <bos>
  after the image tokens and appends "\n". Its output always contains `labels`.
* batches: gemma3, gemma4, mllama, smolvlm (and idefics3, which also accepts a flat
  list) want a nested image list, `images=[[img], [img]]`; the others take `[img, img]`.
* decoder attention output projections: `model.language_model.layers.{i}.self_attn.o_proj`,
  except idefics3/smolvlm `model.text_model.layers.{i}.self_attn.o_proj`; mllama layer 1
  (`text_config.cross_attention_layers == [1]`) has `cross_attn.o_proj` instead; qwen3_5
  layers 0-2 are linear attention (`linear_attn.out_proj`, no `self_attn`), only layer 3
  has `self_attn.o_proj`.
* head_dim: gemma3 uses head_dim 16 with hidden 48 and 4 heads (heads*head_dim != hidden);
  gemma4 uses head_dim 16 on sliding layers and 32 on the full-attention layer, and
  `text_config.head_dim` raises there; several text configs (qwen2-based, qwen2/2.5-VL,
  mllama) have no `head_dim` attribute at all (it is hidden_size // num_attention_heads).
* gemma3's `processor.image_token` / `image_token_id` are the begin-of-image token; the
  soft token placed in input_ids is `config.image_token_id` (= `tokenizer.image_token_id`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

# --------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------

# A standard Llama-ish text decoder: 2 layers, hidden 32, 4 query heads, 2 KV heads (GQA).
_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,  # room for a video row; `encode` refuses what exceeds it
)


def _byte_bpe_tokenizer(
    specials: list[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    unk: str | None = None,
    named: dict[str, str] | None = None,
    **kwargs,
) -> PreTrainedTokenizerFast:
    """Byte-level BPE without merges: base specials + 256 byte symbols + `specials`.

    `named` maps processor-visible attribute names (``image_token`` ...) to tokens; they
    become ``tokenizer.image_token`` / ``tokenizer.image_token_id`` etc.
    """
    base = [t for t in (pad, bos, eos, unk) if t is not None]
    base = list(dict.fromkeys(base))
    vocab: dict[str, int] = {t: i for i, t in enumerate(base)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    extra = [t for t in dict.fromkeys(list(specials) + list((named or {}).values())) if t not in vocab]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in base + extra])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        extra_special_tokens=dict(named or {}),
        padding_side="left",
        **kwargs,
    )


def _q(s: str) -> str:
    """A Jinja string literal for `s` (newlines written as '\\n', no raw newlines)."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _chat_template(*, bos: str, headers: dict[str, str], eot: str | dict[str, str], image: str, gen: str, video: str = "") -> str:
    """A chat template: `bos`, then per message `headers[role]` + content + `eot` (or `eot[role]`).

    Content may be a string or a list of {"type": "image"} / {"type": "text", "text": ...}
    parts; image parts render as `image` (the family's placeholder), video parts as `video`. With
    add_generation_prompt, `gen` (the assistant header) is appended.
    """
    if isinstance(eot, str):
        eot = dict.fromkeys(headers, eot)
    hdrs = "{" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in headers.items()) + "}"
    eots = "{" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in eot.items()) + "}"
    return (
        "{%- set headers = " + hdrs + " -%}"
        "{%- set eot = " + eots + " -%}"
        "{{- " + _q(bos) + " -}}"
        "{%- for message in messages -%}"
        "{{- headers[message['role']] -}}"
        "{%- if message['content'] is string -%}"
        "{{- message['content'] -}}"
        "{%- else -%}"
        "{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' -%}"
        "{{- " + _q(image) + " -}}"
        "{%- elif part['type'] == 'video' -%}"
        "{{- " + _q(video) + " -}}"
        "{%- elif part['type'] == 'text' -%}"
        "{{- part['text'] -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- endif -%}"
        "{{- eot[message['role']] -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{- " + _q(gen) + " -}}"
        "{%- endif -%}"
    )


def _chatml(image: str, bos: str = "", video: str = "") -> str:
    return _chat_template(
        bos=bos,
        headers={
            "system": "<|im_start|>system\n",
            "user": "<|im_start|>user\n",
            "assistant": "<|im_start|>assistant\n",
        },
        eot="<|im_end|>\n",
        image=image,
        video=video,
        gen="<|im_start|>assistant\n",
    )


def _vocab_size(tokenizer) -> int:
    n = len(tokenizer)
    return (n + 15) // 16 * 16


def _ids(tokenizer, **names: str) -> dict[str, int]:
    out = {}
    for key, tok in names.items():
        i = tokenizer.convert_tokens_to_ids(tok)
        assert isinstance(i, int) and i != tokenizer.unk_token_id, (key, tok)
        out[key] = i
    return out


def _special_ids(tokenizer) -> dict[str, int | None]:
    return dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _save(model_cls, config, processor, folder: pathlib.Path) -> pathlib.Path:
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # deterministic weights, caller's RNG state untouched
        torch.manual_seed(0)
        model = model_cls(config).eval()
    gc = model.generation_config
    tok = processor.tokenizer
    gc.pad_token_id, gc.eos_token_id = tok.pad_token_id, tok.eos_token_id
    if tok.bos_token_id is not None:
        gc.bos_token_id = tok.bos_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _clip_vision(image_size: int, patch_size: int) -> dict:
    return dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )


def _siglip_vision(image_size: int, patch_size: int, **kw) -> dict:
    return dict(
        model_type="siglip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        **kw,
    )


# --------------------------------------------------------------------------------------
# LLaVA family
# --------------------------------------------------------------------------------------


def _llava(folder: pathlib.Path) -> pathlib.Path:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    img, patch = 16, 4  # 4x4 = 16 patches (+CLS, dropped by the "default" strategy)
    tok = _byte_bpe_tokenizer(["<image>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", named={"image_token": "<image>"})
    template = _chat_template(
        bos="<s>",
        headers={"system": "", "user": "USER: ", "assistant": "ASSISTANT: "},
        eot="\n",
        image="<image>\n",
        gen="ASSISTANT:",
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": img}, crop_size={"height": img, "width": img}),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    config = LlavaConfig(
        vision_config=_clip_vision(img, patch),
        text_config=dict(model_type="llama", vocab_size=_vocab_size(tok), **_TEXT, **_special_ids(tok)),
        image_token_index=tok.image_token_id,
        image_seq_length=(img // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return _save(LlavaForConditionalGeneration, config, processor, folder)


def _llava_next(folder: pathlib.Path) -> pathlib.Path:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    img, patch = 16, 8
    pinpoints = [[16, 32], [32, 16], [32, 32]]
    tok = _byte_bpe_tokenizer(
        ["<image>", "[INST]", "[/INST]"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        named={"image_token": "<image>"},
    )
    template = _chat_template(  # Mistral-style llava-v1.6
        bos="<s>",
        headers={"system": "", "user": "[INST] ", "assistant": ""},
        eot={"system": "\n\n", "user": " [/INST]", "assistant": "</s>"},
        image="<image>\n",
        gen="",
    )
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": img},
            crop_size={"height": img, "width": img},
            image_grid_pinpoints=pinpoints,
        ),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    config = LlavaNextConfig(
        vision_config=_clip_vision(img, patch),
        text_config=dict(model_type="mistral", vocab_size=_vocab_size(tok), **_TEXT, **_special_ids(tok)),
        image_token_index=tok.image_token_id,
        image_grid_pinpoints=pinpoints,
        image_seq_length=(img // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return _save(LlavaNextForConditionalGeneration, config, processor, folder)


def onevision_tokenizer() -> PreTrainedTokenizerFast:
    """LLaVA-OneVision's special tokens (Qwen2 chat format, <image> and <video>) on a byte-level tokenizer."""
    return _byte_bpe_tokenizer(
        ["<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        named={"image_token": "<image>", "video_token": "<video>"},
    )


def _llava_onevision(folder: pathlib.Path) -> pathlib.Path:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    img, patch = 16, 8
    pinpoints = [[16, 16], [16, 32], [32, 16], [32, 32]]
    tok = onevision_tokenizer()
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": img, "width": img}, image_grid_pinpoints=pinpoints),
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": img, "width": img}),
        num_image_tokens=(img // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=_chatml("<image>\n", video="<video>\n"),
    )
    config = LlavaOnevisionConfig(
        vision_config=_siglip_vision(img, patch, vision_use_head=False),
        text_config=dict(model_type="qwen2", vocab_size=_vocab_size(tok), **_TEXT, **_special_ids(tok)),
        image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return _save(LlavaOnevisionForConditionalGeneration, config, processor, folder)


# --------------------------------------------------------------------------------------
# Qwen VL family
# --------------------------------------------------------------------------------------

_QWEN_SPECIALS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
_QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def _qwen_tokenizer() -> PreTrainedTokenizerFast:
    return _byte_bpe_tokenizer(
        _QWEN_SPECIALS,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        named={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )


def _qwen_vl_ids(tok) -> dict[str, int]:
    return _ids(
        tok,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )


def _qwen_image_processor(patch: int, merge: int = 2, img: int = 32):
    from transformers import Qwen2VLImageProcessor

    # images are resized to a multiple of patch*merge with area in [min, max] pixels
    return Qwen2VLImageProcessor(
        size={"shortest_edge": (patch * merge) ** 2, "longest_edge": img * img},
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=2,
    )


def _qwen2_vl(folder: pathlib.Path) -> pathlib.Path:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    patch = 4
    tok = _qwen_tokenizer()
    processor = Qwen2VLProcessor(
        image_processor=_qwen_image_processor(patch),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(size={"shortest_edge": 64, "longest_edge": 32 * 32 * 2}, patch_size=patch, merge_size=2),
        chat_template=_chatml(_QWEN_IMAGE, video=_QWEN_VIDEO),
    )
    # head_dim = 32 / 4 = 8 -> mrope_section sums to head_dim / 2 = 4
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=_vocab_size(tok),
            **_TEXT,
            rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], rope_theta=10000.0),
            **_special_ids(tok),
        ),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, mlp_ratio=2, num_heads=4, patch_size=patch, spatial_merge_size=2),
        **_qwen_vl_ids(tok),
    )
    return _save(Qwen2VLForConditionalGeneration, config, processor, folder)


def _qwen2_5_vl(folder: pathlib.Path) -> pathlib.Path:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )

    patch = 4
    tok = _qwen_tokenizer()
    processor = Qwen2_5_VLProcessor(
        image_processor=_qwen_image_processor(patch),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(size={"shortest_edge": 64, "longest_edge": 32 * 32 * 2}, patch_size=patch, merge_size=2),
        chat_template=_chatml(_QWEN_IMAGE, video=_QWEN_VIDEO),
    )
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=_vocab_size(tok),
            **_TEXT,
            rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], rope_theta=10000.0),
            **_special_ids(tok),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            patch_size=patch,
            spatial_merge_size=2,
            out_hidden_size=32,
            window_size=16,  # in pixels: 16 / patch 4 / merge 2 = 2x2 merged tokens per window
            fullatt_block_indexes=[1],
        ),
        **_qwen_vl_ids(tok),
    )
    return _save(Qwen2_5_VLForConditionalGeneration, config, processor, folder)


def _qwen3_vl(folder: pathlib.Path) -> pathlib.Path:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    patch = 4
    tok = _qwen_tokenizer()
    processor = Qwen3VLProcessor(
        image_processor=_qwen_image_processor(patch),
        tokenizer=tok,
        video_processor=Qwen3VLVideoProcessor(size={"shortest_edge": 64, "longest_edge": 32 * 32 * 2}, patch_size=patch, merge_size=2),
        chat_template=_chatml(_QWEN_IMAGE, video=_QWEN_VIDEO),
    )
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=_vocab_size(tok),
            **_TEXT,
            head_dim=8,
            rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], mrope_interleaved=True, rope_theta=10000.0),
            **_special_ids(tok),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            patch_size=patch,
            spatial_merge_size=2,
            out_hidden_size=32,
            num_position_embeddings=64,  # 8x8 grid of learned position embeddings
            deepstack_visual_indexes=[0],
        ),
        **_qwen_vl_ids(tok),
    )
    return _save(Qwen3VLForConditionalGeneration, config, processor, folder)


def _qwen3_5(folder: pathlib.Path) -> pathlib.Path:
    """Qwen3.5: hybrid decoder, 3 gated-delta-net linear-attention layers + 1 full-attention layer."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    patch = 4
    tok = _qwen_tokenizer()
    processor = Qwen3VLProcessor(
        image_processor=_qwen_image_processor(patch),
        tokenizer=tok,
        video_processor=Qwen3VLVideoProcessor(size={"shortest_edge": 64, "longest_edge": 32 * 32 * 2}, patch_size=patch, merge_size=2),
        chat_template=_chatml(_QWEN_IMAGE, video=_QWEN_VIDEO),
    )
    config = Qwen3_5Config(
        text_config=dict(
            vocab_size=_vocab_size(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=4096,  # room for a video row; `encode` refuses what exceeds it
            layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
            linear_conv_kernel_dim=4,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            # rotary dim = 16 * 0.5 = 8 -> mrope_section sums to 4
            rope_parameters=dict(
                rope_type="default",
                mrope_section=[2, 1, 1],
                mrope_interleaved=True,
                rope_theta=10000.0,
                partial_rotary_factor=0.5,
            ),
            **_special_ids(tok),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            patch_size=patch,
            spatial_merge_size=2,
            out_hidden_size=32,
            num_position_embeddings=64,
        ),
        **_qwen_vl_ids(tok),
    )
    return _save(Qwen3_5ForConditionalGeneration, config, processor, folder)


# --------------------------------------------------------------------------------------
# Idefics3 / SmolVLM
# --------------------------------------------------------------------------------------

_ROW_COL = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]


def _idefics_vision(img: int, patch: int) -> dict:
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=img,
        patch_size=patch,
    )


def _idefics3(folder: pathlib.Path) -> pathlib.Path:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    # 16 px tiles, patch 4 -> 16 patches, pixel shuffle (scale 2) -> 4 tokens per tile;
    # images up to 32 px are split into <= 2x2 tiles + a global view.
    img, patch, scale = 16, 4, 2
    seq = (img // patch) ** 2 // scale**2
    tok = _byte_bpe_tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *_ROW_COL],
        bos="<|begin_of_text|>",
        eos="<end_of_utterance>",
        pad="<|finetune_right_pad_id|>",
        named={"image_token": "<image>"},
    )
    template = _chat_template(
        bos="<|begin_of_text|>",
        headers={"system": "System: ", "user": "User:", "assistant": "Assistant: "},
        eot="<end_of_utterance>\n",
        image="<image>",
        gen="Assistant:",
    )
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": 2 * img}, max_image_size={"longest_edge": img}, do_image_splitting=True
        ),
        tokenizer=tok,
        image_seq_len=seq,
        chat_template=template,
    )
    tok = processor.tokenizer
    config = Idefics3Config(
        vision_config=_idefics_vision(img, patch),
        text_config=dict(model_type="llama", vocab_size=_vocab_size(tok), **_TEXT, **_special_ids(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        **_special_ids(tok),
    )
    return _save(Idefics3ForConditionalGeneration, config, processor, folder)


def smolvlm_processor(longest_edge: int, split: int, image_seq_len: int):
    """SmolVLM's processor built locally: images scaled to `longest_edge`, cut into `split`-pixel views of
    `image_seq_len` tokens each (the published SmolVLM-256M: 2048, 512, 64)."""
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    tok = _byte_bpe_tokenizer(
        ["<|im_start|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *_ROW_COL],
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|im_end|>",
        named={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    template = _chat_template(
        bos="<|im_start|>",
        headers={"system": "System: ", "user": "User:", "assistant": "Assistant: "},
        eot="<end_of_utterance>\n",
        image="<image>",
        video="<video>",
        gen="Assistant:",
    )
    return SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            size={"longest_edge": longest_edge}, max_image_size={"longest_edge": split}, do_image_splitting=True
        ),
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(size={"longest_edge": split}, max_image_size={"longest_edge": split}),
        image_seq_len=image_seq_len,
        chat_template=template,
    )


def _smolvlm(folder: pathlib.Path) -> pathlib.Path:
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    img, patch, scale = 16, 4, 2
    processor = smolvlm_processor(2 * img, img, (img // patch) ** 2 // scale**2)
    tok = processor.tokenizer
    config = SmolVLMConfig(
        vision_config=_idefics_vision(img, patch),
        text_config=dict(model_type="llama", vocab_size=_vocab_size(tok), **_TEXT, **_special_ids(tok)),
        image_token_id=tok.image_token_id,
        scale_factor=scale,
        **_special_ids(tok),
    )
    return _save(SmolVLMForConditionalGeneration, config, processor, folder)


# --------------------------------------------------------------------------------------
# Gemma family
# --------------------------------------------------------------------------------------


def _gemma_template(image: str) -> str:
    return _chat_template(
        bos="<bos>",
        headers={
            "system": "<start_of_turn>user\n",  # Gemma folds the system prompt into the user turn
            "user": "<start_of_turn>user\n",
            "assistant": "<start_of_turn>model\n",
        },
        eot="<end_of_turn>\n",
        image=image,
        gen="<start_of_turn>model\n",
    )


def _gemma3(folder: pathlib.Path) -> pathlib.Path:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    # 32 px, patch 4 -> 8x8 patches, avg-pooled to 2x2 = 4 soft tokens per image
    img, patch, mm_tokens = 32, 4, 4
    tok = _byte_bpe_tokenizer(
        ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        named={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": img, "width": img}),
        tokenizer=tok,
        image_seq_length=mm_tokens,
        chat_template=_gemma_template("<start_of_image>"),
    )
    config = Gemma3Config(
        text_config=dict(
            vocab_size=_vocab_size(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,  # 4 * 16 = 64 != hidden 48, as in real Gemma 3 checkpoints
            query_pre_attn_scalar=16,
            sliding_window=32,
            layer_types=["sliding_attention", "full_attention"],
            max_position_embeddings=4096,  # room for a video row; `encode` refuses what exceeds it
            **_special_ids(tok),
        ),
        vision_config=_siglip_vision(img, patch, vision_use_head=False),
        mm_tokens_per_image=mm_tokens,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    return _save(Gemma3ForConditionalGeneration, config, processor, folder)


def _gemma4(folder: pathlib.Path) -> pathlib.Path:
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4Config,
        Gemma4ForConditionalGeneration,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4VideoProcessor,
    )

    # patch 4, pooling 3x3; 70 soft tokens per image is the smallest budget the image processor allows
    patch, pool, soft = 4, 3, 70
    tok = _byte_bpe_tokenizer(
        [
            "<|turn>",
            "<turn|>",
            "<|image>",
            "<|image|>",
            "<image|>",
            "<|audio>",
            "<|audio|>",
            "<audio|>",
            "<|video|>",
        ],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        named={
            "boi_token": "<|image>",
            "image_token": "<|image|>",
            "eoi_token": "<image|>",
            "boa_token": "<|audio>",
            "audio_token": "<|audio|>",
            "eoa_token": "<audio|>",
        },
    )
    template = _chat_template(
        bos="<bos>",
        headers={"system": "<|turn>system\n", "user": "<|turn>user\n", "assistant": "<|turn>model\n"},
        eot="<turn|>\n",
        image="<|image|>",
        video="<|video|>",
        gen="<|turn>model\n",
    )
    processor = Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=Gemma4ImageProcessor(patch_size=patch, pooling_kernel_size=pool, max_soft_tokens=soft),
        tokenizer=tok,
        video_processor=Gemma4VideoProcessor(patch_size=patch, pooling_kernel_size=pool, max_soft_tokens=soft),
        image_seq_length=soft,
        chat_template=template,
    )
    tok = processor.tokenizer
    config = Gemma4Config(
        text_config=dict(
            vocab_size=_vocab_size(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            global_head_dim=32,  # full-attention layers use a larger head_dim, as in real Gemma 4
            sliding_window=32,
            layer_types=["sliding_attention", "full_attention"],
            max_position_embeddings=4096,  # room for a video row; `encode` refuses what exceeds it
            vocab_size_per_layer_input=_vocab_size(tok),
            hidden_size_per_layer_input=8,
            **_special_ids(tok),
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=8,
            patch_size=patch,
            pooling_kernel_size=pool,
            position_embedding_size=256,
        ),
        audio_config=None,
        **_ids(
            tok,
            boi_token_id="<|image>",
            eoi_token_id="<image|>",
            image_token_id="<|image|>",
            video_token_id="<|video|>",
            boa_token_id="<|audio>",
            eoa_token_index="<audio|>",
            audio_token_id="<|audio|>",
        ),
    )
    return _save(Gemma4ForConditionalGeneration, config, processor, folder)


def _paligemma(folder: pathlib.Path) -> pathlib.Path:
    """PaliGemma: no chat template; prompts are "<image>" * n_images + task text (e.g. "caption en")."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessor

    img, patch = 16, 4  # 16 image tokens
    tok = _byte_bpe_tokenizer(["<image>"], bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", named={"image_token": "<image>"})
    image_processor = SiglipImageProcessor(size={"height": img, "width": img})
    image_processor.image_seq_length = (img // patch) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds <locXXXX>/<segXXX>
    tok = processor.tokenizer
    vocab = _vocab_size(tok)
    config = PaliGemmaConfig(
        vision_config=_siglip_vision(img, patch, vision_use_head=False),
        text_config=dict(
            model_type="gemma",
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=4096,  # room for a video row; `encode` refuses what exceeds it
            **_special_ids(tok),
        ),
        image_token_index=tok.image_token_id,
        vocab_size=vocab,
        projection_dim=32,
        hidden_size=32,
    )
    return _save(PaliGemmaForConditionalGeneration, config, processor, folder)


# --------------------------------------------------------------------------------------
# InternVL, Mllama, Mistral 3
# --------------------------------------------------------------------------------------


def _internvl(folder: pathlib.Path) -> pathlib.Path:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    # 16 px tiles, patch 4 -> 16 patches, pixel shuffle 0.5 -> 4 tokens per tile; up to 4 tiles + thumbnail
    img, patch = 16, 4
    seq = (img // patch) ** 2 // 4
    tok = _byte_bpe_tokenizer(
        ["<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        named={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size={"height": img, "width": img}, crop_to_patches=True, min_patches=1, max_patches=4),
        tokenizer=tok,
        video_processor=InternVLVideoProcessor(size={"height": img, "width": img}),
        image_seq_length=seq,
        chat_template=_chatml("<IMG_CONTEXT>\n", video="<video>\n"),
    )
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=[img, img],
            patch_size=[patch, patch],
        ),
        text_config=dict(model_type="qwen2", vocab_size=_vocab_size(tok), **_TEXT, **_special_ids(tok)),
        image_token_id=tok.context_image_token_id,
        image_seq_length=seq,
        downsample_ratio=0.5,
    )
    return _save(InternVLForConditionalGeneration, config, processor, folder)


def _mllama(folder: pathlib.Path) -> pathlib.Path:
    """Mllama: 3 decoder layers, layer 1 is a cross-attention layer (cross_attn.o_proj, no self_attn)."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor, MllamaProcessor

    img, patch = 16, 4  # per tile; up to 4 tiles
    tok = _byte_bpe_tokenizer(
        [
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "<|image|>",
            "<|python_tag|>",
        ],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        named={"image_token": "<|image|>"},
    )
    template = _chat_template(
        bos="<|begin_of_text|>",
        headers={role: f"<|start_header_id|>{role}<|end_header_id|>\n\n" for role in ("system", "user", "assistant")},
        eot="<|eot_id|>",
        image="<|image|>",
        gen="<|start_header_id|>assistant<|end_header_id|>\n\n",
    )
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessor(size={"height": img, "width": img}, max_image_tiles=4),
        tokenizer=tok,
        chat_template=template,
    )
    config = MllamaConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_global_layers=1,
            attention_heads=4,
            image_size=img,
            patch_size=patch,
            max_num_tiles=4,
            intermediate_layers_indices=[0, 1],
            vision_output_dim=32 * 3,  # hidden * (1 + len(intermediate_layers_indices))
        ),
        text_config=dict(
            vocab_size=_vocab_size(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            cross_attention_layers=[1],
            max_position_embeddings=4096,  # room for a video row; `encode` refuses what exceeds it
            **_special_ids(tok),
        ),
        image_token_index=tok.image_token_id,
    )
    return _save(MllamaForConditionalGeneration, config, processor, folder)


def _mistral3(folder: pathlib.Path) -> pathlib.Path:
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor

    # longest edge 32 px, patch 4 -> <= 8x8 patches, spatial merge 2 -> <= 4x4 image tokens (+ row breaks)
    img, patch, merge = 32, 4, 2
    tok = _byte_bpe_tokenizer(
        ["[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        named={"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"},
    )
    template = _chat_template(
        bos="<s>",
        headers={"system": "[SYSTEM_PROMPT]", "user": "[INST]", "assistant": ""},
        eot={"system": "[/SYSTEM_PROMPT]", "user": "[/INST]", "assistant": "</s>"},
        image="[IMG]",
        gen="",
    )
    processor = PixtralProcessor(
        image_processor=PixtralImageProcessor(size={"longest_edge": img}, patch_size=patch),
        tokenizer=tok,
        patch_size=patch,
        spatial_merge_size=merge,
        chat_template=template,
    )
    config = Mistral3Config(
        vision_config=dict(
            model_type="pixtral",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=img,
            patch_size=patch,
        ),
        text_config=dict(model_type="mistral", vocab_size=_vocab_size(tok), **_TEXT, **_special_ids(tok)),
        image_token_index=tok.image_token_id,
        spatial_merge_size=merge,
        vision_feature_layer=-1,
    )
    return _save(Mistral3ForConditionalGeneration, config, processor, folder)


# --------------------------------------------------------------------------------------
# registry + smoke check
# --------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[pathlib.Path], pathlib.Path]] = {
    "llava": _llava,
    "llava_next": _llava_next,
    "llava_onevision": _llava_onevision,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_5_vl,
    "qwen3_vl": _qwen3_vl,
    "qwen3_5": _qwen3_5,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "gemma3": _gemma3,
    "gemma4": _gemma4,
    "paligemma": _paligemma,
    "internvl": _internvl,
    "mllama": _mllama,
    "mistral3": _mistral3,
}

FAMILIES: tuple[str, ...] = tuple(_BUILDERS)


def build_tiny(family: str, folder: pathlib.Path) -> pathlib.Path:
    """Builds the tiny model + processor of `family`, saves both into `folder`, returns folder."""
    try:
        builder = _BUILDERS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}") from None
    return builder(pathlib.Path(folder))


# Families whose processors want a nested image list for a batch: images=[[img], [img]].
_NESTED_IMAGES = ("gemma3", "gemma4", "mllama", "smolvlm", "idefics3")


def _smoke() -> None:
    import tempfile
    import time

    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (24, 48), (20, 130, 30))]
    texts = ["What is in this picture?", "Describe it in detail, please."]
    failed = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            t0 = time.perf_counter()
            try:
                folder = build_tiny(family, pathlib.Path(tmp) / family)
                processor = AutoProcessor.from_pretrained(folder)
                model = AutoModelForImageTextToText.from_pretrained(folder).eval()
                if family == "paligemma":
                    assert processor.chat_template is None
                    prompts = ["<image>caption en", "<image>answer en " + texts[1]]
                else:
                    prompts = [
                        processor.apply_chat_template(
                            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
                            add_generation_prompt=True,
                        )
                        for t in texts
                    ]
                batch_images = [[im] for im in images] if family in _NESTED_IMAGES else images
                with torch.no_grad():
                    single = processor(text=prompts[0], images=images[0], return_tensors="pt")
                    logits = model(**single).logits
                    batch = processor(text=prompts, images=batch_images, return_tensors="pt", padding=True)
                    batch_logits = model(**batch).logits
                assert logits.shape[-1] == batch_logits.shape[-1] == model.config.get_text_config().vocab_size
                assert batch["input_ids"].shape[0] == 2
                # left padding: the last position of the padded row matches the unbatched run
                torch.testing.assert_close(batch_logits[0, -1], logits[0, -1], atol=1e-4, rtol=1e-4)
                n_layers = model.config.get_text_config().num_hidden_layers
                print(
                    f"{family:16s} {type(model).__name__:40s} layers={n_layers} {time.perf_counter() - t0:5.2f}s",
                    flush=True,
                )
            except Exception as e:  # report all families, fail at the end
                failed.append(family)
                print(f"{family:16s} FAILED {type(e).__name__}: {e}", flush=True)
    print(f"total {time.perf_counter() - t_all:.2f}s for {len(FAMILIES)} families")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    _smoke()
