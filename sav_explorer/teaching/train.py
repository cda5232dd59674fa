"""Trains the bundled teaching model from scratch, in stages, on the shapes world.

    python -m sav_explorer.teaching.train --out assets/shapes-llava            # all five stages (about 2 hours on 2 cores)
    python -m sav_explorer.teaching.train --out DIR --checkpoints CHECKPOINTS    # also saves after every stage
    python -m sav_explorer.teaching.train --out DIR --resume CHECKPOINTS/after-answering   # what follows a checkpoint
    python -m sav_explorer.teaching.train --out DIR --resume CHECKPOINTS/after-binding     # stages 4 and 5 (about 45 min)
    python -m sav_explorer.teaching.train --out DIR --resume CHECKPOINTS/after-drawing     # stage 5 only (about 10 min)

1. Seeing: the vision tower alone learns what each object is. Linear probes read, under every
   patch and from each object's pooled patches, its colour, shape and size, and the count from
   the CLS token. (The language-model loss alone never teaches shape, see DESIGN section 3.)
   Then the projector alone learns to pass it on, the same probes reading the image tokens.
2. Answering: the decoder learns to answer, tower and projector frozen, first questions about
   a single attribute, then every kind of question. Two "pointer" heads
   of an early decoder layer are told where to look (the object asked about, the object being
   described); the answers alone gave one bit per question and left presence, relation and the
   description's order at chance for thousands of steps.
3. Binding: everything trains on a mix heavy in questions that bind attributes, compare places
   or list the objects; the tower trains slowly, its probes still on, and new probes teach every
   patch its object's side of the image and place counting from the left, so that the decoder
   can look a place up instead of sorting.
4. Drawing: half the images are drawn as people draw (`drawn`: canvases of any size and aspect,
   tinted grounds, outlines and scribbles, thick anti-aliased strokes, JPEG). First the tower
   alone learns them from its probes, held by a frozen copy of itself to what it read of the
   renders; then everything trains on questions about drawings and renders alike. Trained on
   renders only, the model read a drawing's colour but guessed its shape.
5. Checking: the decoder alone learns to check both attributes of a presence question. Until
   now it answered yes to every object of the colour named, whatever its shape: the question's
   shape word never reached the place that answers. A head of layer 1 is told to look at that
   word (and a probe above it to read it there), and for presence the pointer heads look one
   attribute each, head 0 at the colour named, head 1 at the shape named (`pointer_targets`).

The run is seeded and writes a folder that `from_pretrained` loads offline, plus
`training_log.json` with the probes', the pointers' and each kind of question's accuracy
during training.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import nn
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from ..models import BUNDLED_MODEL, build_prompt
from .build import PATCH_SIZE, build_config, build_processor
from .drawn import Picture, render_drawn
from .shapes import COLOURS, IMAGE_SIZE, MAX_OBJECTS, QUESTION_KINDS, SHAPES, SIZES, Scene, ShapesWorld, draw_shape

log = logging.getLogger(__name__)

# How often each kind of question is drawn: first questions about one attribute only (with every
# kind mixed in from the start, the decoder of an earlier run was still at chance on colour and
# shape after 1,000 steps; on colour alone it learnt in 100), then every kind, then a mix heavy
# in the kinds that bind and compare objects.
SINGLE_WEIGHTS = {
    "colour": 1.0,
    "shape": 1.0,
    "size": 0.5,
    "position": 0.5,
    "count": 1.0,
    "presence": 0.0,
    "relation": 0.0,
    "describe": 0.0,
}
READING_WEIGHTS = {
    "colour": 1.0,
    "shape": 1.0,
    "size": 1.0,
    "position": 1.0,
    "count": 1.5,
    "presence": 1.5,
    "relation": 1.5,
    "describe": 2.0,
}
BINDING_WEIGHTS = {
    "colour": 0.5,
    "shape": 0.5,
    "size": 0.5,
    "position": 0.5,
    "count": 0.5,
    "presence": 2.0,
    "relation": 2.0,
    "describe": 3.0,
}
# The last stage, on drawings as well as renders: shape is what drawings got wrong, presence
# what the model answered worst.
DRAWING_WEIGHTS = {
    "colour": 1.0,
    "shape": 1.5,
    "size": 0.5,
    "position": 0.5,
    "count": 1.5,
    "presence": 2.5,
    "relation": 1.0,
    "describe": 3.0,
}
# The fifth stage re-teaches presence (see `pointer_targets`) and keeps every other kind in
# practice, descriptions most (with descriptions at 2 and count at 1.5 the description lost a
# little more: on 1,000, 6 object counts and 38 attributes wrong against 5 and 30).
CHECKING_WEIGHTS = {
    "colour": 0.5,
    "shape": 0.5,
    "size": 0.5,
    "position": 0.5,
    "count": 2.0,
    "presence": 3.0,
    "relation": 1.0,
    "describe": 4.0,
}
# Per-patch attributes the tower is taught: what an object is, and where it is (side of the
# image, place counting from the left).
SEEING = ("colour", "shape", "size")
PLACING = ("side", "rank")
# Decoder heads taught where to look (see `pointer_targets`): heads 0 and 1 of the third layer,
# so that the two layers below can bring the question's words to the place that asks.
POINTER_LAYER = 2
POINTER_HEADS = 2
WORD_LAYER = 1
ATTRIBUTE_CLASSES = {"colour": len(COLOURS), "shape": len(SHAPES), "size": len(SIZES), "side": 2, "rank": MAX_OBJECTS}


@dataclass
class TrainConfig:
    seed: int = 0
    vision_steps: int = 1500  # stage 1: vision tower on per-patch attributes
    vision_batch: int = 64
    vision_lr: float = 2e-3
    aligning_steps: int = 200  # stage 1, then the projector alone on the same probes
    reading_steps: int = 800  # stage 2, first questions about one attribute: projector + decoder, tower frozen
    qa_steps: int = 2200  # stage 2, then every kind of question
    binding_steps: int = 2500  # stage 3: everything, binding-heavy questions, the probes kept on
    redrawing_steps: int = 1000  # stage 4: the tower on drawings as well as renders, held to what it saw of renders
    drawing_steps: int = 3000  # stage 4, then everything on questions about drawings and renders
    checking_steps: int = 1500  # stage 5: the decoder alone, presence looked up one attribute per pointer head
    drawn_share: float = 0.5  # of stage 4's and 5's images, drawn in the style of `drawn`
    redrawing_lr: float = 6e-4  # the tower in stage 4's first part
    drawing_lr: float = 3e-4  # the decoder in stage 4 (tower and projector at finetune_lr)
    checking_lr: float = 3e-4  # the decoder in stage 5
    checking_pointers: str = "attributes"  # or "object", as stages 2 to 4 (presence 90.8 % against 94.0 % after 400 steps)
    word_head: int = 4  # of WORD_LAYER: taught in stage 5 to bring a presence question's shape word to the answer
    same_colour: float = 0.6  # of stage 5's absent-presence questions, those naming a colour in the scene
    anchor_weight: float = 1.0  # keeps the tower's reading of renders while it learns drawings
    batch: int = 32
    lr: float = 2e-3
    finetune_lr: float = 3e-4  # the tower and projector in stage 3
    binding_lr: float = 1e-3  # projector, decoder and probes in stage 3
    probe_weight: float = 0.3  # the probes' loss, added to the answers' in stage 3
    pointer_weight: float = 0.5  # the pointer heads' loss, added to the answers' in stages 2 and 3
    warmup: int = 100
    weight_decay: float = 0.01
    threads: int = 2


def index_map(scene: Scene) -> Image.Image:
    """Which object covers which pixel of the world's own render: object i has value i + 1."""
    objects = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(objects)
    for i, obj in enumerate(scene.objects):
        draw_shape(draw, obj, i + 1)
    return objects


def picture(world: ShapesWorld, scene: Scene, rng: random.Random, drawn_share: float = 0.0) -> Picture:
    """The scene rendered by the world, or with chance `drawn_share` drawn as people draw (`drawn`)."""
    if drawn_share and rng.random() < drawn_share:
        return render_drawn(scene, rng)
    return Picture(world.render(scene, rng), index_map(scene))


def patch_targets(scene: Scene, objects: Image.Image | None = None) -> dict[str, torch.Tensor]:
    """Training targets for the vision tower, from the objects' pixel-exact masks (`objects`, the
    picture's index map; the world's own render when None).

    Per patch (n_patches,): colour, shape, size, side (left/right half) and rank (place counting
    from the left) of the object covering most of it, as classes from 1 (0 = background). Per
    object slot (MAX_OBJECTS,): the same attributes (-100 for empty slots), with
    `object_weights` (MAX_OBJECTS, n_patches), the share of the object's pixels in each patch,
    to pool its tokens. `count` is the object count minus one.
    """
    objects = objects if objects is not None else index_map(scene)
    pixels = torch.tensor(bytearray(objects.tobytes()), dtype=torch.int64).view(IMAGE_SIZE, IMAGE_SIZE)
    grid = IMAGE_SIZE // PATCH_SIZE
    patches = pixels.view(grid, PATCH_SIZE, grid, PATCH_SIZE).permute(0, 2, 1, 3).reshape(grid * grid, -1)  # (n_patches, pixels)
    counts = torch.stack([(patches == i + 1).sum(1) for i in range(MAX_OBJECTS)], 1).float()  # (n_patches, MAX_OBJECTS)
    owner = counts.argmax(1)
    covered = counts.max(1).values >= 8  # a patch needs a fair share of an object to count as "on" it
    n = len(scene.objects)
    pad = [-100] * (MAX_OBJECTS - n)
    order = scene.left_to_right()
    per_object = {
        "colour": [1 + list(COLOURS).index(o.colour) for o in scene.objects],
        "shape": [1 + SHAPES.index(o.shape) for o in scene.objects],
        "size": [1 + list(SIZES).index(o.size) for o in scene.objects],
        "side": [1 + (o.x >= IMAGE_SIZE / 2) for o in scene.objects],
        "rank": [1 + order.index(o) for o in scene.objects],
    }
    targets = {"object_weights": counts.T / counts.T.sum(1, keepdim=True).clamp(min=1), "count": torch.tensor(n - 1)}
    for name, ids in per_object.items():
        ids = torch.tensor(ids + pad)
        targets[name] = torch.where(covered, ids[owner].clamp(min=0), 0)
        targets[f"object_{name}"] = ids
    return targets


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


@dataclass
class QABatch:
    """A batch of (image, question, answer): model inputs with labels on the answer tokens and
    the end token only, and for each row the kind of question, the question, the scene and its
    picture's index map."""

    inputs: dict[str, torch.Tensor]
    kinds: list[str]
    questions: list[str]
    scenes: list[Scene]
    index_maps: list[Image.Image]


def qa_batch(
    processor: LlavaProcessor,
    world: ShapesWorld,
    rng: random.Random,
    batch: int,
    weights: dict[str, float],
    drawn_share: float = 0.0,
    same_colour: float = 0.0,
) -> QABatch:
    kinds = rng.choices(QUESTION_KINDS, weights=[weights[k] for k in QUESTION_KINDS], k=batch)
    images, texts, questions, answer_lengths, scenes, index_maps = [], [], [], [], [], []
    for kind in kinds:
        scene = world.sample_scene_for(rng, kind)
        if kind == "presence" and same_colour:
            # the case the model got wrong before stage 5: it answered yes to every object of the colour named
            question, answer = world.presence_question(scene, rng, same_colour, same_colour_only=True)
        else:
            question, answer = world.question(scene, kind, rng)
        drawn = picture(world, scene, rng, drawn_share)
        images.append(drawn.image)
        index_maps.append(drawn.index_map)
        questions.append(question)
        scenes.append(scene)
        texts.append(f"{build_prompt(processor, question)} {answer} </s>")
        answer_lengths.append(len(processor.tokenizer(f"{answer} </s>", add_special_tokens=False).input_ids))
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    labels = torch.full_like(inputs["input_ids"], -100)
    for row, length in enumerate(answer_lengths):  # left padding: the answer ends every row
        labels[row, -length:] = inputs["input_ids"][row, -length:]
    inputs["labels"] = labels
    return QABatch(dict(inputs), kinds, questions, scenes, index_maps)


def pointer_targets(
    batch: QABatch, object_weights: torch.Tensor, image_token_id: int, presence: str = "object"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the pointer heads should look, per row and position: (batch, POINTER_HEADS, seq, seq)
    distributions over the sequence and a (batch, POINTER_HEADS, seq) mask of the supervised places.

    Head 0 looks at the object the answer is about: the lone object, every object for a count
    (with a share of its attention that grows with the count, the rest on the prompt's first token),
    the first object of a relation and, while a description is written, the object being
    described. Head 1 looks at a relation's second object. For a presence question, `presence`
    says where: "object", head 0 at the object named (the first token of the prompt when there is
    none), as stages 2 to 4 teach; "attributes", head 0 at every object of the colour named and
    head 1 at every object of the shape named, as stage 5 teaches. Looking for the object named
    asks one head for a colour *and* a shape at once: the model trained so answered yes to every
    object of the right colour, whatever its shape. One attribute per head is a plain look-up,
    and the layers above check the other attribute of what was found.
    """
    ids = batch.inputs["input_ids"]
    size, seq = ids.shape
    targets = torch.zeros(size, POINTER_HEADS, seq, seq)
    mask = torch.zeros(size, POINTER_HEADS, seq, dtype=torch.bool)
    for row, (kind, question, scene) in enumerate(zip(batch.kinds, batch.questions, batch.scenes)):
        image = (ids[row] == image_token_id).nonzero().squeeze(1)  # the patches, in raster order
        first_answer = int((batch.inputs["labels"][row] != -100).nonzero()[0])
        sink = int(batch.inputs["attention_mask"][row].nonzero()[0])
        objects = scene.objects
        words = question.split()

        def look(head: int, position: int, chosen: list[int], share: float = 1.0, row=row, image=image, sink=sink) -> None:
            """`share` of the attention on the chosen objects, each object alike; the rest on the sink."""
            mask[row, head, position] = True
            if chosen:
                weights = object_weights[row, chosen].sum(0)
                targets[row, head, position, image] = share * weights / weights.sum()
            targets[row, head, position, sink] += 1.0 - share if chosen else 1.0

        if kind in ("colour", "shape", "size", "position"):
            look(0, first_answer - 1, [0])
        elif kind == "count":
            # How many is how much attention lands on objects, whatever their size. Spread over
            # all objects, a head reads the same for one object as for four, and the heads SAV
            # picked for count read the covered area instead: small objects counted fewer.
            look(0, first_answer - 1, list(range(len(objects))), share=len(objects) / (MAX_OBJECTS + 1))
        elif kind == "presence" and presence == "attributes":
            colour, shape = words[3], words[4]
            look(0, first_answer - 1, [i for i, o in enumerate(objects) if o.colour == colour])
            look(1, first_answer - 1, [i for i, o in enumerate(objects) if o.shape == shape])
        elif kind == "presence":
            colour, shape = words[3], words[4]
            look(0, first_answer - 1, [i for i, o in enumerate(objects) if o.colour == colour and o.shape == shape])
        elif kind == "relation":
            colours = [o.colour for o in objects]
            look(0, first_answer - 1, [colours.index(words[2])])
            look(1, first_answer - 1, [colours.index(words[7])])
        elif kind == "describe":
            for place, obj in enumerate(scene.left_to_right()):
                for word in range(3):  # "size colour shape", then a comma
                    look(0, first_answer + 4 * place + word - 1, [objects.index(obj)])
    return targets, mask


def word_targets(batch: QABatch, shape_token_ids: set[int]) -> torch.Tensor:
    """Where the word pointer should look from the place that answers a presence question: the
    question's shape word, per row (-1 for other kinds). Before stage 5 the shape word of a
    presence question never reached the place that answers (a linear probe there read it at 22 to
    53 % over four shapes, the colour word at 100 %), so the model could not check the shape it was
    asked about."""
    ids = batch.inputs["input_ids"]
    places = torch.full((len(ids),), -1)
    for row, kind in enumerate(batch.kinds):
        if kind == "presence":
            first_answer = int((batch.inputs["labels"][row] != -100).nonzero()[0])
            words = [i for i in range(first_answer) if int(ids[row, i]) in shape_token_ids]
            places[row] = words[-1]
    return places


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


def stack_targets(scenes: list[Scene], index_maps: list[Image.Image] | None = None) -> dict[str, torch.Tensor]:
    per_scene = [patch_targets(s, m) for s, m in zip(scenes, index_maps or [None] * len(scenes))]
    return {k: torch.stack([t[k] for t in per_scene]) for k in per_scene[0]}


class AnswerTally:
    """Teacher-forced exact match of the answers per kind of question, since the last report:
    the training log shows which kinds are learnt and when."""

    def __init__(self):
        self.hits, self.totals = {}, {}

    def add(self, logits: torch.Tensor, labels: torch.Tensor, kinds: list[str]) -> None:
        predicted, target = logits[:, :-1].argmax(-1), labels[:, 1:]
        row_right = ((predicted == target) | (target == -100)).all(1)
        for kind, right in zip(kinds, row_right.tolist()):
            self.hits[kind] = self.hits.get(kind, 0) + right
            self.totals[kind] = self.totals.get(kind, 0) + 1

    def report(self) -> dict[str, float]:
        rates = {kind: round(self.hits[kind] / self.totals[kind], 3) for kind in QUESTION_KINDS if kind in self.totals}
        self.hits, self.totals = {}, {}
        return rates


def cosine_schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def run_stage(name, groups, steps, cfg, make_loss, report) -> dict:
    """AdamW over parameter groups (each with its own lr), warm-up and cosine decay; logs the
    mean loss and `report()` every 50 steps."""
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    parameters = [p for group in groups for p in group["params"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_schedule(s, steps, min(cfg.warmup, steps // 5)))
    start, recent, history = time.time(), [], []
    for step in range(steps):
        loss = make_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        recent.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            metrics = report()
            history.append({"step": step + 1, "loss": round(sum(recent) / len(recent), 4), **metrics})
            log.info("%s step %d/%d loss %.4f %s (%.0f s)", name, step + 1, steps, sum(recent) / len(recent), metrics, time.time() - start)
            recent = []
    return {"stage": name, "steps": steps, "seconds": round(time.time() - start, 1), "history": history}


STAGES = ("seeing", "aligning", "reading", "answering", "binding", "redrawing", "drawing", "checking")


def train(out: Path, cfg: TrainConfig, resume: Path | None = None, checkpoints: Path | None = None) -> None:
    """Runs the five stages and saves the model; `resume` loads a checkpoint this script saved
    (`--checkpoints`, or a model it wrote) and runs the parts after it. Every part seeds itself,
    so both paths agree but for the probe heads, which a resumed stage learns afresh."""
    torch.set_num_threads(cfg.threads)
    world = ShapesWorld()
    processor = build_processor()
    stages = []

    def seeded(stage: str) -> random.Random:
        torch.manual_seed(cfg.seed + len(stages))
        return random.Random(f"{cfg.seed}-{stage}")

    seeing = probe = None
    if resume is None:
        seeded("init")
        model = LlavaForConditionalGeneration(build_config(processor.tokenizer))
    else:
        if not (resume / "training_log.json").is_file():
            raise SystemExit(
                f"{resume} is not a checkpoint of this script: it has no training_log.json (save checkpoints with --checkpoints)"
            )
        model = LlavaForConditionalGeneration.from_pretrained(resume)
        stages += json.loads((resume / "training_log.json").read_text())["stages"]
        done = tuple(stage["stage"] for stage in stages)
        if done != STAGES[: len(done)]:
            raise SystemExit(f"{resume} is not a checkpoint of this recipe: its stages are {done}, expected the first ones of {STAGES}")
    for name in STAGES[len(stages) :]:
        if name == "seeing":
            seeing = VisionProbe(model.config.vision_config.hidden_size, SEEING)
            stages.append(train_seeing(model, seeing, processor, world, seeded(name), cfg))
        elif name == "aligning":
            aligning = VisionProbe(model.config.text_config.hidden_size, SEEING)
            stages.append(train_aligning(model, aligning, processor, world, seeded(name), cfg))
        elif name == "reading":
            stages.append(
                train_answering(name, model, None, processor, world, seeded(name), cfg, cfg.reading_steps, SINGLE_WEIGHTS, cfg.lr)
            )
        elif name == "answering":
            stages.append(train_answering(name, model, None, processor, world, seeded(name), cfg, cfg.qa_steps, READING_WEIGHTS, cfg.lr))
        elif name == "binding":
            rng = seeded(name)
            # Where objects are is taught only now, once the decoder reads what they are; the
            # stage-1 probe heads carry over when there.
            probe = VisionProbe(model.config.vision_config.hidden_size, SEEING + PLACING)
            if seeing is not None:
                probe.load_state_dict(seeing.state_dict(), strict=False)
            stages.append(
                train_answering(name, model, probe, processor, world, rng, cfg, cfg.binding_steps, BINDING_WEIGHTS, cfg.binding_lr)
            )
        elif name == "redrawing":
            rng = seeded(name)
            probe = probe or VisionProbe(model.config.vision_config.hidden_size, SEEING + PLACING)
            stages.append(train_redrawing(model, probe, processor, world, rng, cfg))
        elif name == "drawing":
            rng = seeded(name)
            probe = probe or VisionProbe(model.config.vision_config.hidden_size, SEEING + PLACING)
            stages.append(
                train_answering(
                    name, model, probe, processor, world, rng, cfg, cfg.drawing_steps, DRAWING_WEIGHTS, cfg.drawing_lr, cfg.drawn_share
                )
            )
        elif name == "checking":
            stages.append(
                train_answering(
                    name,
                    model,
                    None,
                    processor,
                    world,
                    seeded(name),
                    cfg,
                    cfg.checking_steps,
                    CHECKING_WEIGHTS,
                    cfg.checking_lr,
                    cfg.drawn_share,
                    presence=cfg.checking_pointers,
                    same_colour=cfg.same_colour,
                    word_pointer=(WORD_LAYER, cfg.word_head),
                )
            )
        if checkpoints is not None and name != STAGES[-1]:
            save(model, processor, checkpoints / f"after-{name}", cfg, stages)
    save(model, processor, out, cfg, stages)


def save(model, processor, out: Path, cfg: TrainConfig, stages: list[dict]) -> None:
    """Writes a folder `from_pretrained` loads, with the training log so far."""
    training = model.training
    model.eval()
    model.set_attn_implementation("sdpa")
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    record = {"config": asdict(cfg), "stages": stages, "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}
    (out / "training_log.json").write_text(json.dumps(record, indent=2) + "\n")
    model.train(training)
    log.info("saved to %s", out)


def train_seeing(model, probe: VisionProbe, processor, world, rng, cfg: TrainConfig) -> dict:
    """Stage 1: the vision tower alone learns what each object is, from its probes."""
    tower = model.model.vision_tower
    probe_metrics = [{}]

    def vision_loss():
        scenes = [world.sample_scene(rng) for _ in range(cfg.vision_batch)]
        pixels = processor.image_processor([world.render(s, rng) for s in scenes], return_tensors="pt")["pixel_values"]
        hidden = tower(pixel_values=pixels).last_hidden_state  # (batch, 1 + n_patches, width)
        loss, probe_metrics[0] = probe.loss(hidden, stack_targets(scenes))
        return loss

    model.train()
    return run_stage(
        "seeing",
        [{"params": [*tower.parameters(), *probe.parameters()], "lr": cfg.vision_lr}],
        cfg.vision_steps,
        cfg,
        vision_loss,
        lambda: probe_metrics[0],
    )


def train_aligning(model, probe: VisionProbe, processor, world, rng, cfg: TrainConfig) -> dict:
    """Stage 1, second part: the projector alone learns to pass on what the tower sees, probes
    reading the image tokens the decoder will get. Trained together with the decoder from
    scratch instead, the projector dropped colour (it explained 7 % of the projected variance,
    against 58 % at the tower) and the decoder stayed at chance on colour for 1,000 steps."""
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    probe_metrics = [{}]

    def aligning_loss():
        scenes = [world.sample_scene(rng) for _ in range(cfg.vision_batch)]
        pixels = processor.image_processor([world.render(s, rng) for s in scenes], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = tower(pixel_values=pixels).last_hidden_state
        loss, probe_metrics[0] = probe.loss(projector(hidden), stack_targets(scenes))  # the CLS row only for the count
        return loss

    model.train()
    return run_stage(
        "aligning",
        [{"params": [*projector.parameters(), *probe.parameters()], "lr": cfg.vision_lr}],
        cfg.aligning_steps,
        cfg,
        aligning_loss,
        lambda: probe_metrics[0],
    )


def train_redrawing(model, probe: VisionProbe, processor, world, rng, cfg: TrainConfig) -> dict:
    """Stage 4, first part: the tower alone learns drawings (`drawn`) from its probes, as stage 1
    taught it renders, while a frozen copy of it holds its reading of renders where the decoder
    expects it: the anchor, a relative squared error on the renders of each batch."""
    tower = model.model.vision_tower
    anchor = copy.deepcopy(tower).requires_grad_(False).eval()
    probe_metrics = [{}]

    def redrawing_loss():
        scenes = [world.sample_scene(rng) for _ in range(cfg.vision_batch)]
        pictures = [picture(world, s, rng, cfg.drawn_share) for s in scenes]
        pixels = processor.image_processor([p.image for p in pictures], return_tensors="pt")["pixel_values"]
        hidden = tower(pixel_values=pixels).last_hidden_state
        loss, probe_metrics[0] = probe.loss(hidden, stack_targets(scenes, [p.index_map for p in pictures]))
        renders = torch.tensor([not p.drawn for p in pictures])
        if renders.any():
            with torch.no_grad():
                held = anchor(pixel_values=pixels[renders]).last_hidden_state
            drift = (hidden[renders] - held).pow(2).mean() / held.pow(2).mean()
            probe_metrics[0]["anchor"] = round(drift.item(), 4)
            loss = loss + cfg.anchor_weight * drift
        return loss

    model.train()
    return run_stage(
        "redrawing",
        [{"params": list(tower.parameters()), "lr": cfg.redrawing_lr}, {"params": list(probe.parameters()), "lr": cfg.lr}],
        cfg.redrawing_steps,
        cfg,
        redrawing_loss,
        lambda: probe_metrics[0],
    )


def train_answering(
    name,
    model,
    probe: VisionProbe | None,
    processor,
    world,
    rng,
    cfg: TrainConfig,
    steps,
    weights,
    lr,
    drawn_share: float = 0.0,
    presence: str = "object",
    same_colour: float = 0.0,
    word_pointer: tuple[int, int] | None = None,
) -> dict:
    """Stages 2 to 5: the decoder learns to answer, with the pointer heads told where to look
    (`presence`: where for a presence question, see `pointer_targets`). Without a probe, tower
    and projector stay frozen (stages 2 and 5); with one they train at `finetune_lr`, the probes'
    loss added so that the tower keeps seeing what stage 1 taught it. `drawn_share` of the images
    are drawings (stages 4 and 5)."""
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    tower.requires_grad_(probe is not None)
    projector.requires_grad_(probe is not None)
    pointers = PointerSupervision(model, presence=presence)
    words = WordPointer(model, processor.tokenizer, *word_pointer) if word_pointer is not None else None
    tower_output, probe_metrics, pointer_metric, tally = {}, [{}], [0.0], AnswerTally()
    hook = tower.register_forward_hook(lambda module, args, output: tower_output.update(hidden=output.last_hidden_state))

    def answering_loss():
        batch = qa_batch(processor, world, rng, cfg.batch, weights, drawn_share, same_colour)
        output = model(**batch.inputs)
        seen = stack_targets(batch.scenes, batch.index_maps)
        pointer_loss, pointer_metric[0] = pointers.loss(batch, seen["object_weights"])
        if words is not None:
            pointer_loss = pointer_loss + words.loss(batch)
        tally.add(output.logits.detach(), batch.inputs["labels"], batch.kinds)
        loss = output.loss + cfg.pointer_weight * pointer_loss
        if probe is not None:
            probe_loss, probe_metrics[0] = probe.loss(tower_output["hidden"], seen)
            loss = loss + cfg.probe_weight * probe_loss
        return loss

    seeing = [*tower.parameters(), *projector.parameters()]
    seeing_ids = {id(p) for p in seeing}
    answering = [p for p in model.parameters() if id(p) not in seeing_ids]
    groups = [{"params": answering + (list(words.probe.parameters()) if words is not None else []), "lr": lr}]
    if probe is not None:  # a fresh probe learns fast, so that its early, random gradients barely touch the tower
        groups += [{"params": list(probe.parameters()), "lr": lr}, {"params": seeing, "lr": cfg.finetune_lr}]

    def report():
        word_share = {"word_pointer": words.share} if words is not None else {}
        return {
            **tally.report(),
            "pointers": pointer_metric[0],
            **word_share,
            **({"probes": probe_metrics[0]} if probe is not None else {}),
        }

    model.train()
    try:
        return run_stage(name, groups, steps, cfg, answering_loss, report)
    finally:
        hook.remove()
        pointers.remove()
        if words is not None:
            words.remove()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--resume", type=Path, help="a checkpoint this script saved (--checkpoints' after-NAME): run what follows it")
    parser.add_argument("--checkpoints", type=Path, help="save the model after every stage into this folder")
    for field, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    train(args.out, cfg, args.resume, args.checkpoints)


if __name__ == "__main__":
    main()
