"""Where the residual stream ends: the decoder's final norm and the unembedding, frozen for attribution.

Direct logit attribution needs the final norm as a linear map. An RMS norm scales a vector x by
g / rms(x) per dimension (g the weight, or 1 + weight in Gemma's form); with rms taken from the
actual final residual, the same map sends each component of the residual to its share of the
normalised vector, and the shares add up exactly. Which form a norm takes is read from what the
module computes, never from its class name; a norm of another form is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError
from .sites import decoder_layers


@dataclass(frozen=True)
class Unembedding:
    norm: nn.Module  # the decoder's final norm
    weight: torch.Tensor  # (vocab, hidden)
    bias: torch.Tensor | None
    softcap: float | None  # logits = softcap * tanh(logits / softcap) where the family caps them


def unembedding(model: nn.Module) -> Unembedding:
    """The final norm (the sibling of the decoder's layers) and the language-model head."""
    layers = decoder_layers(model)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    norm = None
    for candidate in (decoder, getattr(decoder, "model", None)):
        if candidate is not None and getattr(candidate, "layers", None) is layers:
            norm = getattr(candidate, "norm", None)
    head = model.get_output_embeddings()
    if not isinstance(norm, nn.Module) or not isinstance(head, nn.Linear):
        raise DataError(f"{type(model).__name__}: no final norm and language-model head that SAV Explorer can find")
    config = model.config.get_text_config()
    softcap = getattr(config, "final_logit_softcapping", None) or None
    return Unembedding(norm, head.weight, head.bias, softcap)


def frozen_norm_scale(norm: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """The per-dimension scale (..., hidden) by which `norm` multiplies each final residual vector, so that
    norm(final) = scale * final and norm(part) is read as scale * part for every part of it."""
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None) or 1e-6
    weight = getattr(norm, "weight", None)
    final = final.float()
    with torch.no_grad():
        actual = norm(final.to(next(norm.parameters(), final).dtype)).float()
    rms = final.pow(2).mean(-1, keepdim=True).add(eps).sqrt()
    candidates = [torch.ones_like(final[..., :1])] if weight is None else [weight.float(), 1 + weight.float()]
    for gain in candidates:
        scale = gain / rms
        if torch.allclose(scale * final, actual, atol=1e-4, rtol=1e-3):
            return scale
    raise DataError(f"the final norm ({type(norm).__name__}) is not an RMS norm: its scale cannot be frozen for attribution")
