"""Where each image token sits in its image: per family, the image tokens of one example as 2-D grids.

    layout = image_token_layout(loaded, inputs, sizes=[(640, 480)])   # inputs of ONE example
    layout.grids[0]        # the first image's views, in sequence order: [ImageGrid(view="image", rows=8, ...)]
    layout.kinds           # per position: "image", "layout" (separators, row tags, newlines) or "text"

Every family's processor and model arrange image features differently: one fixed grid (LLaVA,
PaliGemma, Gemma 3), merged patches from `image_grid_thw` (Qwen), rows broken by `[IMG_BREAK]`
(Mistral 3), splits tagged `<row_r_col_c>` plus a global image (Idefics3, SmolVLM), tiles plus a
thumbnail (InternVL), a base grid plus an unpadded anyres grid with a newline after each row
(LLaVA-NeXT, LLaVA-OneVision), a pooled grid from `image_position_ids` (Gemma 4). Each grid is
derived from what the processor returned and checked against the token count; where a family is
not known, or a count does not match, the layout says so and no grid is guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from . import LoadedModel, image_token_id

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in the original image's pixels


@dataclass(frozen=True)
class ImageGrid:
    """One view of one image: `rows` x `cols` image tokens covering `box` of the original image."""

    view: str  # "image", "base", "anyres", "tile r,c", "split r,c", "global", "thumbnail"
    rows: int
    cols: int
    box: Box
    positions: tuple[int, ...]  # sequence position of each cell, row-major

    def cell_box(self, row: int, col: int) -> Box:
        x0, y0, x1, y1 = self.box
        w, h = (x1 - x0) / self.cols, (y1 - y0) / self.rows
        return (x0 + col * w, y0 + row * h, x0 + (col + 1) * w, y0 + (row + 1) * h)


@dataclass
class ImageTokenLayout:
    grids: list[list[ImageGrid]]  # per image, its views in sequence order; empty lists where unknown
    kinds: list[str]  # per sequence position: "image", "layout" or "text"
    known: bool = True
    note: str = ""  # why the layout is unknown


def image_token_layout(loaded: LoadedModel, inputs: dict, sizes: list[tuple[int, int]], options: dict | None = None) -> ImageTokenLayout:
    """Token kinds and per-image grids for ONE processed example (batch of 1); `sizes`: (width, height) per image;
    `options`: the processor settings the call overrode (an image-token budget's), which some arrangements depend on."""
    ids = inputs["input_ids"][0]
    tokens = loaded.processor.tokenizer.convert_ids_to_tokens(ids.tolist())
    kinds = ["text"] * len(tokens)
    token_id = image_token_id(loaded)
    image_positions = [] if token_id is None else (ids == token_id).nonzero().flatten().tolist()
    for position in image_positions:
        kinds[position] = "image"
    special = _special_tokens(loaded)
    image_set = set(image_positions)
    for position, token in enumerate(tokens):
        if position not in image_set and token in special and _frames_images(token):
            kinds[position] = "layout"
    family = loaded.model.config.model_type
    if family == "mllama":  # its <|image|> placeholder carries no image features: the image enters by cross-attention
        for position in image_positions:
            kinds[position] = "layout"
    reader = _READERS.get(family)
    if reader is None:
        note = f"layout unknown for {type(loaded.model).__name__}"
        return ImageTokenLayout([[] for _ in sizes], kinds, False, note)
    try:
        grids = reader(loaded, inputs, tokens, image_positions, sizes, options or {})
    except _Mismatch as mismatch:
        return ImageTokenLayout([[] for _ in sizes], kinds, False, f"layout unknown: {mismatch}")
    in_grids = {p for views in grids for grid in views for p in grid.positions}
    for position in image_positions:
        if position not in in_grids:  # image-token positions outside every grid carry newlines
            kinds[position] = "layout"
    return ImageTokenLayout(grids, kinds, True, "")


class _Mismatch(Exception):
    """The processor's output does not add up to the family's arrangement: the layout is not known."""


_LAYOUT_WORDS = ("image", "img", "vision", "boi", "eoi", "global", "fake_token")
_ROW_COL = re.compile(r"<row_\d+_col_\d+>")


def _special_tokens(loaded: LoadedModel) -> set[str]:
    tokenizer = loaded.processor.tokenizer
    return set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())


def _frames_images(token: str) -> bool:
    """Special tokens that frame or separate image tokens: image starts and ends, breaks, row and column tags."""
    lower = token.lower()
    return bool(_ROW_COL.fullmatch(token)) or any(word in lower for word in _LAYOUT_WORDS)


def _whole(size: tuple[int, int]) -> Box:
    return (0.0, 0.0, float(size[0]), float(size[1]))


def _square_grid(view: str, positions: list[int], box: Box) -> ImageGrid:
    side = math.isqrt(len(positions))
    if side * side != len(positions) or not positions:
        raise _Mismatch(f"{len(positions)} image tokens do not form a square grid")
    return ImageGrid(view, side, side, box, tuple(positions))


def _split_per_image(positions: list[int], n_images: int) -> list[list[int]]:
    if n_images == 0 or len(positions) % n_images:
        raise _Mismatch(f"{len(positions)} image tokens for {n_images} images")
    step = len(positions) // n_images
    return [positions[i * step : (i + 1) * step] for i in range(n_images)]


def _crop_box(size: tuple[int, int], image_processor) -> Box:
    """The part of the original image a CLIP-style processor keeps: shortest edge resized, then a centre crop."""
    width, height = size
    shortest = (getattr(image_processor, "size", None) or {}).get("shortest_edge")
    crop = getattr(image_processor, "crop_size", None) or {}
    if not getattr(image_processor, "do_center_crop", False) or not shortest or not crop:
        return _whole(size)
    scale = shortest / min(width, height)
    keep_w, keep_h = min(crop["width"] / scale, width), min(crop["height"] / scale, height)
    x0, y0 = (width - keep_w) / 2, (height - keep_h) / 2
    return (x0, y0, x0 + keep_w, y0 + keep_h)


def _one_grid_per_image(loaded, inputs, tokens, positions, sizes, options: dict) -> list[list[ImageGrid]]:
    """LLaVA, PaliGemma, Gemma 3: a fixed square grid per image (CLIP-style crop where the processor crops)."""
    processor = getattr(loaded.processor, "image_processor", None)
    if getattr(processor, "do_pan_and_scan", False):
        raise _Mismatch("pan-and-scan crops are not laid out")
    strategy = getattr(loaded.model.config, "vision_feature_select_strategy", "default")
    if strategy == "full" and loaded.model.config.model_type == "llava":
        raise _Mismatch("the CLS feature is kept among the image tokens")
    per_image = _split_per_image(positions, len(sizes))
    return [[_square_grid("image", p, _crop_box(size, processor))] for p, size in zip(per_image, sizes)]


def _qwen(loaded, inputs, tokens, positions, sizes, options: dict) -> list[list[ImageGrid]]:
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5: `image_grid_thw` counts patches before merging, row-major."""
    merge = loaded.processor.image_processor.merge_size
    grids, start = [], 0
    for (t, h, w), size in zip(inputs["image_grid_thw"].tolist(), sizes):
        rows, cols = h // merge, w // merge
        count = t * rows * cols
        if t != 1:
            raise _Mismatch("a temporal patch of several frames")
        grids.append([ImageGrid("image", rows, cols, _whole(size), tuple(positions[start : start + count]))])
        start += count
    if start != len(positions):
        raise _Mismatch(f"image_grid_thw accounts for {start} of {len(positions)} image tokens")
    return grids


def _mistral3(loaded, inputs, tokens, positions, sizes, options: dict) -> list[list[ImageGrid]]:
    """Mistral 3 (Pixtral): rows of image tokens separated by `[IMG_BREAK]`, each image ended by `[IMG_END]`."""
    grids, rows, current = [], [], []
    for position in range(positions[0] if positions else 0, len(tokens)):
        token = tokens[position]
        if position in positions:
            current.append(position)
        elif token in ("[IMG_BREAK]", "[IMG_END]"):
            rows.append(current)
            current = []
            if token == "[IMG_END]":
                if len({len(r) for r in rows}) != 1:
                    raise _Mismatch("rows of different lengths")
                size = sizes[len(grids)]
                grids.append([ImageGrid("image", len(rows), len(rows[0]), _whole(size), tuple(p for r in rows for p in r))])
                rows = []
    if len(grids) != len(sizes):
        raise _Mismatch(f"found {len(grids)} image ends for {len(sizes)} images")
    return grids


def _idefics3(loaded, inputs, tokens, positions, sizes, options: dict) -> list[list[ImageGrid]]:
    """Idefics3 and SmolVLM: splits tagged `<row_r_col_c>` in reading order, then the global image."""
    views: list[tuple[str, int, int, list[int]]] = []  # (kind, row, col, positions) in sequence order
    image_positions = set(positions)
    for position, token in enumerate(tokens):
        match = _ROW_COL.fullmatch(token)
        if match:
            r, c = (int(x) for x in re.findall(r"\d+", token))
            views.append(("split", r, c, []))
        elif token == "<global-img>":
            views.append(("global", 0, 0, []))
        elif position in image_positions:
            if not views:
                raise _Mismatch("image tokens before any split or global tag")
            views[-1][3].append(position)
    grids: list[list[ImageGrid]] = []
    splits: list[tuple[str, int, int, list[int]]] = []
    for view in views:
        if view[0] == "split":
            splits.append(view)
            continue
        if len(grids) == len(sizes):
            raise _Mismatch(f"more global images than the {len(sizes)} images")
        width, height = sizes[len(grids)]
        rows, cols = max((r for _, r, _, _ in splits), default=1), max((c for _, _, c, _ in splits), default=1)
        image_views = []
        for _, r, c, split_positions in splits:
            box = ((c - 1) * width / cols, (r - 1) * height / rows, c * width / cols, r * height / rows)
            image_views.append(_square_grid(f"split {r},{c}", split_positions, box))
        image_views.append(_square_grid("global", view[3], _whole((width, height))))
        grids.append(image_views)
        splits = []
    if len(grids) != len(sizes) or splits:
        raise _Mismatch(f"found {len(grids)} global images for {len(sizes)} images")
    return grids


def _internvl(loaded, inputs, tokens, positions, sizes, options: dict) -> list[list[ImageGrid]]:
    """InternVL: tiles in reading order on the processor's own canvas, then a thumbnail when there are several."""
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    processor = loaded.processor.image_processor
    tile = processor.size["height"], processor.size["width"]
    n_tiles = inputs["pixel_values"].shape[0]
    if len(sizes) != 1:
        raise _Mismatch("several images in one example")
    per_tile = _split_per_image(positions, n_tiles)
    width, height = sizes[0]
    views = []
    if n_tiles > 1:
        if options.get("crop_to_patches", getattr(processor, "crop_to_patches", False)) is False:
            raise _Mismatch("tiles without crop_to_patches")
        max_patches = options.get("max_patches", processor.max_patches)
        cols, rows = get_optimal_tiled_canvas((height, width), tile, processor.min_patches, max_patches)
        if rows * cols != n_tiles - 1:
            raise _Mismatch(f"a {rows} x {cols} canvas for {n_tiles - 1} tiles")
        for index, tile_positions in enumerate(per_tile[:-1]):
            r, c = divmod(index, cols)
            box = (c * width / cols, r * height / rows, (c + 1) * width / cols, (r + 1) * height / rows)
            views.append(_square_grid(f"tile {r + 1},{c + 1}", tile_positions, box))
    views.append(_square_grid("thumbnail" if n_tiles > 1 else "image", per_tile[-1], _whole(sizes[0])))
    return [views]


def _llava_next(loaded, inputs, tokens, positions, sizes, options: dict) -> list[list[ImageGrid]]:
    """LLaVA-NeXT and LLaVA-OneVision: a base grid, then the anyres tiles stitched and unpadded by the
    model's own `pack_image_features`, with a newline token after each row; run here on markers."""
    model = loaded.model.model
    config = loaded.model.config
    side = config.vision_config.image_size // config.vision_config.patch_size
    n_tiles = inputs["pixel_values"].shape[1]
    if len(sizes) != 1:
        raise _Mismatch("several images in one example")
    # marker features: (tile, row, col) of each patch; the newline is (-1, -1, -1)
    tile_ids = torch.arange(n_tiles).view(-1, 1, 1).expand(n_tiles, side, side)
    rows = torch.arange(side).view(1, -1, 1).expand(n_tiles, side, side)
    cols = torch.arange(side).view(1, 1, -1).expand(n_tiles, side, side)
    markers = torch.stack([tile_ids, rows, cols], -1).reshape(n_tiles, side * side, 3).float()
    newline = torch.full((3,), -1.0)
    options = {"image_newline": newline}
    if config.model_type == "llava_next":
        options["vision_feature_select_strategy"] = config.vision_feature_select_strategy
    else:
        options["vision_aspect_ratio"] = getattr(config, "vision_aspect_ratio", "anyres_max_9")
    packed, lengths = model.pack_image_features([markers], inputs["image_sizes"], **options)
    packed = packed[0] if isinstance(packed, (list, tuple)) else packed
    if packed.shape[0] != len(positions):
        raise _Mismatch(f"packed {packed.shape[0]} features for {len(positions)} image tokens")
    base = side * side
    is_newline = (packed[:, 0] == -1).tolist()
    if any(is_newline[:base]) or packed[:base, 0].ne(0).any():
        raise _Mismatch("the base image does not come first")
    anyres = [p for p, nl in zip(positions[base:], is_newline[base:]) if not nl]
    n_rows = sum(is_newline[base:])
    width, height = sizes[0]
    processor = loaded.processor.image_processor
    views = [ImageGrid("base", side, side, _crop_box((width, height), processor), tuple(positions[:base]))]
    if n_rows and anyres:
        if len(anyres) % n_rows:
            raise _Mismatch("anyres rows of different lengths")
        views.append(ImageGrid("anyres", n_rows, len(anyres) // n_rows, _whole(sizes[0]), tuple(anyres)))
    return [views]


def _gemma4(loaded, inputs, tokens, positions, sizes, options: dict) -> list[list[ImageGrid]]:
    """Gemma 4: patches pooled k x k by their `image_position_ids` (padding at -1), kernels row-major."""
    position_ids = inputs["image_position_ids"]
    budget = options.get("max_soft_tokens", getattr(loaded.processor.image_processor, "max_soft_tokens", None))
    if position_ids.shape[0] != len(sizes) or not budget:
        raise _Mismatch("image_position_ids do not match the images")
    grids = []
    for image, size, soft in zip(position_ids, sizes, _split_per_image(positions, len(sizes))):
        k = math.isqrt(image.shape[0] // budget)  # as the model's pooler computes it
        real = image[(image >= 0).all(-1)]
        cols = (int(real[:, 0].max()) + 1) // k
        rows = (int(real[:, 1].max()) + 1) // k
        if k < 1 or rows * cols != len(soft):
            raise _Mismatch(f"a {rows} x {cols} pooled grid for {len(soft)} soft tokens")
        grids.append([ImageGrid("image", rows, cols, _whole(size), tuple(soft))])
    return grids


_READERS = {
    "llava": _one_grid_per_image,
    "paligemma": _one_grid_per_image,
    "gemma3": _one_grid_per_image,
    "qwen2_vl": _qwen,
    "qwen2_5_vl": _qwen,
    "qwen3_vl": _qwen,
    "qwen3_5": _qwen,
    "mistral3": _mistral3,
    "idefics3": _idefics3,
    "smolvlm": _idefics3,
    "internvl": _internvl,
    "llava_next": _llava_next,
    "llava_onevision": _llava_next,
    "gemma4": _gemma4,
}
