"""Trains the bundled teaching model from scratch, in stages, on the shapes world.

    python -m sav_explorer.teaching.train --out assets/shapes-llava            # all six stages (about 2.5 hours on 2 cores)
    python -m sav_explorer.teaching.train --out DIR --checkpoints CHECKPOINTS    # also saves after every stage
    python -m sav_explorer.teaching.train --out DIR --resume CHECKPOINTS/after-answering   # what follows a checkpoint
    python -m sav_explorer.teaching.train --out DIR --resume CHECKPOINTS/after-binding     # stages 4 and 5 (about 45 min)
    python -m sav_explorer.teaching.train --out DIR --resume CHECKPOINTS/after-drawing     # stages 5 and 6
    python -m sav_explorer.teaching.train --out DIR --resume CHECKPOINTS/after-checking    # stage 6 only (about 40 min on one thread)

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
6. Enlarging: objects drawn big, up to 90 % of the image (`drawn.render_big`), as people draw on
   a canvas; until now no object was wider than a third of the image, and a big filled cross was
   read as a square. First the tower alone learns them from its probes, a frozen copy of it
   holding its reading of everything else, and (`--enlarging-reads`) through the frozen decoder:
   what the decoder reads of a drawn object, at every head's output at the last position, is held
   to what it reads of the same object rendered by the world (`stages.reads_as_rendered`); then the
   decoder alone ("rereading") answers about them, with stage 5's pointers, every other kind of
   question kept in practice.

The run is seeded and writes a folder that `from_pretrained` loads offline, plus
`training_log.json` with the probes', the pointers' and each kind of question's accuracy
during training.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration

from ..models import BUNDLED_MODEL
from .build import build_config, build_processor, sharpness_of
from .mix import CARRIED_RECORDS
from .probes import VisionProbe
from .recipe import (
    BINDING_WEIGHTS,
    CHECKING_WEIGHTS,
    DRAWING_WEIGHTS,
    PLACING,
    READING_WEIGHTS,
    SEEING,
    SINGLE_WEIGHTS,
    TrainConfig,
)
from .shapes import ShapesWorld
from .stages import train_aligning, train_answering, train_enlarging, train_redrawing, train_seeing
from .targets import WORD_LAYER

log = logging.getLogger(__name__)


STAGES = ("seeing", "aligning", "reading", "answering", "binding", "redrawing", "drawing", "checking", "enlarging", "rereading")


def train(out: Path, cfg: TrainConfig, resume: Path | None = None, checkpoints: Path | None = None) -> None:
    """Runs the six stages and saves the model; `resume` loads a checkpoint this script saved
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
    carried: dict = {}
    if resume is None:
        seeded("init")
        model = LlavaForConditionalGeneration(build_config(processor.tokenizer))
    else:
        if not (resume / "training_log.json").is_file():
            raise SystemExit(
                f"{resume} is not a checkpoint of this script: it has no training_log.json (save checkpoints with --checkpoints)"
            )
        model = LlavaForConditionalGeneration.from_pretrained(resume)
        earlier = json.loads((resume / "training_log.json").read_text())
        stages += earlier["stages"]
        carried = {key: earlier[key] for key in CARRIED_RECORDS if key in earlier}
        processor = build_processor(sharpness_of(model.config))  # a sharpened tower reads more pixels
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
        elif name == "enlarging":
            probe = probe or VisionProbe(model.config.vision_config.hidden_size, SEEING + PLACING)
            stages.append(train_enlarging(model, probe, processor, world, seeded(name), cfg))
        elif name == "rereading":
            stages.append(
                train_answering(
                    name,
                    model,
                    None,
                    processor,
                    world,
                    seeded(name),
                    cfg,
                    cfg.rereading_steps,
                    cfg.rereading_weights(),
                    cfg.rereading_lr,
                    cfg.drawn_share,
                    presence=cfg.checking_pointers,
                    same_colour=cfg.same_colour,
                    word_pointer=(WORD_LAYER, cfg.word_head),
                    big_share=cfg.rereading_big_share,
                    habits=cfg.drawing_habits(),
                )
            )
        if checkpoints is not None and name != STAGES[-1]:
            save(model, processor, checkpoints / f"after-{name}", cfg, stages, carried)
    save(model, processor, out, cfg, stages, carried)


def save(model, processor, out: Path, cfg: TrainConfig, stages: list[dict], carried: dict | None = None) -> None:
    """Writes a folder `from_pretrained` loads, with the training log so far and the records
    carried from the checkpoint it resumed (`CARRIED_RECORDS`)."""
    training = model.training
    model.eval()
    model.set_attn_implementation("sdpa")
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    record = {"config": asdict(cfg), "stages": stages, "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}
    record.update(carried or {})
    (out / "training_log.json").write_text(json.dumps(record, indent=2) + "\n")
    model.train(training)
    log.info("saved to %s", out)


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
