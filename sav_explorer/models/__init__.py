"""Model access: load any Hugging Face image-text-to-text model and find its attention heads.

    loaded = load_model("HuggingFaceTB/SmolVLM-256M-Instruct")        # or a local folder
    loaded.sites[0]   # AttentionSite(layer=0, name='model.text_model.layers.0.self_attn.o_proj', ...)

Everything that differs between model families lives in this package, one file per concern:
`loading` (hub or folder, dtype, device, revision), `sites` (where the decoder's heads are),
`prompts` (chat templates and the processor call, used by `encoding.encode` only), `tokens`
(image-token ids and counts), `budget` (an image-token budget in each family's processor
settings), `layouts` (where each image token lies on its image) and `memory` (the activation
estimate that guards a forward pass).
"""

from .loading import (
    ASSETS,
    BUNDLED_ID,
    BUNDLED_MODEL,
    DTYPES,
    EXAMPLES_DIR,
    LoadedModel,
    checkpoint_revision,
    default_model_id,
    load_model,
    model_location,
    pick_device,
    quiet_transformers,
)
from .prompts import IMAGE_PLACEHOLDER, build_prompt, unseen_words
from .sites import AttentionSite, decoder_layers, find_attention_sites
from .tokens import count_image_tokens, image_token_id

__all__ = [
    "ASSETS",
    "BUNDLED_ID",
    "BUNDLED_MODEL",
    "DTYPES",
    "EXAMPLES_DIR",
    "IMAGE_PLACEHOLDER",
    "AttentionSite",
    "LoadedModel",
    "build_prompt",
    "checkpoint_revision",
    "count_image_tokens",
    "decoder_layers",
    "default_model_id",
    "find_attention_sites",
    "image_token_id",
    "load_model",
    "model_location",
    "pick_device",
    "quiet_transformers",
    "unseen_words",
]
