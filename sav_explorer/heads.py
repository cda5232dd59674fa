"""Where every head sits: the one description of a model's heads that the pipeline shares.

    layout = loaded.layout                  # HeadLayout of the model's decoder
    layout.heads[:3]                        # [(0, 0), (0, 1), (0, 2)]: (layer, head), in capture order
    layout.position(2, 0)                   # column of head 0 of layer 2 in (n, n_heads_total, ...) tensors

The loaded model builds it from its attention sites; captured activations, the classifier and
its manifest carry the same object, so no other code derives head positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

Head = tuple[int, int]  # (layer, head)


@dataclass(frozen=True)
class LayerBlock:
    """One layer's heads: `n_heads` slices of `head_dim` side by side in its o_proj input."""

    layer: int
    n_heads: int
    head_dim: int


@dataclass(frozen=True)
class HeadLayout:
    """Every (layer, head) in capture order (layers ascending, heads ascending within a layer)."""

    blocks: tuple[LayerBlock, ...]

    def __post_init__(self) -> None:
        layers = [block.layer for block in self.blocks]
        if layers != sorted(set(layers)):
            raise ValueError(f"layers must be unique and ascending; got {layers}")
        if any(block.n_heads < 1 or block.head_dim < 1 for block in self.blocks):
            raise ValueError("every layer needs at least one head of positive size")

    @classmethod
    def from_heads(cls, heads: Sequence[Head], sizes: Sequence[int]) -> HeadLayout:
        """Rebuilds a layout from its flat form (as manifests store it); refuses any other order."""
        if len(heads) != len(sizes):
            raise ValueError(f"expected one size per head ({len(heads)}); got {len(sizes)}")
        blocks: list[LayerBlock] = []
        for (layer, head), size in zip(heads, sizes):
            if blocks and blocks[-1].layer == layer:
                last = blocks[-1]
                if head != last.n_heads or size != last.head_dim:
                    raise ValueError(f"layer {layer}: expected head {last.n_heads} of size {last.head_dim}; got head {head} of size {size}")
                blocks[-1] = LayerBlock(layer, last.n_heads + 1, size)
            elif head != 0:
                raise ValueError(f"layer {layer}: heads must start at 0; got {head}")
            else:
                blocks.append(LayerBlock(layer, 1, size))
        return cls(tuple(blocks))

    @cached_property
    def heads(self) -> list[Head]:
        return [(block.layer, h) for block in self.blocks for h in range(block.n_heads)]

    @cached_property
    def sizes(self) -> list[int]:
        return [block.head_dim for block in self.blocks for _ in range(block.n_heads)]

    @cached_property
    def _positions(self) -> dict[Head, int]:
        return {head: i for i, head in enumerate(self.heads)}

    @property
    def n_heads(self) -> int:
        return len(self.heads)

    @property
    def layers(self) -> list[int]:
        return [block.layer for block in self.blocks]

    def __contains__(self, head: object) -> bool:
        return head in self._positions

    def block(self, layer: int) -> LayerBlock:
        for block in self.blocks:
            if block.layer == layer:
                return block
        raise KeyError(f"no layer {layer} among {self.layers}")

    def position(self, layer: int, head: int) -> int:
        """Index of (layer, head) along the head axis of tensors laid out by this layout."""
        try:
            return self._positions[(layer, head)]
        except KeyError:
            raise KeyError(f"no head {head} in layer {layer} of this layout") from None

    def positions(self, heads: Iterable[Head]) -> list[int]:
        return [self.position(layer, head) for layer, head in heads]

    def restricted_to(self, layers: Iterable[int]) -> HeadLayout:
        """The blocks of the given layers only (a capture that runs just the layers it needs)."""
        wanted = set(layers)
        return HeadLayout(tuple(block for block in self.blocks if block.layer in wanted))

    @property
    def uniform_head_dim(self) -> int | None:
        """The head size shared by every head, or None where layers differ (Gemma 4)."""
        sizes = {block.head_dim for block in self.blocks}
        return sizes.pop() if len(sizes) == 1 else None
