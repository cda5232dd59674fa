"""Head capture: each head's output at the last real input token, read from `o_proj` inputs.

    with HeadCapture(loaded.sites, attention_mask) as capture:
        model(**inputs)                    # stops after the deepest site; the block swallows the stop
    capture.blocks()                       # one (batch, n_heads, head_dim) float32 CPU tensor per site

Forward pre-hooks read the input of every attention output projection (the heads, side by
side), keep only the last real token of each row, and stop the forward pass right after the
deepest layer needed, so the rest of the decoder and the language-model head never run.
The hooks are removed when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from .data import Example
from .errors import DataError
from .heads import Head, HeadLayout
from .models import AttentionSite, LoadedModel, build_prompt, count_image_tokens, image_token_id, prepare_inputs
from .models.budget import budget_settings
from .models.memory import GB, activation_estimate, check_fits, default_budget_bytes

logger = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised from the deepest hook to end the forward pass early; swallowed when the capture block exits."""


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token of each row, for left or right padding: (batch,)."""
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.flip(1).int().argmax(1)


class HeadCapture:
    """Context manager that captures the sites' last-token head outputs during one forward pass."""

    def __init__(self, sites: Sequence[AttentionSite], attention_mask: torch.Tensor, stop_early: bool = True):
        self.sites = list(sites)
        self.attention_mask = attention_mask
        self.last = last_token_index(attention_mask)
        self.stop_early = stop_early
        self.activations: list[torch.Tensor | None] = [None] * len(self.sites)
        self._handles = []

    def __enter__(self) -> HeadCapture:
        deepest = max(site.layer for site in self.sites)
        for index, site in enumerate(self.sites):
            stop = self.stop_early and site.layer == deepest
            self._handles.append(site.module.register_forward_pre_hook(self._hook(index, site, stop)))
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return exc_type is _StopForward  # the early stop is ours: swallow it, as baukit's Trace does

    def _hook(self, index: int, site: AttentionSite, stop: bool) -> Callable:
        def hook(module, args):
            hidden = args[0]  # (batch, seq, n_heads * head_dim)
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
            if stop:
                raise _StopForward

        return hook

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
    *,
    sites: Sequence[AttentionSite] | None = None,
    batch_size: int = 8,
    default_question: str | None = None,
    max_pixels: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_image_tokens_total: int | None = None,
    max_image_tokens: int | None = None,
    max_activation_bytes: int | None = None,
    video_frames: int | None = None,
) -> HeadActivations:
    """Runs the model once per example (in batches) and keeps the last-token head outputs.

    `sites` limits the capture (and the forward pass) to some layers, as prediction does.
    `on_batch(done, total)` reports progress; `should_stop()` is asked between batches and ends
    the work with `CaptureCancelled`. `max_image_tokens_total` caps the image tokens of the whole
    request: the batch that would pass it is refused before the model runs it. `max_image_tokens`
    is a budget per image, in the family's own processor settings (`models.budget`); `video_frames`
    samples that many frames of each video (default: the processor's own sampling).
    `max_activation_bytes` guards memory (`models.memory`; default half the free memory): a batch
    estimated over it runs one example at a time, and an example over it alone is refused before
    the model runs.
    """
    image_budget = budget_settings(loaded, max_image_tokens)
    if max_activation_bytes is None:
        max_activation_bytes = default_budget_bytes(loaded.input_device)
    counted = image_token_id(loaded) is not None
    image_tokens: list[int] = []
    tokens_so_far = 0
    sites = list(sites or loaded.sites)
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1; got {batch_size}")
    blocks: list[list[torch.Tensor]] = [[] for _ in sites]
    for start in range(0, len(examples), batch_size):
        if should_stop is not None and should_stop():
            raise CaptureCancelled(f"cancelled after {start} of {len(examples)} examples")
        batch = examples[start : start + batch_size]
        images = [example.load_images(max_pixels) for example in batch]
        prompts = [build_prompt(loaded.processor, example.question_or(default_question), row) for example, row in zip(batch, images)]
        parts = [prepare_inputs(loaded, images, prompts, image_budget, video_frames)]
        if max_activation_bytes:
            settings = (image_budget, video_frames)
            parts = _within_memory(loaded, parts[0], batch, images, prompts, settings, max_activation_bytes)
        for inputs in parts:
            if counted:
                counts = count_image_tokens(loaded, inputs["input_ids"])
                image_tokens += counts
                tokens_so_far += sum(counts)
                if max_image_tokens_total is not None and tokens_so_far > max_image_tokens_total:
                    raise DataError(
                        f"this request needs more than {max_image_tokens_total:,} image tokens, the cap here "
                        f"(reached after {start + len(batch)} of {len(examples)} examples): use fewer or smaller images"
                    )
            with HeadCapture(sites, inputs["attention_mask"]) as capture:
                loaded.model(**inputs, use_cache=False)
            for index, block in enumerate(capture.blocks()):
                blocks[index].append(block)
        if on_batch is not None:
            on_batch(min(start + batch_size, len(examples)), len(examples))
    layout = loaded.layout.restricted_to(site.layer for site in sites)
    return HeadActivations(layout, [torch.cat(parts) for parts in blocks], image_tokens if counted else None)


def _within_memory(loaded, inputs, batch, images, prompts, settings: tuple, budget: int) -> list[dict]:
    """The batch's inputs, split into single examples when the whole batch is estimated over `budget`;
    an example over it alone is refused (`models.memory`)."""
    estimate = activation_estimate(loaded, inputs)
    if estimate.bytes <= budget:
        return [inputs]
    if len(batch) > 1:
        logger.warning(
            "a batch of %d needs %s, over the %.1f GB activation budget: running its examples one at a time",
            len(batch),
            estimate.describe(),
            budget / GB,
        )
    parts = [prepare_inputs(loaded, [row], [prompt], *settings) for row, prompt in zip(images, prompts)] if len(batch) > 1 else [inputs]
    for example, part in zip(batch, parts):
        check_fits(activation_estimate(loaded, part), budget, example.name)
    return parts


class CaptureCancelled(Exception):
    """The user stopped the capture between batches."""


def sites_for_heads(loaded: LoadedModel, heads: Iterable[Head]) -> list[AttentionSite]:
    """The sites (layers) that hold the given (layer, head) pairs, in layer order."""
    layers = {layer for layer, _ in heads}
    return [site for site in loaded.sites if site.layer in layers]
