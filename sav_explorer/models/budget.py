"""An image-token budget per image, in each family's own terms.

    settings = budget_settings(loaded, 256)     # BudgetSettings(kwargs, ceiling, note)
    inputs = prepare_inputs(loaded, images, prompts, image_budget=settings)

Families turn an image into tokens in their own ways, and a resize before the processor is no
budget: SmolVLM's processor scales every image up to a 2048-pixel edge, then cuts it into 13
views of 64 tokens, whatever it was given. So the budget is translated into the processor
settings that bound each family's count, chosen as close to the budget as the family allows and
never above it (`ceiling`, the most tokens an image can get under the settings). A family whose
count is fixed honours any budget at or above that count and says so; one whose count the
processor cannot bound (LLaVA-NeXT and OneVision: the grid pinpoints live in the model too) and a
budget below a family's minimum get a clear message instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import DataError

GEMMA4_SOFT_TOKENS = (70, 140, 280, 560, 1120)  # the values Gemma 4's processor accepts


class BudgetError(DataError):
    """The family cannot keep an image within this budget (below its minimum, or not adjustable)."""


@dataclass(frozen=True)
class BudgetSettings:
    budget: int
    kwargs: dict = field(default_factory=dict)  # passed with every processor call
    ceiling: int | None = None  # the most image tokens one image can get under these settings
    note: str = ""  # how the family honours the budget, for the page and the CLI


def budget_settings(loaded, budget: int | None) -> BudgetSettings | None:
    """The processor settings that keep each image within `budget` image tokens (see the module's doc);
    None without a budget (the processor's own settings)."""
    if budget is None:
        return None
    if not isinstance(budget, int) or budget < 1:
        raise BudgetError(f"an image-token budget is a whole number of at least 1; got {budget!r}")
    family = loaded.model.config.model_type
    processor = loaded.processor
    image_processor = getattr(processor, "image_processor", None)
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"):
        return _qwen(budget, image_processor)
    if family in ("idefics3", "smolvlm"):
        return _views(budget, processor.image_seq_len, image_processor.max_image_size["longest_edge"], family)
    if family == "internvl":
        return _tiles(budget, processor.image_seq_length)
    if family == "mistral3":
        factor = processor.patch_size * getattr(processor, "spatial_merge_size", 1)
        side = math.isqrt(budget)
        return BudgetSettings(budget, {"size": {"longest_edge": side * factor}}, side * side, f"longest edge {side * factor} px")
    if family == "gemma4":
        allowed = [n for n in GEMMA4_SOFT_TOKENS if n <= budget]
        if not allowed:
            raise BudgetError(f"Gemma 4 uses at least {GEMMA4_SOFT_TOKENS[0]} soft tokens per image; a budget of {budget} is below that")
        return BudgetSettings(budget, {"max_soft_tokens": allowed[-1]}, allowed[-1], f"{allowed[-1]} soft tokens")
    if family in ("gemma3", "paligemma", "llava"):
        fixed = _fixed_count(loaded)
        if budget < fixed:
            raise BudgetError(f"{family} always turns an image into {fixed} tokens; a budget of {budget} is below that")
        return BudgetSettings(budget, {}, fixed, f"not applicable: {family} always uses {fixed} tokens per image")
    if family in ("llava_next", "llava_onevision"):
        raise BudgetError(
            f"{family}'s image tokens are set by its grid pinpoints, which the model shares with its processor: "
            "a budget cannot be applied here; run without one (the processor's own settings)"
        )
    if family == "mllama":
        return BudgetSettings(budget, {}, 1, "not applicable: Mllama reads images through cross-attention, one placeholder each")
    raise BudgetError(f"no image-token budget is known for the {family} family; run without one")


def _qwen(budget: int, image_processor) -> BudgetSettings:
    """Qwen-VL: one token per merged patch of factor x factor pixels, the image resized within [min, max] pixels."""
    factor = image_processor.patch_size * image_processor.merge_size
    size = image_processor.size
    min_pixels = size["shortest_edge"] if "shortest_edge" in size else image_processor.min_pixels
    max_pixels = budget * factor * factor
    minimum = math.ceil(min_pixels / (factor * factor))
    if max_pixels < min_pixels:
        raise BudgetError(f"this Qwen model uses at least {minimum} tokens per image; a budget of {budget} is below that")
    return BudgetSettings(
        budget, {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}, budget, f"at most {max_pixels:,} pixels"
    )


def _views(budget: int, per_view: int, split: int, family: str) -> BudgetSettings:
    """Idefics3 / SmolVLM: `per_view` tokens per view; splitting gives rows x cols views plus a global one."""
    views = budget // per_view
    if views < 1:
        raise BudgetError(f"{family} uses {per_view} tokens per image at least (one view); a budget of {budget} is below that")
    side = math.isqrt(views - 1) if views > 1 else 0  # the largest m with m * m splits + 1 global view within budget
    if side < 1:
        return BudgetSettings(budget, {"do_image_splitting": False}, per_view, "one view, no splitting")
    return BudgetSettings(
        budget,
        {"do_image_splitting": True, "size": {"longest_edge": side * split}},
        (side * side + 1) * per_view,
        f"split into at most {side} x {side} views of {split} px plus a global view",
    )


def _tiles(budget: int, per_tile: int) -> BudgetSettings:
    """InternVL: `per_tile` tokens per tile; more than one tile adds a thumbnail."""
    views = budget // per_tile
    if views < 1:
        raise BudgetError(f"InternVL uses {per_tile} tokens per image at least (one tile); a budget of {budget} is below that")
    if views < 3:
        return BudgetSettings(budget, {"crop_to_patches": False}, per_tile, "one tile")
    return BudgetSettings(budget, {"crop_to_patches": True, "max_patches": views - 1}, views * per_tile, f"at most {views - 1} tiles")


def _fixed_count(loaded) -> int:
    processor = loaded.processor
    for name in ("image_seq_length", "num_image_tokens"):
        value = getattr(processor, name, None)
        if isinstance(value, int):
            return value
    config = loaded.model.config
    for name in ("mm_tokens_per_image", "image_seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2
