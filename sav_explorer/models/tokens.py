"""Image tokens: which id stands for an image feature in a family's input, and how many each row has."""

from __future__ import annotations

import torch

from ..errors import ModelLoadError
from .loading import LoadedModel


def image_token_id(loaded: LoadedModel) -> int | None:
    """The id of the token that stands for one image feature in `input_ids`, or None.

    The model's config is asked first: it names the token whose positions receive image features
    (Gemma 3's processor calls its begin-of-image token `image_token_id`).
    """
    config = loaded.model.config
    for name in ("image_token_id", "image_token_index"):
        token_id = getattr(config, name, None)
        if isinstance(token_id, int):
            return token_id
    processor = loaded.processor
    tokenizer = getattr(processor, "tokenizer", processor)
    for owner in (tokenizer, processor):
        token_id = getattr(owner, "image_token_id", None)
        if isinstance(token_id, int):
            return token_id
    return None


def count_image_tokens(loaded: LoadedModel, input_ids: torch.Tensor) -> list[int]:
    """Image tokens per example of a processed batch: (batch, seq) ids -> one count per row.

    Counts the positions that receive image features in the decoder's own sequence, a video's frames
    included (they cost the same). Mllama reads its images through cross-attention and keeps one
    `<|image|>` placeholder per image here.
    """
    token_id = image_token_id(loaded)
    if token_id is None:
        raise ModelLoadError(f"{type(loaded.model).__name__} names no image token; cannot count image tokens")
    video = _video_token_id(loaded)
    visual = (input_ids == token_id) | ((input_ids == video) if video is not None else False)
    return visual.sum(dim=-1).tolist()


def _video_token_id(loaded: LoadedModel) -> int | None:
    config = loaded.model.config
    for name in ("video_token_id", "video_token_index"):
        token_id = getattr(config, name, None)
        if isinstance(token_id, int):
            return token_id
    return None
