"""Builds the teaching model's parts from nothing: word-level tokenizer, processor, LLaVA config.

    processor = build_processor()
    model = LlavaForConditionalGeneration(build_config(processor.tokenizer))

All of it is ordinary transformers: once saved with `save_pretrained`, the folder loads with
`AutoProcessor.from_pretrained` and `AutoModelForImageTextToText.from_pretrained` like any hub model.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor, PreTrainedTokenizerFast

from .shapes import COLOURS, COUNT_WORDS, IMAGE_SIZE, QUESTIONS, SHAPES, SIZES

PATCH_SIZE = 8  # scene pixels a side per image token: an 8 x 8 grid of the 64-pixel scene
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")

# A LLaVA-1.5-like template in lower case (the tokenizer lower-cases its input anyway).
# Content may be a plain string or a list of {"type": "image"} / {"type": "text"} parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'user : ' }}{% else %}{{ 'assistant : ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image> ' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ ' ' }}{% else %}{{ ' </s> ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant :' }}{% endif %}"
)


def vocabulary() -> list[str]:
    """Every word the shapes world can say, plus the template's words, in a fixed order."""
    words: list[str] = ["user", "assistant", ":", "?", ".", ","]
    for text in QUESTIONS.values():
        words += text.replace("{", " ").replace("}", " ").split()
    words += list(COLOURS) + list(SHAPES) + list(SIZES) + list(COUNT_WORDS)
    words += ["yes", "no", "left", "right", "colour_a", "colour_b"]
    unique = []
    for word in words:
        if word not in unique and word not in ("colour", "shape_", "colour_a", "colour_b"):
            unique.append(word)
    return list(SPECIAL_TOKENS) + unique


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()  # splits punctuation off words
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",  # batched generation and last-token reads need left padding
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def build_processor(sharpness: int = 1) -> LlavaProcessor:
    """The processor of a tower that reads `sharpness` × the scene's pixels a side, each image
    token a patch of `sharpness` × `PATCH_SIZE` pixels, so that the tokens stay the same
    (`sharpen`); 1 for a model built here."""
    # The whole image, squeezed to a square: a centre crop cut the ends off wide drawings.
    image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE * sharpness, "width": IMAGE_SIZE * sharpness},
        do_center_crop=False,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=PATCH_SIZE * sharpness,
        vision_feature_select_strategy="default",  # drop the CLS token: 64 image tokens
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def sharpness_of(config: LlavaConfig) -> int:
    """How many pixels a side the model's tower reads per scene pixel (`build_processor`)."""
    return config.vision_config.image_size // IMAGE_SIZE


def build_config(tokenizer: PreTrainedTokenizerFast, text_layers: int = 8, text_heads: int = 8, width: int = 128) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=128,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=text_heads,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
