"""Where a model's heads are: the text decoder's layers and each layer's attention output projection.

    sites = find_attention_sites(model)   # [AttentionSite(layer=0, name='model.language_model.layers.0.self_attn.o_proj', ...)]

The input of `o_proj` holds every head's output side by side (what SAV reads); head sizes come
from the attention module, never from hidden // n_heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import ModelLoadError


@dataclass(frozen=True)
class AttentionSite:
    """One decoder layer's attention output projection; its input holds `n_heads` slices of `head_dim`."""

    layer: int  # index in the decoder's layer list
    name: str  # module path, e.g. "model.language_model.layers.3.self_attn.o_proj"
    n_heads: int
    head_dim: int
    module: nn.Linear = field(repr=False, compare=False)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The text decoder's list of layers, via `get_decoder()` (Llama 4 returns a *ForCausalLM)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for candidate in (decoder, getattr(decoder, "model", None)):
        layers = getattr(candidate, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ModelLoadError(f"{type(model).__name__} has no text decoder with a list of layers that SAV Explorer can find")


def find_attention_sites(model: nn.Module) -> list[AttentionSite]:
    """Every decoder layer's attention output projection, with its head count and size.

    Head size comes from the attention module (`head_dim`), never `hidden_size // num_heads`,
    which is wrong for Gemma 3 and Mistral 3 and varies by layer in Gemma 4. Layers without an
    `o_proj` (Qwen3.5's linear-attention blocks) are skipped; Mllama's cross-attention layers
    are read like the others (they run whenever the input has an image).
    """
    names = {module: name for name, module in model.named_modules()}
    sites = []
    for index, layer in enumerate(decoder_layers(model)):
        attention = getattr(layer, "self_attn", None) or getattr(layer, "cross_attn", None)
        o_proj = getattr(attention, "o_proj", None)
        if not isinstance(o_proj, nn.Linear):
            continue
        head_dim = getattr(attention, "head_dim", None)
        if not isinstance(head_dim, int) or head_dim <= 0:
            raise ModelLoadError(f"layer {index}: attention module {type(attention).__name__} has no integer head_dim; got {head_dim!r}")
        if o_proj.in_features % head_dim:
            raise ModelLoadError(
                f"layer {index}: o_proj input size {o_proj.in_features} is not a multiple of head_dim {head_dim}; "
                "expected n_heads x head_dim"
            )
        sites.append(AttentionSite(index, names[o_proj], o_proj.in_features // head_dim, head_dim, o_proj))
    if not sites:
        raise ModelLoadError(f"{type(model).__name__} has no decoder layer with an attention output projection (o_proj); SAVs need one")
    return sites
