"""One construct for every way of touching a running model: read, edit, stop (as baukit's TraceDict).

    trace = Trace(loaded, stop=True).on_heads(3, lambda hidden: kept.append(hidden[:, -1]))
    with trace:
        loaded.model(**batch.model_inputs(), use_cache=False)    # stops after layer 3's heads; the block swallows the stop

A hook function gets a tensor and returns None (read) or a tensor of the same shape (edit):

- `on_heads(layer, fn)`: the input of the layer's attention output projection, every head's output
  side by side: (batch, seq, n_heads * head_dim). What SAV reads, what ablation and steering edit.
- `on_attention(layer, fn)`: the layer's attention weights (batch, n_heads, q_len, k_len), read only;
  the decoder runs eager attention inside the block (SDPA returns no weights), restored on exit.
- `on_values(layer, fn)`: the layer's `v_proj` output (batch, k_len, n_kv_heads * head_dim), read only.
- `on_attention_output(layer, fn)` / `on_mlp(layer, fn)`: what the attention block and the MLP add
  to the residual stream: (batch, seq, hidden).
- `on_residual(layer, fn)`: the residual stream after the layer: (batch, seq, hidden).
- `on_layer_input(layer, fn)`: the residual stream entering the layer (batch, seq, hidden), read only;
  layer 0's is the embeddings as the decoder got them (scaled, images merged in).
- `on_inputs(fn)`: `fn(input_ids, attention_mask)` before every forward pass of the whole model
  (generation calls it once per token).

With `stop=True` the forward pass ends right after the deepest hook (the rest of the decoder and the
language-model head never run); only this trace's stop is swallowed. Hooks are removed, and the
attention implementation restored, in `finally`, whatever happened inside the block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import DataError
from .models import LoadedModel, decoder_layers

# The order in which a layer's hook points run in a forward pass: the stop goes after the last one needed.
_STAGES = ("input", "values", "heads", "attention", "attention_output", "mlp", "residual")


class _StopForward(Exception):
    """Raised after a trace's deepest hook; swallowed by that trace only."""

    def __init__(self, trace: Trace):
        super().__init__("forward pass stopped by a trace")
        self.trace = trace


@dataclass(frozen=True)
class _Point:
    layer: int
    stage: str

    @property
    def rank(self) -> tuple[int, int]:
        return self.layer, _STAGES.index(self.stage)


class Trace:
    """Hooks on a loaded model for the duration of a `with` block (see the module's doc)."""

    def __init__(self, loaded: LoadedModel, stop: bool = False):
        self.loaded = loaded
        self.stop = stop
        self._functions: dict[_Point, list[Callable]] = {}
        self._input_functions: list[Callable] = []
        self._handles: list = []
        self._attention_configs: dict[int, tuple] = {}

    # ------------------------------------------------------------------ what to touch
    def on_heads(self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Trace:
        return self._add(layer, "heads", fn)

    def on_attention(self, layer: int, fn: Callable[[torch.Tensor], None]) -> Trace:
        return self._add(layer, "attention", fn)

    def on_values(self, layer: int, fn: Callable[[torch.Tensor], None]) -> Trace:
        return self._add(layer, "values", fn)

    def on_attention_output(self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Trace:
        return self._add(layer, "attention_output", fn)

    def on_mlp(self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Trace:
        return self._add(layer, "mlp", fn)

    def on_residual(self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Trace:
        return self._add(layer, "residual", fn)

    def on_layer_input(self, layer: int, fn: Callable[[torch.Tensor], None]) -> Trace:
        return self._add(layer, "input", fn)

    def on_inputs(self, fn: Callable[[torch.Tensor, torch.Tensor], None]) -> Trace:
        self._input_functions.append(fn)
        return self

    def _add(self, layer: int, stage: str, fn: Callable) -> Trace:
        if self._handles:
            raise RuntimeError("add hooks before the trace's block starts")
        self._functions.setdefault(_Point(layer, stage), []).append(fn)
        return self

    # ------------------------------------------------------------------ the block
    def __enter__(self) -> Trace:
        try:
            deepest = max(self._functions, key=lambda point: point.rank) if self._functions else None
            for point, functions in self._functions.items():
                self._register(point, functions, stop=self.stop and point == deepest)
            if self._input_functions:
                self._handles.append(self.loaded.model.register_forward_pre_hook(self._watch_inputs, with_kwargs=True))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        self._remove()
        return isinstance(exc, _StopForward) and exc.trace is self

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for config, implementation in self._attention_configs.values():
            config._attn_implementation_internal = implementation
        self._attention_configs.clear()

    def _watch_inputs(self, module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            return
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(input_ids) if mask is None else mask[:, : input_ids.shape[1]]
        for fn in self._input_functions:
            fn(input_ids, mask)

    def _register(self, point: _Point, functions: list[Callable], stop: bool) -> None:
        def run(value: torch.Tensor) -> torch.Tensor | None:
            edited = None
            for fn in functions:
                result = fn(value if edited is None else edited)
                if result is not None:
                    edited = result
            if stop:
                raise _StopForward(self)
            return edited

        layer = point.layer
        if point.stage == "heads":
            site = self._site(layer)

            def pre_hook(module, args):
                edited = run(args[0])
                return None if edited is None else (edited, *args[1:])

            self._handles.append(site.module.register_forward_pre_hook(pre_hook))
            return
        owner = decoder_layers(self.loaded.model)[layer]
        if point.stage == "input":

            def input_hook(module, args, kwargs):
                run(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

            self._handles.append(owner.register_forward_pre_hook(input_hook, with_kwargs=True))
            return
        attention = getattr(owner, "self_attn", None) or getattr(owner, "cross_attn", None)
        if point.stage == "values":
            if not hasattr(attention, "v_proj"):
                raise DataError(f"layer {layer}'s attention has no v_proj: its values cannot be read in this model")
            self._handles.append(attention.v_proj.register_forward_hook(lambda module, args, output: run(output)))
            return
        if point.stage == "attention":
            config = attention.config
            self._attention_configs.setdefault(id(config), (config, config._attn_implementation_internal))
            config._attn_implementation_internal = "eager"

            def weights_hook(module, args, output):
                if output[1] is None:
                    raise RuntimeError(f"layer {layer} returned no attention weights even with eager attention")
                run(output[1])

            self._handles.append(attention.register_forward_hook(weights_hook))
            return
        module = {"attention_output": attention, "mlp": getattr(owner, "mlp", None), "residual": owner}[point.stage]
        if not isinstance(module, nn.Module):
            raise DataError(f"layer {layer} has no {point.stage.replace('_', ' ')} module that SAV Explorer can find")
        self._handles.append(module.register_forward_hook(_first_output_hook(run)))

    def _site(self, layer: int):
        for site in self.loaded.sites:
            if site.layer == layer:
                return site
        raise DataError(f"layer {layer} has no attention heads that SAV Explorer can read")


def _first_output_hook(run: Callable) -> Callable:
    """A forward hook for modules that return a tensor or a tuple whose first item is the hidden states."""

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        edited = run(hidden)
        if edited is None:
            return None
        return (edited, *output[1:]) if isinstance(output, tuple) else edited

    return hook
