"""The training stages' loops: each stage's loss, the parameters it trains, and the optimiser
loop they share (`run_stage`), with the per-kind answer tally that the training log records.

`train` chains these stages into the recipe, seeds each, and saves the model.
"""

from __future__ import annotations

import copy
import logging
import math
import time

import torch

from ..data import Example
from ..encoding import Encoding, encode
from ..models import LoadedModel, decoder_layers, find_attention_sites
from ..trace import Trace
from .batches import picture, qa_batch
from .drawn import AS_STAGE_4, DrawingHabits, render_big, render_drawn, world_size_style
from .probes import PointerSupervision, VisionProbe, WordPointer
from .recipe import TrainConfig
from .shapes import QUESTION_KINDS, QUESTIONS
from .targets import stack_targets

log = logging.getLogger(__name__)


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


def as_loaded(model, processor) -> LoadedModel:
    """The model in training as the library holds a loaded one, so that stage 6 builds its inputs
    (`encode`) and reads the heads (`Trace`) the library's one way."""
    return LoadedModel(model, processor, "training", "training", find_attention_sites(model), len(decoder_layers(model)))


def last_position_heads(loaded: LoadedModel, examples: list[Example]) -> torch.Tensor:
    """(batch, layers * width): every decoder layer's head outputs at the last position, what SAV
    reads, with gradients (the pixels go to the tower, not through the library's no-grad feature cache)."""
    states = []
    trace = Trace(loaded, stop=True)
    for site in loaded.sites:
        trace.on_heads(site.layer, lambda hidden: states.append(hidden[:, -1]))
    with trace:
        loaded.model(**encode(loaded, examples, Encoding()).inputs, use_cache=False)
    return torch.cat(states, -1)


def reads_as_rendered(loaded: LoadedModel, rendered: list, drawn: list, questions: list[str]) -> torch.Tensor:
    """How far the decoder's reading of the `drawn` images is from its reading of the `rendered`
    ones (the same objects as the world renders them), each asked its question: the relative
    squared gap of every head's output at the last position, the render's held (no gradient). The
    decoder is what read a big cross as a square although the tower's probes read it as a cross:
    taught through the decoder, the tower learns to show a drawing as the decoder reads its render.
    Only the tower learns from it: a decoder held so itself lost colour SAV (58.3 %, and 83.3 %
    with the renders read by a frozen copy of it), its own colour answers still right."""
    with torch.no_grad():
        held = last_position_heads(loaded, [Example((image,), q) for image, q in zip(rendered, questions)])
    read = last_position_heads(loaded, [Example((image,), q) for image, q in zip(drawn, questions)])
    return (read - held).pow(2).mean() / held.pow(2).mean()


def drawn_and_rendered(world, rng, n: int, drawn_at_world_size: float, habits: DrawingHabits = AS_STAGE_4) -> tuple[list, list, list[str]]:
    """`n` single objects, each drawn (big, or with chance `drawn_at_world_size` as stage 4 draws
    it, at the world's sizes) and rendered by the world, with the shape or the colour question:
    what `reads_as_rendered` compares, drawn with stage 6's `habits`."""
    drawn, rendered, questions = [], [], []
    for i in range(n):
        if rng.random() < drawn_at_world_size:
            scene = world.sample_scene_for(rng, "shape")
            drawing = render_drawn(scene, rng, world_size_style(rng, habits))
        else:
            scene, drawing = render_big(rng, habits=habits)
        drawn.append(drawing.image)
        rendered.append(world.render(scene, rng))
        questions.append(QUESTIONS["shape" if i % 2 else "colour"])
    return rendered, drawn, questions


def enlarging_batch(world, rng, cfg: TrainConfig) -> tuple[list, list, list[bool], list[bool]]:
    """Stage 6's first part's images: `big_share` of them one object drawn big, the rest the
    world's scenes, rendered or (`drawn_share`) drawn as stage 4 drew them; with chance
    `taught_world_drawings` such a scene is drawn instead with stage 6's habits (by hand), which
    the frozen anchor never saw, so that the probes, not the anchor, say what it shows. Returns
    scenes, pictures, which rows are big and which the probes alone teach (big or so drawn).
    At `taught_world_drawings` 0 it takes nothing more from the random stream."""
    habits = cfg.drawing_habits()
    scenes, pictures, big, taught = [], [], [], []
    for _ in range(cfg.vision_batch):
        big.append(rng.random() < cfg.big_share)
        taught.append(big[-1] or bool(cfg.taught_world_drawings) and rng.random() < cfg.taught_world_drawings)
        if big[-1]:
            scene, drawn = render_big(rng, habits=habits)
        elif taught[-1]:
            scene = world.sample_scene(rng)
            drawn = render_drawn(scene, rng, world_size_style(rng, habits))
        else:
            scene, drawn = world.sample_scene(rng), None
        scenes.append(scene)
        pictures.append(drawn or picture(world, scene, rng, cfg.drawn_share))
    return scenes, pictures, big, taught


def train_enlarging(model, probe: VisionProbe, processor, world, rng, cfg: TrainConfig) -> dict:
    """Stage 6, first part: the tower alone learns objects drawn big (`render_big`, up to 90 % of
    the image), `big_share` of each batch, from its probes, while a frozen copy of it holds its
    reading of everything else (renders and the drawings of stage 4) where the decoder expects it
    (`enlarging_batch`: with `taught_world_drawings`, hand drawings at the world's sizes are taught too).
    With weight `enlarging_reads`, the frozen decoder's reading of a drawn object is held to its
    reading of the world's render of it (`reads_as_rendered`): with the probes alone the
    tower read big crosses as crosses, yet the decoder, which learnt small ones, still read squares."""
    tower = model.model.vision_tower
    anchor = copy.deepcopy(tower).requires_grad_(False).eval()
    loaded = as_loaded(model, processor)
    habits = cfg.drawing_habits()
    probe_metrics = [{}]

    def enlarging_loss():
        scenes, pictures, big, taught = enlarging_batch(world, rng, cfg)
        pixels = processor.image_processor([p.image for p in pictures], return_tensors="pt")["pixel_values"]
        hidden = tower(pixel_values=pixels).last_hidden_state
        loss, probe_metrics[0] = probe.loss(hidden, stack_targets(scenes, [p.index_map for p in pictures]))
        held_rows = ~torch.tensor(taught)
        if held_rows.any():
            with torch.no_grad():
                held = anchor(pixel_values=pixels[held_rows]).last_hidden_state
            drift = (hidden[held_rows] - held).pow(2).mean() / held.pow(2).mean()
            probe_metrics[0]["anchor"] = round(drift.item(), 4)
            loss = loss + cfg.enlarging_anchor * drift
        big_rows = torch.tensor(big)
        if cfg.enlarging_reads and big_rows.any():
            if cfg.reads_world_size:  # objects of their own, some at the world's sizes
                rendered, drawn, questions = drawn_and_rendered(world, rng, int(big_rows.sum()), cfg.reads_world_size, habits)
            else:  # the batch's big objects
                rows = big_rows.nonzero().squeeze(1).tolist()
                rendered = [world.render(scenes[i], rng) for i in rows]  # the one big object, at the world's large
                drawn = [pictures[i].image for i in rows]
                questions = [QUESTIONS["shape" if n % 2 else "colour"] for n in range(len(rows))]
            gap = reads_as_rendered(loaded, rendered, drawn, questions)
            probe_metrics[0]["reads"] = round(gap.item(), 4)
            loss = loss + cfg.enlarging_reads * gap
        return loss

    model.train()
    reading = [model.model.language_model, model.lm_head]
    for module in reading:  # the decoder reads, through `reads_as_rendered`; only the tower learns here
        module.requires_grad_(False)
    try:
        return run_stage(
            "enlarging",
            [{"params": list(tower.parameters()), "lr": cfg.enlarging_lr}, {"params": list(probe.parameters()), "lr": cfg.lr}],
            cfg.enlarging_steps,
            cfg,
            enlarging_loss,
            lambda: probe_metrics[0],
        )
    finally:
        for module in reading:
            module.requires_grad_(True)


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
    big_share: float = 0.0,
    habits: DrawingHabits = AS_STAGE_4,
) -> dict:
    """Stages 2 to 5: the decoder learns to answer, with the pointer heads told where to look
    (`presence`: where for a presence question, see `pointer_targets`). Without a probe, tower
    and projector stay frozen (stages 2 and 5); with one they train at `finetune_lr`, the probes'
    loss added so that the tower keeps seeing what stage 1 taught it. `drawn_share` of the images
    are drawings (stages 4 to 6), `big_share` of the questions about one object one drawn big (stage 6),
    and stage 6's drawings drawn with its `habits` (`drawn.DrawingHabits`)."""
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    tower.requires_grad_(probe is not None)
    projector.requires_grad_(probe is not None)
    pointers = PointerSupervision(model, presence=presence)
    words = WordPointer(model, processor.tokenizer, *word_pointer) if word_pointer is not None else None
    tower_output, probe_metrics, pointer_metric, tally = {}, [{}], [0.0], AnswerTally()
    hook = tower.register_forward_hook(lambda module, args, output: tower_output.update(hidden=output.last_hidden_state))

    def answering_loss():
        batch = qa_batch(processor, world, rng, cfg.batch, weights, drawn_share, same_colour, big_share, habits)
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
