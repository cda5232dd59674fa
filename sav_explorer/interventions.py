"""Interventions: the model run with chosen heads ablated, to see whether it needs them.

    means = support_means(loaded, support, heads, clf.encoding)    # only for mode "mean"
    with ablated_heads(loaded, heads, mode="mean", means=means):
        answers = generate_answers(loaded, queries, clf.encoding)    # or a capture, or any forward pass

A head's output is its slice of the attention output projection's input (what SAV reads). Two
ablations replace that slice at every position of every forward pass inside the block, the
prompt's and each generated token's:

- `zero`: 0. The head then adds nothing but its share of the projection's bias.
- `mean`: the head's mean output over a support set, position by position, so that the head
  keeps its typical contribution and loses only what depends on the image and question. Positions
  are matched by what they are: text before the first image by its offset from the first real
  token; image tokens by their index in the image block when every support example and the query
  have the same number of image tokens, else by the mean over all image tokens; text after the
  first image by its offset from the end of the prompt (for a fixed question the text after the
  image is the same template). A position the support set never had (a longer prompt) takes the
  mean over all text positions; every generated position takes the last prompt position's mean.
  Padding is excluded from the means.

Both run inside one `Trace`; its hooks are removed when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .data import Example
from .encoding import IMAGE_ALL, LAST_PROMPT_POSITION, TEXT_ALL, Encoding, PositionKey, RunOptions, batches, position_keys
from .errors import DataError
from .heads import Head, HeadLayout
from .models import LoadedModel, image_token_id
from .trace import Trace

ABLATION_MODES = ("mean", "zero")


def _columns(layout: HeadLayout, heads: Sequence[Head]) -> dict[int, torch.Tensor]:
    """Per layer, the o_proj input columns that hold the given heads' slices."""
    columns: dict[int, list[int]] = {}
    for layer, head in heads:
        dim = layout.block(layer).head_dim
        columns.setdefault(layer, []).extend(range(head * dim, (head + 1) * dim))
    return {layer: torch.tensor(cols) for layer, cols in sorted(columns.items())}


@dataclass
class PositionMeans:
    """The ablated heads' mean outputs over a support set, per layer and position key."""

    heads: tuple[Head, ...]
    means: dict[int, dict[PositionKey, torch.Tensor]]  # layer -> key -> (n_columns,) over the layer's ablated heads
    image_count: int | None  # image tokens per support example, when all agree

    def for_row(self, layer: int, keys: list[PositionKey | None], n_image_tokens: int) -> torch.Tensor:
        """(seq, n_columns): the mean for each position of one prompt (padding gets the text mean)."""
        table = self.means[layer]
        by_index = self.image_count is not None and n_image_tokens == self.image_count
        rows = []
        for key in keys:
            if key is None:
                key = TEXT_ALL
            elif key.kind == "image" and not by_index:
                key = IMAGE_ALL
            rows.append(table.get(key, table[IMAGE_ALL] if key.kind == "image" else table[TEXT_ALL]))
        return torch.stack(rows)


@torch.no_grad()
def support_means(
    loaded: LoadedModel, support: Sequence[Example], heads: Sequence[Head], encoding: Encoding | None = None, run: RunOptions | None = None
) -> PositionMeans:
    """Runs the support set once, read as `encoding` says (the classifier's), and averages the heads'
    outputs per position key (the forward pass stops after the deepest of them)."""
    if not support:
        raise DataError("mean ablation needs a support set to average over; it is empty")
    heads = tuple(heads)
    columns = _columns(loaded.layout, heads)
    key_index: dict[PositionKey, int] = {TEXT_ALL: 0, IMAGE_ALL: 1}  # each key's row in the sums
    sums = {layer: torch.zeros(2, len(cols)) for layer, cols in columns.items()}
    counts = torch.zeros(2)
    image_counts: set[int] = set()

    def accumulate(layer: int, where: tuple[torch.Tensor, torch.Tensor], key_rows: torch.Tensor, pooled_rows: torch.Tensor):
        def read(hidden: torch.Tensor) -> None:  # (batch, seq, n_heads * head_dim)
            picked = hidden.detach().float().cpu()[..., columns[layer]][where]  # (n_real_tokens, n_columns)
            grown = torch.zeros(len(key_index), picked.shape[1])
            grown[: len(sums[layer])] = sums[layer]
            sums[layer] = grown.index_add_(0, key_rows, picked).index_add_(0, pooled_rows, picked)

        return read

    for batch in batches(loaded, support, encoding or Encoding(), run):
        rows, positions, keys, pooled = [], [], [], []
        for row, row_keys in enumerate(batch.position_keys()):
            image_counts.add(sum(1 for key in row_keys if key is not None and key.kind == "image"))
            for position, key in enumerate(row_keys):
                if key is not None:
                    rows.append(row)
                    positions.append(position)
                    keys.append(key_index.setdefault(key, len(key_index)))
                    pooled.append(1 if key.kind == "image" else 0)
        where = torch.tensor(rows), torch.tensor(positions)
        key_rows, pooled_rows = torch.tensor(keys), torch.tensor(pooled)
        grown = torch.zeros(len(key_index))
        grown[: len(counts)] = counts
        counts = grown.index_add_(0, key_rows, torch.ones(len(keys))).index_add_(0, pooled_rows, torch.ones(len(keys)))
        trace = Trace(loaded, stop=True)
        for layer in columns:
            trace.on_heads(layer, accumulate(layer, where, key_rows, pooled_rows))
        with trace:
            loaded.model(**batch.model_inputs(), use_cache=False)
    means = {}
    for layer, table in sums.items():
        averaged = table / counts[: len(table)].clamp(min=1).unsqueeze(1)
        means[layer] = {key: averaged[i] for key, i in key_index.items() if i < len(table) and counts[i] > 0}
        means[layer].setdefault(IMAGE_ALL, means[layer][TEXT_ALL])  # no image tokens in the sequence (Mllama)
    return PositionMeans(heads, means, image_counts.pop() if len(image_counts) == 1 else None)


class _PromptPositions:
    """The keys of the prompt the current forward passes run on, re-read when a new prompt starts
    (generation's later calls continue it), and the replacement rows made from them per means."""

    def __init__(self, image_token: int | None):
        self.image_token = image_token
        self.input_ids: torch.Tensor | None = None
        self.keys: list[list[PositionKey | None]] = []
        self.image_counts: list[int] = []
        self.rows: dict[tuple[int, int], torch.Tensor] = {}

    def watch(self, input_ids: torch.Tensor, mask: torch.Tensor) -> None:
        known = self.input_ids
        continuing = input_ids.shape[1] == 1 or (
            known is not None
            and input_ids.shape[1] > known.shape[1]
            and input_ids.shape[0] == known.shape[0]
            and torch.equal(input_ids[:, : known.shape[1]], known)
        )
        if continuing and known is not None:
            return
        mask = mask.cpu()
        self.input_ids = input_ids.detach().clone()
        answers = _ANSWER_TOKENS.get() or [0] * len(input_ids)
        self.keys = []
        for ids, m, n_answer in zip(input_ids.cpu(), mask, answers):  # an answer's tokens are keyed as generated ones
            keys = position_keys(ids, torch.cat([m[: len(m) - n_answer], torch.zeros(n_answer, dtype=m.dtype)]), self.image_token)
            self.keys.append(keys[: len(keys) - n_answer] + [LAST_PROMPT_POSITION] * n_answer)
        self.image_counts = [sum(1 for k in keys if k is not None and k.kind == "image") for keys in self.keys]
        self.rows = {}

    def fill(self, means: PositionMeans, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, seq, n_columns): `means` matched to every position of `hidden`, the prompt's by their
        keys and every generated position by the last prompt position's."""
        cache_key = (id(means), layer)
        if cache_key not in self.rows:
            self.rows[cache_key] = torch.stack([means.for_row(layer, keys, n) for keys, n in zip(self.keys, self.image_counts)])
        rows = self.rows[cache_key]  # (batch, prompt_len, n_columns)
        table = means.means[layer]
        last = table.get(LAST_PROMPT_POSITION, table[TEXT_ALL])
        batch, seq, length = hidden.shape[0], hidden.shape[1], rows.shape[1]
        if seq == length:
            fill = rows
        elif seq < length:  # the tokens generated after the prompt, one at a time (with a cache)
            fill = last.expand(batch, seq, -1)
        else:  # no cache: the prompt again, then the tokens generated so far
            fill = torch.cat([rows, last.expand(batch, seq - length, -1)], 1)
        return fill.to(hidden.device, hidden.dtype)


@contextlib.contextmanager
def edited_heads(
    loaded: LoadedModel, heads: Sequence[Head], edit: Callable[[int, torch.Tensor, _PromptPositions], torch.Tensor]
) -> Iterator[None]:
    """Every forward pass in the block runs with `edit(layer, columns_of_the_heads, positions)` giving the
    new values of the heads' columns of each layer (batch, seq, n_columns); the one mechanism behind
    ablation, steering and patching."""
    columns = _columns(loaded.layout, heads)
    positions = _PromptPositions(image_token_id(loaded))

    def replace(layer: int):
        cols = columns[layer]

        def apply(hidden: torch.Tensor) -> torch.Tensor:  # (batch, seq, n_heads * head_dim)
            hidden = hidden.clone()
            index = cols.to(hidden.device)
            hidden[..., index] = edit(layer, hidden[..., index], positions)
            return hidden

        return apply

    trace = Trace(loaded).on_inputs(positions.watch)
    for layer in columns:
        trace.on_heads(layer, replace(layer))
    with trace:
        yield


@contextlib.contextmanager
def ablated_heads(loaded: LoadedModel, heads: Sequence[Head], mode: str = "zero", means: PositionMeans | None = None) -> Iterator[None]:
    """Every forward pass in the block runs with the heads ablated (see the module's doc)."""
    heads = tuple(heads)
    if mode not in ABLATION_MODES:
        raise DataError(f"unknown ablation mode {mode!r}; choose one of {', '.join(ABLATION_MODES)}")
    check_heads(loaded.layout, heads)
    if mode == "mean" and (means is None or not set(heads) <= set(means.heads)):
        raise DataError("mean ablation needs the support set's means of the same heads (support_means)")
    if mode == "zero":
        with edited_heads(loaded, heads, lambda layer, current, positions: torch.zeros_like(current)):
            yield
        return
    means = _restricted(means, loaded.layout, heads)
    with edited_heads(loaded, heads, lambda layer, current, positions: positions.fill(means, layer, current)):
        yield


def check_heads(layout: HeadLayout, heads: Sequence[Head]) -> None:
    unknown = [head for head in heads if head not in layout]
    if unknown:
        layer, head = unknown[0]
        raise DataError(f"this model has no head {layer}:{head} ({len(layout.layers)} layers of attention heads)")


_ANSWER_TOKENS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("answer_tokens", default=None)


@contextlib.contextmanager
def answer_tokens(per_row: Sequence[int]) -> Iterator[None]:
    """Forward passes in the block end each row with an answer of so many tokens after the prompt
    (scoring a label's likelihood): under mean ablation those positions take the last prompt
    position's mean, as generated tokens do, and the prompt's own positions keep their keys."""
    token = _ANSWER_TOKENS.set(list(per_row))
    try:
        yield
    finally:
        _ANSWER_TOKENS.reset(token)


def _restricted(means: PositionMeans, layout: HeadLayout, heads: tuple[Head, ...]) -> PositionMeans:
    """The means of a subset of the heads they were computed for."""
    kept = {}
    for layer in {layer for layer, _ in heads}:
        dim = layout.block(layer).head_dim
        computed = [h for at, h in means.heads if at == layer]
        wanted = [h for at, h in heads if at == layer]
        index = torch.tensor([computed.index(h) * dim + d for h in wanted for d in range(dim)])
        kept[layer] = {key: mean[index] for key, mean in means.means[layer].items()}
    return PositionMeans(heads, kept, means.image_count)


def random_heads(layout: HeadLayout, heads: Sequence[Head], rng: random.Random) -> list[Head]:
    """As many other heads as `heads`, from the layers they are in, none of them: the control for
    "ablating these heads hurts", which ablating any heads of those layers might. Each draw takes
    a head from the layer of its ablated head; where a layer has too few heads left, from the other
    layers of the ablated heads."""
    chosen = set(heads)
    layers = sorted({layer for layer, _ in heads})
    free = {layer: [(layer, h) for h in range(layout.block(layer).n_heads) if (layer, h) not in chosen] for layer in layers}
    drawn: list[Head] = []
    short = 0
    for layer, _ in heads:
        if free[layer]:
            drawn.append(free[layer].pop(rng.randrange(len(free[layer]))))
        else:
            short += 1
    rest = [head for layer in layers for head in free[layer]]
    if short > len(rest):
        raise DataError(
            f"{len(heads)} heads are ablated in layers {layers}, which have only {len(heads) - short + len(rest)} others: "
            "too few to draw as many random heads as a control"
        )
    return drawn + rng.sample(rest, short)
