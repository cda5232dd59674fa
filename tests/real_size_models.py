"""Real-size checkpoints with random weights, built offline at published dimensions.

    build_real("smolvlm-256m", folder)       # saved with save_pretrained, loaded with load_model
    build_real("llava-onevision-0.5b", folder)
    build_real("qwen2-vl-2b", folder)

transformers' config classes default to 7B-class models, so every dimension is set. The figures
are those the checkpoints publish in their config.json, as issue 15 lists them (the Hub cannot be
reached here to read the files themselves): SmolVLM-256M-Instruct, llava-onevision-qwen2-0.5b-ov-hf
and Qwen2-VL-2B-Instruct. Processors are built locally with the published image settings; their
tokenizers are the tiny models' (byte-level, with the family's special tokens), which changes
neither the image-token count nor the model's size. Used by the memory-guard tests and
`benchmarks/bench_real_sizes.py`.
"""

from __future__ import annotations

import pathlib

from tiny_models import (
    _QWEN_IMAGE,
    _QWEN_VIDEO,
    _chatml,
    _qwen_tokenizer,
    _qwen_vl_ids,
    _save,
    _special_ids,
    onevision_tokenizer,
    smolvlm_processor,
)

REAL_SIZES = ("smolvlm-256m", "llava-onevision-0.5b", "qwen2-vl-2b")


def smolvlm_256m(folder: pathlib.Path) -> pathlib.Path:
    """Idefics3 architecture: Llama text 576 / 1536 / 30 layers / 9 heads / 3 kv / vocab 49,280; SigLIP
    768 / 3072 / 12 layers / 12 heads, patch 16, image 512; pixel shuffle 4 (64 tokens per 512-px view);
    processor: splitting on, longest edge 2048, 512-px splits."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    processor = smolvlm_processor(longest_edge=2048, split=512, image_seq_len=64)
    tok = processor.tokenizer
    text = dict(
        model_type="llama",
        vocab_size=49280,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        **_special_ids(tok),
    )
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512, patch_size=16)
    config = SmolVLMConfig(vision_config=vision, text_config=text, image_token_id=tok.image_token_id, scale_factor=4, **_special_ids(tok))
    return _save(SmolVLMForConditionalGeneration, config, processor, folder)


def llava_onevision_05b(folder: pathlib.Path) -> pathlib.Path:
    """Qwen2 text 896 / 4864 / 24 layers / 14 heads / 2 kv / vocab 151,936; SigLIP so400m 1152 / 4304 /
    26 layers / 16 heads, patch 14, image 384; anyres_max_9 with pinpoints in 384 steps up to 6 x 6."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tok = onevision_tokenizer()
    pinpoints = [[384 * rows, 384 * cols] for rows in range(1, 7) for cols in range(1, 7)]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": 384, "width": 384}, image_grid_pinpoints=pinpoints),
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": 384, "width": 384}),
        num_image_tokens=729,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=_chatml("<image>\n", video="<video>\n"),
    )
    config = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=26,
            num_attention_heads=16,
            image_size=384,
            patch_size=14,
            vision_use_head=False,
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
            **_special_ids(tok),
        ),
        image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=True,
    )
    return _save(LlavaOnevisionForConditionalGeneration, config, processor, folder)


def qwen2_vl_2b(folder: pathlib.Path) -> pathlib.Path:
    """Text 1536 / 8960 / 28 layers / 12 heads / 2 kv / vocab 151,936; vision depth 32, embed 1280,
    16 heads, patch 14, spatial merge 2, temporal patch 2; processor min 3,136 and max 12,845,056 pixels."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = _qwen_tokenizer()
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            size={"shortest_edge": 3136, "longest_edge": 12845056}, patch_size=14, merge_size=2, temporal_patch_size=2
        ),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2),
        chat_template=_chatml(_QWEN_IMAGE, video=_QWEN_VIDEO),
    )
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_parameters=dict(rope_type="default", mrope_section=[16, 24, 24], rope_theta=1000000.0),
            tie_word_embeddings=True,
            **_special_ids(tok),
        ),
        vision_config=dict(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16, patch_size=14, spatial_merge_size=2),
        tie_word_embeddings=True,
        **_qwen_vl_ids(tok),
    )
    return _save(Qwen2VLForConditionalGeneration, config, processor, folder)


_BUILDERS = {"smolvlm-256m": smolvlm_256m, "llava-onevision-0.5b": llava_onevision_05b, "qwen2-vl-2b": qwen2_vl_2b}


def build_real(name: str, folder: pathlib.Path) -> pathlib.Path:
    return _BUILDERS[name](pathlib.Path(folder))
