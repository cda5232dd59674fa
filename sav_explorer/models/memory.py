"""A memory guard: the activation memory a forward pass will need, estimated before it runs.

    estimate = activation_estimate(loaded, inputs, deepest_layer=29)   # from the processor's output
    guard = MemoryGuard(budget_bytes)      # refuses, or splits a batch, when the estimate is over

Weights are already resident; what a request adds is activations, which grow with the batch, the
sequence (mostly image tokens) and, for attention, with the square of the sequence. The estimate
is an upper bound of the largest layer's working set, from the model's configuration:

- decoder: batch x sequence x (4 hidden + 3 intermediate) values, plus two attention matrices
  batch x heads x sequence^2 (scores and probabilities: CPU attention materialises both), plus
  the residual stream of every layer up to the deepest one read (it is kept while the pass runs);
- vision tower: patches x (4 hidden + 2 intermediate) values, plus two heads x patches-per-view^2
  matrices for each view's attention.

`benchmarks/bench_real_sizes.py` prints the estimate beside the measured peak on real-size models.
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


def activation_estimate(loaded, inputs: dict, deepest_layer: int | None = None) -> ActivationEstimate:
    """See the module's doc; `deepest_layer` is the last layer the pass runs (capture stops there)."""
    config = loaded.model.config
    text = config.get_text_config()
    size = torch.finfo(loaded.model.dtype).bits // 8 if loaded.model.dtype.is_floating_point else 4
    batch, sequence = inputs["input_ids"].shape
    hidden = _get(text, "hidden_size")
    intermediate = _get(text, "intermediate_size", default=4 * hidden)
    heads = _get(text, "num_attention_heads", default=1)
    layers = (deepest_layer + 1) if deepest_layer is not None else loaded.n_layers
    decoder = batch * sequence * (4 * hidden + 3 * intermediate) + 2 * batch * heads * sequence * sequence
    residuals = layers * batch * sequence * hidden
    vision_config = getattr(config, "vision_config", None)
    patches = vision = 0
    pixels = inputs.get("pixel_values")
    if vision_config is not None and isinstance(pixels, torch.Tensor):
        patch = _get(vision_config, "patch_size", default=14)
        temporal = _get(vision_config, "temporal_patch_size", default=1)
        patches = pixels.numel() // (3 * patch * patch * temporal)
        image = _get(vision_config, "image_size")
        per_view = (image // patch) ** 2 if image else patches  # Qwen-style towers attend over a whole image
        v_hidden = _get(vision_config, "embed_dim", "hidden_size")  # Qwen2-VL's hidden_size is its merger's output
        v_intermediate = _get(vision_config, "intermediate_size", default=_get(vision_config, "mlp_ratio", default=4) * v_hidden)
        v_heads = _get(vision_config, "num_attention_heads", "num_heads", default=1)
        views = max(1, patches // max(1, per_view))
        vision = patches * (4 * v_hidden + 2 * v_intermediate) + 2 * views * v_heads * per_view * per_view
    return ActivationEstimate(int((max(decoder, vision) + residuals) * size), sequence, batch, patches)


def default_budget_bytes(device: str | torch.device | None) -> int:
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


class ActivationBudgetError(DataError):
    """One example alone needs more activation memory than the budget allows."""


def check_fits(estimate: ActivationEstimate, budget: int, what: str) -> None:
    """Refuses one example whose estimate is over the budget, saying how much and what to change."""
    if estimate.bytes > budget:
        raise ActivationBudgetError(
            f"{what} needs {estimate.describe()}, more than the activation-memory budget of {budget / GB:.1f} GB; "
            "give it fewer image tokens (--max-image-tokens, or a smaller image) or raise the budget (--max-activation-gb)"
        )
