"""Trains the bundled teaching model from scratch, in stages, on the shapes world.

    python -m sav_explorer.teaching.train --out assets/shapes-llava            # all four stages
    python -m sav_explorer.teaching.train --out DIR --binding-steps 0            # stop after stage 3
    python -m sav_explorer.teaching.train --out DIR --resume STAGE3_DIR          # stage 4 only

1. The vision tower alone learns what each object is: linear probes read the colour, shape and
   size of the object under every patch and of each object's pooled patches, and the count from
   the CLS token (the language-model loss alone never teaches shape, see DESIGN section 3).
2. The projector and decoder learn to answer, with the tower frozen.
3. Everything is fine-tuned at a lower learning rate.
4. Binding: questions that bind attributes ("is there a red circle ?"), compare places ("is the
   red shape left of the blue shape ?") or list the objects left to right, while new probes
   teach every patch which side of the image its object is on and its place counting from the
   left; the decoder then looks a place up instead of sorting.

The run is seeded and writes a folder that `from_pretrained` loads offline, plus
`training_log.json` with the probes' and each kind of question's accuracy during training.
"""

from __future__ import annotations

import argparse
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

from .build import PATCH_SIZE, build_config, build_processor
from .shapes import COLOURS, IMAGE_SIZE, MAX_OBJECTS, QUESTION_KINDS, SHAPES, SIZES, Scene, ShapesWorld, _draw_shape

log = logging.getLogger(__name__)

# How often each kind of question is drawn in stages 2 and 3, where the decoder learns to read
# single attributes, and in stage 4, where it learns to bind and compare objects (with the
# stage-3 mix, presence and relation stayed at chance after 5,500 steps).
READING_WEIGHTS = {"colour": 1.0, "shape": 1.0, "size": 1.0, "position": 1.0, "count": 1.5, "presence": 1.5, "relation": 1.5, "describe": 2.0}
BINDING_WEIGHTS = {"colour": 0.5, "shape": 0.5, "size": 0.5, "position": 0.5, "count": 0.5, "presence": 2.0, "relation": 2.0, "describe": 3.0}
# Per-patch attributes the tower is taught: what an object is (stage 1), and from stage 4 on,
# where it is (side of the image, place counting from the left).
SEEING = ("colour", "shape", "size")
PLACING = ("side", "rank")
ATTRIBUTE_CLASSES = {"colour": len(COLOURS), "shape": len(SHAPES), "size": len(SIZES), "side": 2, "rank": MAX_OBJECTS}


@dataclass
class TrainConfig:
    seed: int = 0
    vision_steps: int = 1500  # stage 1: vision tower on per-patch attributes
    vision_batch: int = 64
    vision_lr: float = 2e-3
    qa_steps: int = 4000  # stage 2: projector + decoder, tower frozen
    finetune_steps: int = 1500  # stage 3: everything, lower learning rate
    binding_steps: int = 2200  # stage 4: binding and comparing objects, with the place probes
    batch: int = 32
    lr: float = 2e-3
    finetune_lr: float = 3e-4
    binding_lr: float = 1e-3  # projector, decoder and probes in stage 4; the tower at finetune_lr
    probe_weight: float = 0.3  # the probes' loss, added to the answers' in stage 4
    warmup: int = 100
    weight_decay: float = 0.01
    threads: int = 2


def patch_targets(scene: Scene) -> dict[str, torch.Tensor]:
    """Training targets for the vision tower, from the scene's pixel-exact object masks.

    Per patch (n_patches,): colour, shape, size, side (left/right half) and rank (place counting
    from the left) of the object covering most of it, as classes from 1 (0 = background). Per
    object slot (MAX_OBJECTS,): the same attributes (-100 for empty slots), with
    `object_weights` (MAX_OBJECTS, n_patches), the share of the object's pixels in each patch,
    to pool its tokens. `count` is the object count minus one.
    """
    index_map = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(index_map)
    for i, obj in enumerate(scene.objects):
        _draw_shape(draw, obj, i + 1)
    pixels = torch.tensor(bytearray(index_map.tobytes()), dtype=torch.int64).view(IMAGE_SIZE, IMAGE_SIZE)
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


def qa_batch(
    processor: LlavaProcessor, world: ShapesWorld, rng: random.Random, batch: int, weights: dict[str, float]
) -> tuple[dict[str, torch.Tensor], list[str], list[Scene]]:
    """A batch of (image, question, answer) with labels on the answer tokens and the end token
    only, with the kind of question and the scene of each row."""
    kinds = rng.choices(QUESTION_KINDS, weights=[weights[k] for k in QUESTION_KINDS], k=batch)
    images, texts, answer_lengths, scenes = [], [], [], []
    for kind in kinds:
        image, question, answer, scene = world.sample_with_scene(rng, kind)
        prompt = prompt_for(processor, question)
        images.append(image)
        scenes.append(scene)
        texts.append(f"{prompt} {answer} </s>")
        answer_lengths.append(len(processor.tokenizer(f"{answer} </s>", add_special_tokens=False).input_ids))
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    labels = torch.full_like(inputs["input_ids"], -100)
    for row, length in enumerate(answer_lengths):  # left padding: the answer ends every row
        labels[row, -length:] = inputs["input_ids"][row, -length:]
    inputs["labels"] = labels
    return dict(inputs), kinds, scenes


def stack_targets(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    per_scene = [patch_targets(s) for s in scenes]
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


def prompt_for(processor: LlavaProcessor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


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


def train(out: Path, cfg: TrainConfig, resume: Path | None = None) -> None:
    """Runs the four stages and saves the model; `resume` loads a model saved after stage 3 by
    this script and runs stage 4 only (stage 4 seeds itself, so both paths agree)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    world = ShapesWorld()
    processor = build_processor()
    stages = []
    if resume is None:
        model = LlavaForConditionalGeneration(build_config(processor.tokenizer))
        stages += train_reading(model, processor, world, rng, cfg)
    else:
        model = LlavaForConditionalGeneration.from_pretrained(resume)
        earlier = resume / "training_log.json"  # the resumed run's own record of stages 1-3
        stages += json.loads(earlier.read_text())["stages"] if earlier.is_file() else [{"stage": "stages 1-3", "loaded from": str(resume)}]
    stages.append(train_binding(model, processor, world, cfg))

    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    record = {"config": asdict(cfg), "stages": stages, "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}
    (out / "training_log.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("saved to %s", out)


def train_reading(model, processor, world, rng, cfg: TrainConfig) -> list[dict]:
    """Stages 1-3: the tower learns to see what each object is; the decoder learns to read it."""
    tower = model.model.vision_tower
    probe = VisionProbe(tower.config.hidden_size, SEEING)
    probe_metrics = [{}]

    def vision_loss():
        scenes = [world.sample_scene(rng) for _ in range(cfg.vision_batch)]
        pixels = processor.image_processor([world.render(s, rng) for s in scenes], return_tensors="pt")["pixel_values"]
        hidden = tower(pixel_values=pixels).last_hidden_state  # (batch, 1 + n_patches, width)
        loss, probe_metrics[0] = probe.loss(hidden, stack_targets(scenes))
        return loss

    model.train()
    stages = [run_stage("vision", [{"params": [*tower.parameters(), *probe.parameters()], "lr": cfg.vision_lr}], cfg.vision_steps, cfg, vision_loss, lambda: probe_metrics[0])]
    tally = AnswerTally()

    def qa_loss():
        inputs, kinds, _ = qa_batch(processor, world, rng, cfg.batch, READING_WEIGHTS)
        output = model(**inputs)
        tally.add(output.logits.detach(), inputs["labels"], kinds)
        return output.loss

    tower.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    stages.append(run_stage("qa", [{"params": trainable, "lr": cfg.lr}], cfg.qa_steps, cfg, qa_loss, tally.report))
    tower.requires_grad_(True)
    stages.append(run_stage("finetune", [{"params": list(model.parameters()), "lr": cfg.finetune_lr}], cfg.finetune_steps, cfg, qa_loss, tally.report))
    return stages


def train_binding(model, processor, world, cfg: TrainConfig) -> dict:
    """Stage 4: questions that bind attributes or compare places. The tower learns each object's
    side and place from the left (probes on what each patch shows, added to the answers' loss)
    while the decoder learns to use them: a look-up instead of a sort."""
    torch.manual_seed(cfg.seed + 4)
    rng = random.Random(f"{cfg.seed}-binding")
    tower = model.model.vision_tower
    probe = VisionProbe(tower.config.hidden_size, SEEING + PLACING)
    probe_metrics, tower_output, tally = [{}], {}, AnswerTally()
    hook = tower.register_forward_hook(lambda module, args, output: tower_output.update(hidden=output.last_hidden_state))

    def binding_loss():
        inputs, kinds, scenes = qa_batch(processor, world, rng, cfg.batch, BINDING_WEIGHTS)
        output = model(**inputs)
        probe_loss, probe_metrics[0] = probe.loss(tower_output["hidden"], stack_targets(scenes))
        tally.add(output.logits.detach(), inputs["labels"], kinds)
        return output.loss + cfg.probe_weight * probe_loss

    tower_ids = {id(p) for p in tower.parameters()}
    groups = [  # the fresh probes learn fast, so that their early, random gradients barely touch the tower
        {"params": [*(p for p in model.parameters() if id(p) not in tower_ids), *probe.parameters()], "lr": cfg.binding_lr},
        {"params": list(tower.parameters()), "lr": cfg.finetune_lr},
    ]
    model.train()
    try:
        return run_stage("binding", groups, cfg.binding_steps, cfg, binding_loss, lambda: {**tally.report(), "probes": probe_metrics[0]})
    finally:
        hook.remove()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/shapes-llava"))
    parser.add_argument("--resume", type=Path, help="a model this script saved after stage 3 (with --binding-steps 0): run stage 4 only")
    for field, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    train(args.out, cfg, args.resume)


if __name__ == "__main__":
    main()
