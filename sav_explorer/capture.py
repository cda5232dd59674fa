"""Head capture: each head's output at the last real input token, read from `o_proj` inputs.

    with HeadCapture(loaded, batch.attention_mask) as capture:
        loaded.model(**batch.model_inputs())       # stops after the deepest site; the block swallows the stop
    capture.blocks()                       # one (batch, n_heads, head_dim) float32 CPU tensor per site

A `Trace` reads the input of every attention output projection (the heads, side by side), keeps
only the last real token of each row, and stops the forward pass right after the deepest layer
needed, so the rest of the decoder and the language-model head never run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .data import Example
from .encoding import Cancelled, Encoding, RunOptions, batches, last_token_index
from .heads import Head, HeadLayout
from .models import AttentionSite, LoadedModel
from .trace import Trace

CaptureCancelled = Cancelled  # the name the public API has always had


class HeadCapture:
    """Context manager that captures the sites' last-token head outputs during one forward pass."""

    def __init__(
        self, loaded: LoadedModel, attention_mask: torch.Tensor, sites: Sequence[AttentionSite] | None = None, stop_early: bool = True
    ):
        self.sites = list(sites or loaded.sites)
        self.attention_mask = attention_mask
        self.last = last_token_index(attention_mask)
        self.activations: list[torch.Tensor | None] = [None] * len(self.sites)
        self.trace = Trace(loaded, stop=stop_early)
        for index, site in enumerate(self.sites):
            self.trace.on_heads(site.layer, self._reader(index, site))

    def __enter__(self) -> HeadCapture:
        self.trace.__enter__()
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        return self.trace.__exit__(exc_type, exc, traceback)

    def _reader(self, index: int, site: AttentionSite):
        def read(hidden: torch.Tensor) -> None:  # hidden: (batch, seq, n_heads * head_dim)
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            if hidden.shape[1] == self.attention_mask.shape[1]:
                last = self.last.to(hidden.device)
            elif bool(self.attention_mask[:, -1].all()):  # left padded (or no padding): the last position is real
                last = torch.full_like(rows, hidden.shape[1] - 1)
            else:
                raise RuntimeError(
                    f"{site.name}: sequence length {hidden.shape[1]} differs from the attention mask's "
                    f"{self.attention_mask.shape[1]} and the batch is right-padded; pad on the left"
                )
            picked = hidden[rows, last]  # (batch, n_heads * head_dim)
            self.activations[index] = picked.detach().float().cpu().view(-1, site.n_heads, site.head_dim)

        return read

    def blocks(self) -> list[torch.Tensor]:
        """One (batch, n_heads, head_dim) tensor per site, once the forward pass has run."""
        missing = [site.name for site, act in zip(self.sites, self.activations) if act is None]
        if missing:
            raise RuntimeError(f"the forward pass never reached {missing[:3]}; does the input hold an image for every example?")
        return self.activations  # type: ignore[return-value]


@dataclass
class HeadActivations:
    """Captured activations of a set of examples: one (n_examples, n_heads, head_dim) block per layer of `layout`."""

    layout: HeadLayout
    blocks: list[torch.Tensor]
    image_tokens: list[int] | None = None  # per example, as the model saw them (when counted)

    def __post_init__(self) -> None:
        shapes = [tuple(block.shape[1:]) for block in self.blocks]
        expected = [(b.n_heads, b.head_dim) for b in self.layout.blocks]
        if shapes != expected:
            raise ValueError(f"activation blocks of shapes {shapes} do not match the layout's (heads, head_dim) {expected}")

    @property
    def n_examples(self) -> int:
        return self.blocks[0].shape[0]

    def uniform(self) -> torch.Tensor | None:
        """All heads as one (n_examples, n_heads_total, head_dim) tensor, or None if sizes differ."""
        if self.layout.uniform_head_dim is None:
            return None
        return torch.cat(self.blocks, dim=1)


@torch.no_grad()
def capture_heads(
    loaded: LoadedModel,
    examples: Sequence[Example],
    encoding: Encoding | None = None,
    run: RunOptions | None = None,
    *,
    sites: Sequence[AttentionSite] | None = None,
) -> HeadActivations:
    """Runs the model once per example (in batches, `encoding.batches`) and keeps the last-token head outputs.

    `sites` limits the capture (and the forward pass) to some layers, as prediction does. `run`
    reports progress, cancels between batches (`CaptureCancelled`), guards memory and caps the
    request's image tokens (see `RunOptions`).
    """
    encoding = encoding or Encoding()
    sites = list(sites or loaded.sites)
    image_tokens: list[int] | None = []
    blocks: list[list[torch.Tensor]] = [[] for _ in sites]
    for batch in batches(loaded, examples, encoding, run):
        if batch.image_tokens is None:
            image_tokens = None
        elif image_tokens is not None:
            image_tokens += batch.image_tokens
        with HeadCapture(loaded, batch.attention_mask, sites) as capture:
            loaded.model(**batch.model_inputs(), use_cache=False)
        for index, block in enumerate(capture.blocks()):
            blocks[index].append(block)
    layout = loaded.layout.restricted_to(site.layer for site in sites)
    return HeadActivations(layout, [torch.cat(parts) for parts in blocks], image_tokens)


def sites_for_heads(loaded: LoadedModel, heads: Iterable[Head]) -> list[AttentionSite]:
    """The sites (layers) that hold the given (layer, head) pairs, in layer order."""
    layers = {layer for layer, _ in heads}
    return [site for site in loaded.sites if site.layer in layers]
