"""Where a head looks: its attention from the last input token (the token SAV reads) to every input token.

    lens = look(loaded, Example((path,), "what color is the shape ?"), [(2, 0)], clf.encoding)
    view = lens.heads[(2, 0)]
    view.image_share, view.text_share        # shares of the head's attention, by kind of token
    view.maps[0][0].grid                     # first image, first view: rows x cols attention per cell

The example is read through `encode` under the classifier's encoding, exactly as capture reads it.
Models load with SDPA attention, which returns no weights; the lens's `Trace` switches the text
decoder's attention to eager for its pass (restored on exit: the model is shared), keeps each
needed layer's last-token row, and stops after the deepest layer needed. Eager attention builds a sequence x sequence matrix per
head, so the pass costs more memory than capture; run it on one example at a time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from .checks import check_choice
from .data import Example, is_video
from .encoding import Batch, Encoding, budget_of, encode
from .errors import DataError
from .heads import Head
from .models import LoadedModel
from .models.layouts import Box, ImageGrid, ImageTokenLayout, image_token_layout
from .trace import Trace

Weighting = Literal["attention", "value"]


@dataclass(frozen=True)
class GridMap:
    """A head's attention on one view of one image: `grid[r][c]` is the share on that cell's token."""

    view: str
    rows: int
    cols: int
    box: Box
    grid: list[list[float]]


@dataclass(frozen=True)
class HeadLens:
    layer: int
    head: int
    weights: torch.Tensor  # (n_keys,) summing to 1: attention (or value-weighted attention) per input token
    image_share: float  # on tokens that carry image features
    layout_share: float  # on separators, row tags, newlines and other image framing tokens
    text_share: float  # on everything else; the three sum to 1
    first_token_share: float  # on the first token (often an attention sink); part of one of the above
    maps: list[list[GridMap]]  # per image, per view; empty where the layout is unknown


@dataclass
class Lens:
    tokens: list[str]
    layout: ImageTokenLayout
    sizes: list[tuple[int, int]]  # (width, height) of each original image
    heads: dict[Head, HeadLens]


@torch.no_grad()
def last_token_attention(
    loaded: LoadedModel, batch: Batch, heads: Sequence[Head], weighting: Weighting = "attention"
) -> dict[Head, torch.Tensor]:
    """Each head's attention weights from the last real input token to every key: {head: (batch, n_keys)}.

    With "value", each weight is multiplied by the norm of that token's value vector for the head
    (as `v_proj` gives it; Kobayashi et al. 2020) and the row renormalised.
    """
    check_choice(weighting, Weighting, "weighting")
    sizes = {site.layer: (site.n_heads, site.head_dim) for site in loaded.sites}
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if layer not in sizes or not 0 <= head < sizes[layer][0]:
            raise DataError(f"no head {head} in layer {layer} of this model")
        by_layer.setdefault(layer, []).append(head)
    if not by_layer:
        raise DataError("name at least one head")
    mask = batch.attention_mask
    last = batch.last
    rows: dict[int, torch.Tensor] = {}
    norms: dict[int, torch.Tensor] = {}

    def keep_weights(layer: int):
        def read(weights: torch.Tensor) -> None:  # (batch, n_heads, q_len, k_len)
            query = last if weights.shape[2] == mask.shape[1] else torch.full_like(last, weights.shape[2] - 1)
            picked = weights[torch.arange(weights.shape[0]), :, query.to(weights.device)]  # (batch, n_heads, k_len)
            rows[layer] = picked[:, by_layer[layer]].detach().float().cpu()

        return read

    def keep_value_norms(layer: int):
        def read(values: torch.Tensor) -> None:  # (batch, k_len, n_kv * head_dim)
            head_dim = sizes[layer][1]
            values = values.detach().float().cpu()
            norms[layer] = values.view(*values.shape[:2], -1, head_dim).norm(dim=-1)  # (batch, k_len, n_kv)

        return read

    trace = Trace(loaded, stop=True)
    for layer in by_layer:
        trace.on_attention(layer, keep_weights(layer))
        if weighting == "value":
            trace.on_values(layer, keep_value_norms(layer))
    with trace:
        loaded.model(**batch.model_inputs(), use_cache=False)
    result = {}
    for layer, layer_heads in by_layer.items():
        for column, head in enumerate(layer_heads):
            weights = rows[layer][:, column]  # (batch, k_len)
            if weighting == "value":
                n_heads = sizes[layer][0]
                per_kv = n_heads // norms[layer].shape[-1]
                weights = weights * norms[layer][:, :, head // per_kv]
                weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
            result[(layer, head)] = weights
    return result


def look(
    loaded: LoadedModel, example: Example, heads: Sequence[Head], encoding: Encoding | None = None, *, weighting: Weighting = "attention"
) -> Lens:
    """The lens on one example, read as `encoding` says (the classifier's: the same input capture had), for the given heads."""
    encoding = encoding or Encoding()
    if any(is_video(item) for item in example.images):
        raise DataError("the head lens lays attention over images; it does not read video yet")
    batch = encode(loaded, [example], encoding)
    images = batch.images[0]
    sizes = [image.size for image in images]
    budget = budget_of(loaded, encoding)
    layout = image_token_layout(loaded, batch.inputs, sizes, budget.kwargs if budget else None)
    tokens = loaded.processor.tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    views = {}
    for head, weights in last_token_attention(loaded, batch, heads, weighting).items():
        views[head] = _head_lens(head, weights[0], layout)
    return Lens(tokens, layout, sizes, views)


def _head_lens(head: Head, weights: torch.Tensor, layout: ImageTokenLayout) -> HeadLens:
    if weights.shape[0] == len(layout.kinds):
        kinds = layout.kinds
        maps = [[_grid_map(grid, weights) for grid in views] for views in layout.grids]
    else:  # cross-attention (Mllama): the keys are the image's vision tokens, not the input sequence
        kinds = ["image"] * weights.shape[0]
        maps = [[] for _ in layout.grids]
    share = {kind: float(sum(w for w, k in zip(weights.tolist(), kinds) if k == kind)) for kind in ("image", "layout", "text")}
    return HeadLens(head[0], head[1], weights, share["image"], share["layout"], share["text"], float(weights[0]), maps)


def _grid_map(grid: ImageGrid, weights: torch.Tensor) -> GridMap:
    cells = weights[list(grid.positions)].view(grid.rows, grid.cols)
    return GridMap(grid.view, grid.rows, grid.cols, grid.box, cells.tolist())


def density_on_image(maps: list[GridMap], size: tuple[int, int], shape: tuple[int, int] | None = None) -> torch.Tensor:
    """One map over the original image, views merged: attention per unit area on a (rows, cols) raster
    (default: 64 along the longer side, the aspect kept), summing to 1 where any view has attention."""
    width, height = size
    if shape is None:
        shape = (64, max(1, round(64 * width / height))) if height >= width else (max(1, round(64 * height / width)), 64)
    rows, cols = shape
    density = torch.zeros(rows, cols)
    ys = (torch.arange(rows) + 0.5) * height / rows
    xs = (torch.arange(cols) + 0.5) * width / cols
    for m in maps:
        x0, y0, x1, y1 = m.box
        cell_w, cell_h = (x1 - x0) / m.cols, (y1 - y0) / m.rows
        col = ((xs - x0) / cell_w).floor().long()
        row = ((ys - y0) / cell_h).floor().long()
        inside = (row[:, None] >= 0) & (row[:, None] < m.rows) & (col[None, :] >= 0) & (col[None, :] < m.cols)
        values = torch.tensor(m.grid)[row.clamp(0, m.rows - 1)][:, col.clamp(0, m.cols - 1)] / (cell_w * cell_h)
        density += torch.where(inside, values, torch.zeros(()))
    total = density.sum()
    return density / total if total > 0 else density


def region_share(lens: Lens, head: Head, region: torch.Tensor, image: int = 0) -> float:
    """The share of a head's image attention on the cells that cover any pixel of `region`
    ((height, width) booleans over the original image), over every view of that image."""
    view = lens.heads[head]
    covered = 0.0
    for grid, cells in zip(lens.layout.grids[image], view.maps[image]):
        for row in range(grid.rows):
            for col in range(grid.cols):
                x0, y0, x1, y1 = (int(round(v)) for v in grid.cell_box(row, col))
                if region[y0:y1, x0:x1].any():
                    covered += cells.grid[row][col]
    return covered / view.image_share if view.image_share > 0 else 0.0


@dataclass(frozen=True)
class ClassAverage:
    """A head's mean over one class's support images: its map on a common normalised grid, and its shares."""

    label: str
    n: int
    density: torch.Tensor  # (resolution, resolution) over the image scaled to a square; sums to 1
    image_share: float
    layout_share: float
    text_share: float
    first_token_share: float


def class_averages(
    loaded: LoadedModel, examples: Sequence[Example], head: Head, encoding: Encoding | None = None, *, resolution: int = 16
) -> list[ClassAverage]:
    """Per class (sorted), the head's mean map and shares over that class's examples (first image of each),
    each read as `encoding` says."""
    lenses = [look(loaded, example, [head], encoding) for example in examples]
    return average_by_class(lenses, [str(e.label) for e in examples], [head], resolution=resolution)[head]


def average_by_class(
    lenses: Sequence[Lens], labels: Sequence[str], heads: Sequence[Head], *, resolution: int = 16
) -> dict[Head, list[ClassAverage]]:
    """Per head, per class (sorted), the mean map and shares over lenses already taken (one per example,
    every head in it): `class_averages` for several heads from one pass per example."""
    by_class: dict[str, list[Lens]] = {}
    for lens, label in zip(lenses, labels):
        by_class.setdefault(label, []).append(lens)
    square = (resolution, resolution)
    averages: dict[Head, list[ClassAverage]] = {}
    for head in heads:
        for label in sorted(by_class):
            views = [(lens.heads[head], lens.sizes[0]) for lens in by_class[label]]
            densities = [density_on_image(view.maps[0], size, square) if view.maps[0] else torch.zeros(square) for view, size in views]
            shares = [
                sum(getattr(view, name) for view, _ in views) / len(views)
                for name in ("image_share", "layout_share", "text_share", "first_token_share")
            ]
            averages.setdefault(head, []).append(ClassAverage(label, len(views), torch.stack(densities).mean(0), *shares))
    return averages


def head_overlay(lens: Lens, head: Head, image: Image.Image, min_side: int = 256) -> Image.Image:
    """The head's map on the lens's first image drawn over `image` (the image itself where the layout is
    unknown). The maps lie on the image as the model read it (`lens.sizes`): the overlay scales to this one."""
    view = lens.heads[head]
    return overlay(image, density_on_image(view.maps[0], lens.sizes[0]), min_side=min_side) if view.maps[0] else image


def average_tile(average: ClassAverage, side: int = 160) -> Image.Image:
    """A class-average map as a square tile on a neutral ground (its images differ: the mean has no picture)."""
    return overlay(Image.new("RGB", (side, side), (236, 236, 236)), average.density, min_side=side)


def overlay(image: Image.Image, density: torch.Tensor, alpha: float = 0.65, min_side: int = 256) -> Image.Image:
    """The image with the density drawn over it as a translucent heat layer (bright: more attention).

    Small images are enlarged (pixels kept sharp) so that the overlay can be read.
    """
    image = image.convert("RGB")
    scale = max(1, math.ceil(min_side / max(image.size)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    peak = float(density.max()) or 1.0
    scaled = (density / peak).clamp(0, 1)
    heat = Image.fromarray((scaled * 255).byte().numpy()).resize(image.size, Image.Resampling.NEAREST)
    colour = Image.merge("RGB", (heat.point(lambda v: 255), heat.point(lambda v: int(60 + v * 0.7)), Image.new("L", image.size, 0)))
    mask = heat.point(lambda v: int(alpha * 255 * math.sqrt(v / 255)))
    base = Image.blend(image, Image.new("RGB", image.size, (30, 30, 60)), 0.45)
    return Image.composite(colour, base, mask)


def lens_report(lens: Lens, heads: Sequence[Head]) -> dict:
    """The lens as JSON: the layout's note, and per head its shares and its grid maps on the first image."""
    views = []
    for head in heads:
        view = lens.heads[head]
        maps = [{"view": m.view, "rows": m.rows, "cols": m.cols, "grid": m.grid, "box": list(m.box)} for m in view.maps[0]]
        shares = {name: getattr(view, name) for name in ("image_share", "layout_share", "text_share", "first_token_share")}
        views.append({"layer": view.layer, "head": view.head, **shares, "maps": maps})
    return {"layout": lens.layout.note or "known", "size": list(lens.sizes[0]), "heads": views}


def maps_of(head_report: dict) -> list[GridMap]:
    """A head's grid maps back from `lens_report`'s JSON, for `density_on_image`."""
    return [GridMap(m["view"], m["rows"], m["cols"], tuple(m["box"]), m["grid"]) for m in head_report["maps"]]


class LensTask:
    """In a Ray actor (`distributed`): `lens_report` for each example."""

    def __init__(self, heads: Sequence[Head], weighting: Weighting, encoding: Encoding):
        self.heads, self.weighting, self.encoding = list(heads), weighting, encoding

    def setup(self, loaded: LoadedModel) -> None:
        pass

    def __call__(self, loaded: LoadedModel, examples: list[Example]) -> dict:
        reports = [
            json.dumps(lens_report(look(loaded, e, self.heads, self.encoding, weighting=self.weighting), self.heads)) for e in examples
        ]
        return {"lens": np.asarray(reports, dtype=object)}

    def empty(self, n: int) -> dict:
        return {"lens": np.asarray([""] * n, dtype=object)}
