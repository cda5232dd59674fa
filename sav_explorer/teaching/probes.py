"""The read-outs and hooks that teach the model from the inside, used only in training.

`VisionProbe`: linear probes on the vision tower (or the projector) that teach it what and where
each object is. `PointerSupervision` and `WordPointer`: hooks on early decoder layers that teach
heads where to look (targets from `targets`), the word pointer with a linear probe of its own.
None of them is saved with the model.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlavaForConditionalGeneration

from .batches import QABatch
from .shapes import COLOURS, MAX_OBJECTS, SHAPES, SIZES
from .targets import POINTER_HEADS, POINTER_LAYER, WORD_LAYER, pointer_targets, word_targets

ATTRIBUTE_CLASSES = {"colour": len(COLOURS), "shape": len(SHAPES), "size": len(SIZES), "side": 2, "rank": MAX_OBJECTS}


class VisionProbe(nn.Module):
    """Linear read-outs on the vision tower's last layer, used only to train the tower.

    Each attribute is read per patch and from each object's pooled patches; the second is what
    teaches shape quickly, since no single patch shows a whole shape.
    """

    def __init__(self, width: int, attributes: tuple[str, ...]):
        super().__init__()
        self.attributes = attributes
        for name in attributes:
            setattr(self, name, nn.Linear(width, ATTRIBUTE_CLASSES[name] + 1))
        self.count = nn.Linear(width, MAX_OBJECTS)

    def loss(self, hidden: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cls, patches = hidden[:, 0], hidden[:, 1:]  # (batch, width), (batch, n_patches, width)
        pooled = targets["object_weights"] @ patches  # (batch, MAX_OBJECTS, width)
        losses, accuracy = {}, {}
        for name in self.attributes:
            head = getattr(self, name)
            logits = head(patches).flatten(0, 1)
            target = targets[name].flatten()
            losses[name] = nn.functional.cross_entropy(logits, target)
            on_object = target > 0  # what the decoder reads: each object patch on its own
            accuracy[f"patch_{name}"] = round((logits.argmax(-1)[on_object] == target[on_object]).float().mean().item(), 3)
            object_logits = head(pooled).flatten(0, 1)
            object_target = targets[f"object_{name}"].flatten()
            losses[f"object_{name}"] = nn.functional.cross_entropy(object_logits, object_target, ignore_index=-100)
            real = object_target >= 0
            accuracy[name] = round((object_logits.argmax(-1)[real] == object_target[real]).float().mean().item(), 3)
        count_logits = self.count(cls)
        losses["count"] = nn.functional.cross_entropy(count_logits, targets["count"])
        accuracy["count"] = round((count_logits.argmax(-1) == targets["count"]).float().mean().item(), 3)
        return sum(losses.values()), accuracy


class PointerSupervision:
    """Teaches two heads of one early decoder layer where to look (see `pointer_targets`).

    The answers alone gave one bit per question for binding, and presence and relation stayed at
    chance for thousands of steps; told where to look, a head turns the question into a look-up.
    Needs eager attention, which returns the attention weights.
    """

    def __init__(self, model: LlavaForConditionalGeneration, layer: int = POINTER_LAYER, presence: str = "object"):
        model.set_attn_implementation("eager")
        self.presence = presence
        self.image_token_id = model.config.image_token_index
        self.weights: dict[str, torch.Tensor] = {}
        attention = model.model.language_model.layers[layer].self_attn
        self.hook = attention.register_forward_hook(lambda module, args, output: self.weights.update(attention=output[1]))

    def loss(self, batch: QABatch, object_weights: torch.Tensor) -> tuple[torch.Tensor, float]:
        targets, mask = pointer_targets(batch, object_weights, self.image_token_id, self.presence)
        attention = self.weights["attention"][:, :POINTER_HEADS]  # (batch, heads, seq, seq)
        cross_entropy = -(targets * attention.clamp(min=1e-6).log()).sum(-1)
        on_target = (attention * (targets > 0)).sum(-1)  # the share of attention where it should look
        return cross_entropy[mask].mean(), round(on_target[mask].mean().item(), 3)

    def remove(self) -> None:
        self.hook.remove()


class WordPointer:
    """Teaches one head of `layer` to bring a presence question's shape word to the place that
    answers (see `word_targets`), and a linear probe on the input of the layer above to read it
    there: told only where to look, the head looked at the word at once, but what it brought was
    still hardly readable above it (a probe read the shape at 37 %) and the answers did not move.
    Needs eager attention."""

    def __init__(self, model: LlavaForConditionalGeneration, tokenizer, layer: int = WORD_LAYER, head: int = 4):
        model.set_attn_implementation("eager")
        self.head = head
        self.shape_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(SHAPES)))  # a probe's class i is SHAPES[i]
        self.probe = nn.Linear(model.config.text_config.hidden_size, len(SHAPES))
        self.weights: dict[str, torch.Tensor] = {}
        self.share = 0.0
        layers = model.model.language_model.layers
        self.hooks = [
            layers[layer].self_attn.register_forward_hook(lambda module, args, output: self.weights.update(attention=output[1])),
            layers[layer + 1].register_forward_pre_hook(
                lambda module, args, kwargs: self.weights.update(above=args[0] if args else kwargs["hidden_states"]), with_kwargs=True
            ),
        ]

    def loss(self, batch: QABatch) -> torch.Tensor:
        places = word_targets(batch, set(self.shape_ids.tolist()))
        rows = (places >= 0).nonzero().squeeze(1)
        if not len(rows):
            return torch.zeros(())
        answering = batch.inputs["labels"][rows].ne(-100).int().argmax(1) - 1  # the place before the first answer token
        share = self.weights["attention"][rows, self.head, answering, places[rows]]
        asked = (batch.inputs["input_ids"][rows, places[rows], None] == self.shape_ids).int().argmax(1)
        read = nn.functional.cross_entropy(self.probe(self.weights["above"][rows, answering]), asked)
        self.share = round(share.mean().item(), 3)
        return read - share.clamp(min=1e-6).log().mean()

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
