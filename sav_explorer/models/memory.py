"""A memory guard: the activation memory a forward pass will need, estimated before it runs.

    estimate = activation_estimate(loaded, inputs)     # from the processor's output
    check_fits(estimate, limit_bytes, "photo.jpg")      # refuses, naming the GB and what to change

Weights are already resident; what a request adds is activations, which grow with the batch and
the sequence (mostly image tokens). The estimate is 1.5 times the largest layer's working set,
from the model's configuration, plus 256 MB for the runtime's own first-pass allocations:

- decoder: batch x sequence x (4 hidden + 3 intermediate) values;
- vision tower: patches x (4 hidden + 2 intermediate) values;
- with eager attention only, two attention matrices per layer (scores and probabilities: batch x
  heads x sequence^2, and heads x patches-per-view^2 for each view); SDPA and flash attention,
  the default, work in blocks and never hold them;
- the logits a pass keeps: batch x positions x vocabulary, three float32 copies (the logits, in
  float32, their log-softmax); one position for a capture or a generated token, the scored
  answer's tokens for likelihood scoring (`answers`, which also appends them to the sequence).

`encoding.batches` uses it to split or refuse a batch (see there); `benchmarks/bench_real_sizes.py`
prints it beside the measured peak of a fresh process on real-size models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import DataError

GB = 1024**3


@dataclass(frozen=True)
class ActivationEstimate:
    bytes: int
    sequence: int  # tokens per row (padded)
    batch: int
    vision_patches: int  # over the whole batch

    def describe(self) -> str:
        return (
            f"about {self.bytes / GB:.1f} GB of activations ({self.batch} x {self.sequence} tokens, {self.vision_patches:,} vision patches)"
        )


def _get(config, *names, default=0):
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


SAFETY = 1.5  # over the largest layer's working set: the allocator's slack, inputs, the pixel values
RUNTIME = 256 * 1024**2  # the runtime's own allocations in a first pass (kernels' scratch, thread pools): about 200 MB measured


def activation_estimate(loaded, inputs: dict, logits_positions: int = 1) -> ActivationEstimate:
    """See the module's doc; `logits_positions` beyond 1 are tokens appended to every row and scored."""
    config = loaded.model.config
    text = config.get_text_config()
    size = torch.finfo(loaded.model.dtype).bits // 8 if loaded.model.dtype.is_floating_point else 4
    eager = getattr(config, "_attn_implementation", None) == "eager"
    batch, sequence = inputs["input_ids"].shape
    sequence += logits_positions - 1
    hidden = _get(text, "hidden_size")
    intermediate = _get(text, "intermediate_size", default=4 * hidden)
    decoder = batch * sequence * (4 * hidden + 3 * intermediate)
    if eager:
        decoder += 2 * batch * _get(text, "num_attention_heads", default=1) * sequence * sequence
    vision_config = getattr(config, "vision_config", None)
    patches = vision = 0
    pixels = inputs.get("pixel_values")
    if vision_config is not None and isinstance(pixels, torch.Tensor):
        patch = _get(vision_config, "patch_size", default=14)
        temporal = _get(vision_config, "temporal_patch_size", default=1)
        patches = pixels.numel() // (3 * patch * patch * temporal)
        v_hidden = _get(vision_config, "embed_dim", "hidden_size")  # Qwen2-VL's hidden_size is its merger's output
        v_intermediate = _get(vision_config, "intermediate_size", default=_get(vision_config, "mlp_ratio", default=4) * v_hidden)
        vision = patches * (4 * v_hidden + 2 * v_intermediate)
        if eager:
            image = _get(vision_config, "image_size")
            per_view = (image // patch) ** 2 if image else patches  # Qwen-style towers attend over a whole image
            views = max(1, patches // max(1, per_view))
            vision += 2 * views * _get(vision_config, "num_attention_heads", "num_heads", default=1) * per_view * per_view
    logits = 3 * 4 * batch * logits_positions * _get(text, "vocab_size", default=_get(config, "vocab_size"))
    working = max(decoder * size, vision * size, logits)
    return ActivationEstimate(int(SAFETY * working) + RUNTIME, sequence, batch, patches)


def default_memory_limit(device: str | torch.device | None) -> int:
    """Half the memory free now: of the GPU for a CUDA model, else of this machine
    ($SAV_MAX_ACTIVATION_GB overrides)."""
    configured = os.environ.get("SAV_MAX_ACTIVATION_GB")
    if configured:
        return int(float(configured) * GB)
    if device is not None and torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free // 2
    return _available_ram() // 2


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


class MemoryLimitError(DataError):
    """One example alone needs more activation memory than the limit allows."""


def check_fits(estimate: ActivationEstimate, limit: int, what: str) -> None:
    """Refuses one example whose estimate is over the limit, saying how much and what to change."""
    if estimate.bytes > limit:
        raise MemoryLimitError(
            f"{what} needs {estimate.describe()}, more than the activation-memory limit of {limit / GB:.1f} GB; "
            "give it fewer image tokens (--max-image-tokens, or a smaller image) or raise the limit (--max-activation-gb)"
        )
