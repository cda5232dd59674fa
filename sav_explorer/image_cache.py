"""Image features computed once per example and remembered: a pass over images the model has seen costs only the decoder.

    loaded = load_model()                                 # carries an ImageFeatureCache (SAV_IMAGE_CACHE_MB)
    batch = encode(loaded, examples, encoding)
    loaded.model(**batch.model_inputs(), use_cache=False) # the vision tower runs only for examples not seen before
    loaded.image_cache.since(before).describe()           # "20 of 20 images from the cache"

Every family but Mllama takes `mm_encoder_outputs` in its forward: the output of its image-feature
step (`get_image_features`, the projector included) in place of `pixel_values`. Each example's
features are computed from that example alone, so they never depend on which examples share its
batch, and the cache can hand them back bit for bit to any later pass (capture, lens, class
averages, support means, answers, ablation, steering, patching). With the cache off (a limit of 0)
the features are computed the same way and not kept. Kept per example: the `pooler_output` (and
Qwen3-VL's `deepstack_features`, which its decoder also reads), never the vision tower's hidden
states. Keyed by the model (id, revision, dtype, device) and a hash of the example's encoder inputs
(pixel tensors and grid metadata, as the encoding's image settings produced them), not a file name.
Batches with video, and Mllama (its images enter by cross-attention), run as the processor gave them.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import DataError
from .models import LoadedModel

CACHE_ENV = "SAV_IMAGE_CACHE_MB"
DEFAULT_SHARE = 0.05  # of the machine's memory
DEFAULT_CEILING = 2 * 1024**3
MB = 1024**2
SESSION_DEFAULT = 256 * MB  # each visitor's, in the app
_KEPT = ("pooler_output", "deepstack_features")  # what a family's decoder reads of its image features
_VIDEO_INPUT = "pixel_values_videos"  # image features cannot go beside a video's pixels


def default_cache_bytes() -> int:
    """`$SAV_IMAGE_CACHE_MB` (0 turns the cache off), else 5 % of the machine's memory, at most 2 GiB."""
    raw = os.environ.get(CACHE_ENV)
    if raw is not None and raw.strip():
        return megabytes(raw, CACHE_ENV)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 1024**3
    return int(min(DEFAULT_CEILING, total * DEFAULT_SHARE))


def session_cache_bytes() -> int:
    """A visitor session's bound in the app: `$SAV_IMAGE_CACHE_MB`, else 256 MB (at most the process default)."""
    if os.environ.get(CACHE_ENV, "").strip():
        return default_cache_bytes()
    return min(SESSION_DEFAULT, default_cache_bytes())


def megabytes(raw: str | float, name: str) -> int:
    """A size given in MB (a flag's or an environment variable's), as bytes; refuses what is not a number ≥ 0."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise DataError(f"{name} is a size in MB (0 turns the image cache off); got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise DataError(f"{name} is a size in MB of at least 0; got {raw!r}")
    return int(value * MB)


@dataclass(frozen=True)
class CacheCount:
    """Images passes took from the cache (`reused`), had the vision tower encode for it (`encoded`),
    or gave the model as pixels because the family or the input cannot be cached (`uncached`)."""

    reused: int = 0
    encoded: int = 0
    uncached: int = 0
    reason: str = ""  # why the `uncached` ones were

    def describe(self) -> str:
        """ "20 of 20 images from the cache", the reason where none could be cached, or "" where no image was read."""
        total = self.reused + self.encoded
        if total:
            return f"{self.reused} of {total} image{'s' if total != 1 else ''} from the cache"
        return self.reason if self.uncached else ""


@dataclass
class _Entry:
    output_type: type
    fields: dict  # name -> tensor, or tuple of tensors (one per image), or list of those (one per layer)
    n_images: int
    nbytes: int


class ImageFeatureCache:
    """Per-example image features, least recently used dropped first beyond `max_bytes` (0: keep nothing).

    Held by a `LoadedModel` (one per process in the CLI, one per visitor session in the app); it
    forgets everything when it meets another model object than the one it holds features of."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = default_cache_bytes() if max_bytes is None else int(max_bytes)
        if self.max_bytes < 0:
            raise DataError(f"the image cache's size must be at least 0 bytes; got {max_bytes}")
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._model: weakref.ref | None = None
        self.bytes = 0
        self.reused = 0
        self.encoded = 0
        self.uncached = 0
        self.reason = ""

    def __len__(self) -> int:
        return len(self._entries)

    def count(self) -> CacheCount:
        return CacheCount(self.reused, self.encoded, self.uncached, self.reason)

    def since(self, before: CacheCount) -> CacheCount:
        """What the passes since `before` (a `count()` taken before them) took from the cache."""
        return CacheCount(self.reused - before.reused, self.encoded - before.encoded, self.uncached - before.uncached, self.reason)

    def _pass_uncached(self, n_images: int, reason: str) -> None:
        with self._lock:
            self.uncached += n_images
            self.reason = reason

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def _bind(self, model: torch.nn.Module) -> None:
        """Forgets every entry when asked about another model object (another model, or the same one reloaded)."""
        with self._lock:
            if self._model is None or self._model() is not model:
                self._entries.clear()
                self.bytes = 0
                self._model = weakref.ref(model)

    def _get(self, key: tuple) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.reused += entry.n_images
            return entry

    def _put(self, key: tuple, entry: _Entry) -> None:
        with self._lock:
            self.encoded += entry.n_images
            if entry.nbytes > self.max_bytes:
                return
            old = self._entries.pop(key, None)
            self.bytes -= old.nbytes if old else 0
            self._entries[key] = entry
            self.bytes += entry.nbytes
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped.nbytes


def caches_images(loaded: LoadedModel) -> bool:
    """Whether the family's forward takes precomputed image features (all supported families but Mllama)."""
    return "mm_encoder_outputs" in inspect.signature(loaded.model.forward).parameters


def uncached_reason(loaded: LoadedModel) -> str:
    """Why a family's images are never cached; empty where they are."""
    if caches_images(loaded):
        return ""
    return f"images not cached: {type(loaded.model).__name__} reads images through cross-attention, not as input features"


def model_inputs(loaded: LoadedModel, batch) -> dict:
    """What a pass hands the model for `batch` (an `encoding.Batch`): the processor's inputs, with each
    example's image features, from the cache or computed from that example alone, in place of `pixel_values`."""
    inputs = batch.inputs
    cache = loaded.image_cache
    if "pixel_values" not in inputs:
        return inputs
    reason = uncached_reason(loaded) or ("images not cached: a batch with video reads its pixels" if _VIDEO_INPUT in inputs else "")
    if reason:
        if cache is not None:
            cache._pass_uncached(sum(len(images) for images in batch.images), reason)
        return inputs
    if cache is not None:
        cache._bind(loaded.model)
    singles = [batch] if len(batch) == 1 else [batch.single(row) for row in range(len(batch))]
    features = [_features_of(loaded, single.inputs, len(images), cache) for single, images in zip(singles, batch.images)]
    present = [entry for entry in features if entry is not None]
    device = loaded.input_device
    joined = present[0].output_type(**{name: _join([entry.fields[name] for entry in present], device) for name in present[0].fields})
    given = {name: value for name, value in inputs.items() if name != "pixel_values"}
    return {**given, "mm_encoder_outputs": {"image": joined}}


def _features_of(loaded: LoadedModel, inputs: dict, n_images: int, cache: ImageFeatureCache | None) -> _Entry | None:
    """One example's features: the cache's entry for its encoder inputs, else the vision tower's (then kept)."""
    encoder = _encoder_inputs(loaded, inputs)
    if "pixel_values" not in encoder:
        return None
    key = (loaded.model_id, loaded.revision, str(loaded.model.dtype), str(loaded.input_device), _digest(encoder))
    entry = cache._get(key) if cache is not None else None
    if entry is not None:
        return entry
    with torch.no_grad():
        output = loaded.model.base_model.get_image_features(**encoder, return_dict=True)
    keep = "cpu" if cache is not None and loaded.input_device.type != "cpu" else None
    fields = {name: _owned(getattr(output, name), keep) for name in _KEPT if getattr(output, name, None) is not None}
    entry = _Entry(type(output), fields, n_images, sum(_nbytes(value) for value in fields.values()))
    if cache is not None:
        cache._put(key, entry)
    return entry


def _encoder_inputs(loaded: LoadedModel, inputs: dict) -> dict:
    """The processor outputs the family's image-feature step takes (pixels and their grids)."""
    parameters = inspect.signature(loaded.model.base_model.get_image_features).parameters
    return {name: inputs[name] for name in parameters if name in inputs and name != "kwargs"}


def _digest(encoder: dict) -> str:
    """A hash of the encoder inputs' names, dtypes, shapes and bytes."""
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(encoder):
        value = encoder[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(memoryview(flat.view(torch.uint8).numpy()))
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def _owned(value, device: str | None):
    """A copy with storage of its own (a view would keep the whole batch's tensor alive), on `device` if given."""
    if isinstance(value, torch.Tensor):
        return (value.detach().to(device) if device else value.detach()).clone()
    return type(value)(_owned(item, device) for item in value)


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_nbytes(item) for item in value)


def _join(values: Sequence, device: torch.device):
    """Examples' features as one batch's: tensors stacked along the first dimension, per-image tuples
    concatenated, per-layer lists (Qwen3-VL's deepstack) joined layer by layer."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([value.to(device) for value in values])
    if all(isinstance(item, torch.Tensor) for item in first):
        return tuple(item.to(device) for value in values for item in value)
    return [_join([value[layer] for value in values], device) for layer in range(len(first))]
