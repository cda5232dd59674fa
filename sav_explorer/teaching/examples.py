"""Writes the bundled example tasks: PNG images with JSONL manifests in the engine's data format.

    python -m sav_explorer.teaching.examples --out assets/examples

Each task folder holds `support.jsonl` (5 examples per class) and `queries.jsonl` (held-out
examples, 10 per class), every row with the task's question. Seeded: reruns give the same files.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .shapes import COLOURS, COUNT_WORDS, QUESTIONS, SHAPES, SIZES, Scene, ShapesWorld

SUPPORT_PER_CLASS = 5
QUERIES_PER_CLASS = 10


@dataclass(frozen=True)
class Task:
    name: str
    question: str
    labels: tuple[str, ...]
    scene_for: Callable[[ShapesWorld, random.Random, str], Scene]  # a scene whose answer is the label
    description: str


def _relation_scene(world: ShapesWorld, rng: random.Random, label: str) -> Scene:
    while True:
        scene = world.sample_scene(rng, n_objects=rng.randint(2, 3), distinct_colours=True, colour="red")
        others = [o for o in scene.objects if o.colour == "blue"]
        if others:
            red = scene.objects[0]
            if (red.x < others[0].x) == (label == "yes"):
                return scene


def _presence_scene(world: ShapesWorld, rng: random.Random, label: str) -> Scene:
    while True:
        scene = world.sample_scene(rng, n_objects=rng.randint(1, 3))
        present = any(o.colour == "red" and o.shape == "circle" for o in scene.objects)
        if present == (label == "yes"):
            return scene


TASKS = (
    Task("colour", QUESTIONS["colour"], tuple(COLOURS), lambda w, r, label: w.sample_scene(r, n_objects=1, colour=label), "colour of a single shape (6 classes)"),
    Task("shape", QUESTIONS["shape"], SHAPES, lambda w, r, label: w.sample_scene(r, n_objects=1, shape=label), "shape of a single object (4 classes)"),
    Task("size", QUESTIONS["size"], tuple(SIZES), lambda w, r, label: w.sample_scene(r, n_objects=1, size=label), "size of a single shape (2 classes)"),
    Task("count", QUESTIONS["count"], COUNT_WORDS, lambda w, r, label: w.sample_scene(r, n_objects=COUNT_WORDS.index(label) + 1), "number of shapes, one to four"),
    Task("presence", QUESTIONS["presence"].format(colour="red", shape="circle"), ("no", "yes"), _presence_scene, "is there a red circle among 1-3 shapes?"),
    Task("relation", QUESTIONS["relation"].format(colour_a="red", colour_b="blue"), ("no", "yes"), _relation_scene, "is the red shape left of the blue one?"),
)
TASK_NAMES = tuple(task.name for task in TASKS)


def write_task(task: Task, folder: Path, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    world = ShapesWorld()
    for split, per_class, split_seed in (("support", SUPPORT_PER_CLASS, seed), ("queries", QUERIES_PER_CLASS, seed + 1000)):
        rng = random.Random(f"{task.name}-{split_seed}")
        rows = []
        for label in task.labels:
            for i in range(per_class):
                scene = task.scene_for(world, rng, label)
                name = f"{split}_{label}_{i}.png"
                world.render(scene, rng).save(folder / name, optimize=True)
                rows.append({"image": name, "question": task.question, "label": label})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (folder / "README.md").write_text(
        f"# Task: {task.name}\n\n{task.description}.\n\nQuestion: `{task.question}`\n\n"
        f"`support.jsonl`: {SUPPORT_PER_CLASS} examples per class; `queries.jsonl`: {QUERIES_PER_CLASS} held-out examples per class.\n",
        encoding="utf-8",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/examples"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for task in TASKS:
        write_task(task, args.out / task.name, args.seed)


if __name__ == "__main__":
    main()
