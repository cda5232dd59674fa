"""How an example becomes model input: one `Encoding`, one `encode`, one batching loop.

    encoding = Encoding(question="what color is the shape?", max_pixels=448 * 448, max_image_tokens=256)
    for batch in batches(loaded, examples, encoding, RunOptions(batch_size=8)):
        loaded.model(**batch.model_inputs(), use_cache=False)   # batch.last, batch.image_tokens, batch.position_keys()

An `Encoding` is born where a classifier is fitted (the page's settings, the CLI's flags) and
saved in its manifest; every later pass on that classifier (classify, evaluate, the curve, the
lens and class averages, support means, the model's own answers, ablation, Ray, the atlas) reads
the same value, so one image becomes the same `input_ids` and `pixel_values` in each of them.
`encode` is the only caller of the processor (`models.prompts`); `Batch.model_inputs` is what every
pass hands the model (image features from `image_cache`); `RunOptions` holds what changes how a
pass runs but never what the model reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import torch

from .checks import check_question
from .data import Example
from .errors import DataError
from .image_cache import model_inputs
from .models import LoadedModel, build_prompt
from .models.budget import BudgetSettings, budget_settings
from .models.memory import GB, activation_estimate, check_fits, default_memory_limit
from .models.prompts import processor_inputs
from .models.tokens import count_image_tokens, image_token_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoding:
    """Everything that decides what the model reads from an example (saved with a classifier)."""

    question: str | None = None  # asked of examples that carry no question of their own
    max_pixels: int | None = None  # larger images are scaled down to this many pixels first (aspect kept); None: as given
    max_image_tokens: int | None = None  # image tokens per image, in the family's processor settings (`models.budget`)
    video_frames: int | None = None  # frames sampled from each video; None: the processor's own sampling

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_image_tokens", "video_frames"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise DataError(f"{name.replace('_', ' ')} must be a whole number of at least 1 or none; got {value!r}")
        if self.question is not None and not isinstance(self.question, str):
            raise DataError(f"the question must be text or none; got {type(self.question).__name__}")
        check_question(self.question)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, raw: object) -> Encoding:
        """The encoding a manifest recorded; unknown keys are refused, so that nothing is silently dropped."""
        if not isinstance(raw, dict):
            raise DataError(f"an encoding is a JSON object; got {type(raw).__name__}")
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise DataError(f"an encoding has no setting {sorted(unknown)[0]!r}")
        return cls(**raw)

    def overridden(self, **changes) -> tuple[Encoding, list[str]]:
        """This encoding with the settings a user gave explicitly (None: keep the fit's), and a line for
        each that changes what the model reads, to show beside the result."""
        given = {name: value for name, value in changes.items() if value is not None}
        result = replace(self, **given)
        notes = [
            f"{name.replace('_', ' ')} {_shown(value)} instead of the fit's {_shown(getattr(self, name))}: "
            "the model reads these examples differently from the support set"
            for name, value in given.items()
            if value != getattr(self, name)
        ]
        return result, notes

    def describe(self) -> str:
        """One line for the page, the CLI and the report."""
        parts = [
            f"question {self.question!r}" if self.question else "each example's own question",
            f"images scaled to at most {self.max_pixels:,} pixels" if self.max_pixels else "images as given",
            f"at most {self.max_image_tokens:,} image tokens each" if self.max_image_tokens else "the processor's own image tokens",
        ]
        if self.video_frames:
            parts.append(f"{self.video_frames} frames per video")
        return "; ".join(parts)


def _shown(value) -> str:
    return "none" if value is None else f"{value:,}" if isinstance(value, int) else repr(value)


class PositionKey(NamedTuple):
    """What one position of a prompt is, so that mean ablation can match positions across prompts:
    ("start", offset from the first real token) before the first image, ("image", index in the image
    block), ("end", offset from the last real token) after it; ("image-all", 0) and ("text-all", 0) pool them."""

    kind: str
    index: int = 0


LAST_PROMPT_POSITION = PositionKey("end", 0)
TEXT_ALL = PositionKey("text-all")
IMAGE_ALL = PositionKey("image-all")


def position_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token: int | None) -> list[PositionKey | None]:
    """What each position of one row is (see `PositionKey`); None for padding."""
    real = attention_mask.bool().tolist()
    ids = input_ids.tolist()
    positions = [p for p, r in enumerate(real) if r]
    if not positions:
        return [None] * len(ids)
    first, last = positions[0], positions[-1]
    images = [p for p in positions if ids[p] == image_token]
    first_image = images[0] if images else None
    image_index = {p: i for i, p in enumerate(images)}
    keys: list[PositionKey | None] = []
    for p, is_real in enumerate(real):
        if not is_real:
            keys.append(None)
        elif p in image_index:
            keys.append(PositionKey("image", image_index[p]))
        elif first_image is None or p < first_image:
            keys.append(PositionKey("start", p - first))
        else:
            keys.append(PositionKey("end", last - p))
    return keys


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token of each row, for left or right padding: (batch,)."""
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.flip(1).int().argmax(1)


class AnswerSpan(NamedTuple):
    """Where an answer appended to a prompt lies in its row, counted from the row's end (rows are left-padded):
    `length` tokens of answer, then `after` tokens the processor adds after any text (PaliGemma's "\\n")."""

    length: int
    after: int = 0


@dataclass
class Batch:
    """Examples as the model reads them: the processor's inputs and what every pass needs to know of them."""

    examples: list[Example]
    images: list[list]  # per example, its images as the processor got them (PIL, scaled) or VideoFiles
    prompts: list[str]
    inputs: dict  # the processor's output, tensors on the model's device
    image_tokens: list[int] | None  # per row, positions that receive image features (None: the family names no image token)
    image_token: int | None  # the id of those positions
    answer_spans: list[AnswerSpan] = field(default_factory=list)  # per row, where an appended answer lies (`encode(answers=...)`)
    loaded: LoadedModel | None = field(default=None, repr=False)  # the model it was encoded for
    encoding: Encoding | None = field(default=None, repr=False)
    _model_inputs: dict | None = field(default=None, repr=False)

    def model_inputs(self) -> dict:
        """What every pass hands the model: the processor's inputs with each example's image features
        (from the loaded model's cache, or computed from that example alone) in place of its pixels."""
        if self._model_inputs is None:
            self._model_inputs = model_inputs(self.loaded, self)
        return self._model_inputs

    def single(self, row: int) -> Batch:
        """One row's example encoded alone (the input its image features are computed from)."""
        return encode(self.loaded, [self.examples[row]], self.encoding)

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]  # (batch, seq)

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]  # (batch, seq)

    @property
    def last(self) -> torch.Tensor:
        """Each row's last real position: (batch,), on the CPU."""
        return last_token_index(self.attention_mask.cpu())

    def __len__(self) -> int:
        return len(self.examples)

    def position_keys(self) -> list[list[PositionKey | None]]:
        """Per row, what each position is (`PositionKey`); an appended answer's tokens (and what the processor
        put after them) count as generated ones (the last prompt position's key), as when the model answers."""
        rows = []
        for row, (ids, mask) in enumerate(zip(self.input_ids.cpu(), self.attention_mask.cpu())):
            n_answer = sum(self.answer_spans[row]) if self.answer_spans else 0
            prompt_mask = torch.cat([mask[: len(mask) - n_answer], torch.zeros(n_answer, dtype=mask.dtype)])
            keys = position_keys(ids, prompt_mask, self.image_token)
            rows.append(keys[: len(keys) - n_answer] + [LAST_PROMPT_POSITION] * n_answer)
        return rows


def budget_of(loaded: LoadedModel, encoding: Encoding) -> BudgetSettings | None:
    """The processor settings that keep each image within the encoding's image-token budget."""
    return budget_settings(loaded, encoding.max_image_tokens)


def encode(loaded: LoadedModel, examples: Sequence[Example], encoding: Encoding, answers: Sequence[str] | None = None) -> Batch:
    """The one way from examples to model input: images opened and scaled to `max_pixels`, each
    example's question (else the encoding's) in the family's prompt, the processor run under the
    image-token budget and video sampling. `answers` appends one answer per row after the prompt
    (scoring a label's likelihood); their token counts come from the processor's own ids."""
    examples = list(examples)
    if not examples:
        raise DataError("nothing to encode: no examples")
    images = [example.load_images(encoding.max_pixels) for example in examples]
    prompts = [build_prompt(loaded.processor, example.question_or(encoding.question), row) for example, row in zip(examples, images)]
    settings = budget_of(loaded, encoding)
    token = image_token_id(loaded)
    inputs = processor_inputs(loaded, images, prompts, settings, encoding.video_frames)
    spans: list[AnswerSpan] = []
    if answers is not None:
        if len(answers) != len(examples):
            raise ValueError(f"expected one answer per example ({len(examples)}); got {len(answers)}")
        texts = [prompt + answer if prompt[-1:].isspace() else f"{prompt} {answer}" for prompt, answer in zip(prompts, answers)]
        with_answers = processor_inputs(loaded, images, texts, settings, encoding.video_frames)
        spans = [_answer_span(p, a) for p, a in zip(_real_ids(inputs), _real_ids(with_answers))]
        inputs, prompts = with_answers, texts
    _check_context(loaded, inputs, examples)
    counts = count_image_tokens(loaded, inputs["input_ids"]) if token is not None else None
    return Batch(examples, images, prompts, inputs, counts, token, spans, loaded, encoding)


def _check_context(loaded: LoadedModel, inputs: dict, examples: Sequence[Example]) -> None:
    """Refuses an input longer than the model's context, naming both lengths."""
    context = getattr(loaded.model.config.get_text_config(), "max_position_embeddings", None)
    lengths = inputs["attention_mask"].sum(1).tolist()
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if isinstance(context, int) and lengths[longest] > context:
        raise DataError(
            f"{examples[longest].name} is {int(lengths[longest]):,} tokens long with its question and images; "
            f"the model reads at most {context:,}: shorten the question or use fewer image tokens"
        )


def _real_ids(inputs: dict) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"].cpu(), inputs["attention_mask"].cpu())]


def _answer_span(prompt: list[int], with_answer: list[int]) -> AnswerSpan:
    """The answer's tokens, found from the processor's own ids: what the prompt + answer row holds after
    the beginning it shares with the prompt alone and before the end it shares with it (a processor may
    append tokens after any text: PaliGemma's "\\n")."""
    shared = 0
    while shared < min(len(prompt), len(with_answer)) and prompt[shared] == with_answer[shared]:
        shared += 1
    after = 0
    while after < len(prompt) - shared and after < len(with_answer) - shared and prompt[-1 - after] == with_answer[-1 - after]:
        after += 1
    length = len(with_answer) - shared - after
    if length < 1:
        raise DataError("an answer added no tokens to the prompt")
    return AnswerSpan(length, after)


@dataclass(frozen=True)
class RunOptions:
    """How a pass runs, apart from what the model reads: never saved, never changes a result."""

    batch_size: int = 8
    on_batch: Callable[[int, int], None] | None = None  # (examples done, total) after each batch
    should_stop: Callable[[], bool] | None = None  # asked before each batch; True ends the pass with `Cancelled`
    memory_limit: int | None = None  # activation bytes a forward pass may need (`models.memory`); None: half the free memory
    max_request_image_tokens: int | None = None  # image tokens over the whole request; the batch that passes it is refused

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise DataError(f"batch size must be at least 1; got {self.batch_size}")


class Cancelled(Exception):
    """The user stopped a pass between batches."""


def batches(
    loaded: LoadedModel, examples: Sequence[Example], encoding: Encoding, run: RunOptions | None = None, *, logits_positions: int = 1
) -> Iterator[Batch]:
    """`encode` over the examples in batches of `run.batch_size`: asks `should_stop` before each,
    splits a batch estimated over the memory limit into single examples (refusing one over it alone),
    refuses the batch that passes the request's image-token cap before the model runs it, and reports
    progress once a batch's work is done. `logits_positions`: the tokens a pass appends and scores
    (likelihood scoring), which the memory estimate counts."""
    run = run or RunOptions()
    limit = run.memory_limit if run.memory_limit is not None else default_memory_limit(loaded.input_device)
    tokens_so_far = 0
    for start in range(0, len(examples), run.batch_size):
        if run.should_stop is not None and run.should_stop():
            raise Cancelled(f"cancelled after {start} of {len(examples)} examples")
        chunk = list(examples[start : start + run.batch_size])
        for batch in _within_memory(loaded, encode(loaded, chunk, encoding), encoding, limit, logits_positions):
            tokens_so_far += sum(batch.image_tokens or [])
            if run.max_request_image_tokens is not None and tokens_so_far > run.max_request_image_tokens:
                raise DataError(
                    f"this request needs more than {run.max_request_image_tokens:,} image tokens, the cap here "
                    f"(reached after {start + len(chunk)} of {len(examples)} examples): use fewer or smaller images"
                )
            yield batch
        if run.on_batch is not None:
            run.on_batch(min(start + run.batch_size, len(examples)), len(examples))


def _within_memory(loaded: LoadedModel, batch: Batch, encoding: Encoding, limit: int, logits_positions: int) -> list[Batch]:
    """The batch, or its examples one at a time when the whole is estimated over `limit` (`models.memory`)."""
    if not limit:
        return [batch]
    estimate = activation_estimate(loaded, batch.inputs, logits_positions)
    if estimate.bytes <= limit:
        return [batch]
    if len(batch) > 1:
        logger.warning(
            "a batch of %d needs %s, over the %.1f GB activation-memory limit: running its examples one at a time",
            len(batch),
            estimate.describe(),
            limit / GB,
        )
    parts = [encode(loaded, [example], encoding) for example in batch.examples] if len(batch) > 1 else [batch]
    for part in parts:
        check_fits(activation_estimate(loaded, part.inputs, logits_positions), limit, part.examples[0].name)
    return parts
