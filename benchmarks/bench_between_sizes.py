"""Does the teaching model read a shape at the sizes between the world's small and large?

    python benchmarks/bench_between_sizes.py [--per-shape 24] [--model DIR]

The world draws objects at half-widths 5 (small) and 10 (large) of its 64 pixels; stages 4 and 6
drew them at 0.8 to 1.2 times those, and stage 6 big from 8 up, so 6 to 8 was never drawn
(until `train --between-sizes`).
Drawings at a tenth of the canvas (`bigdrawings`' smallest band) are that size. Here one object
of each shape at half-widths 4 to 10, drawn flat on the world's grey as the world renders, and
stroked by hand on a canvas (`drawn.hand_style`, bent by up to a fifth of its half-width): shape
read by SAV (the bundled shape support set, k = 20) and by the model's own answer, per size.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sav_explorer.answers import generate_answers  # noqa: E402
from sav_explorer.data import Example, load_examples  # noqa: E402
from sav_explorer.encoding import Encoding, RunOptions  # noqa: E402
from sav_explorer.models import EXAMPLES_DIR, load_model, quiet_transformers  # noqa: E402
from sav_explorer.pipeline import fit_examples, predict_examples  # noqa: E402
from sav_explorer.teaching.drawn import WORLD_SIZE_WARP, hand_style, render_drawn, sample_style, world_render_style  # noqa: E402
from sav_explorer.teaching.shapes import COLOURS, SHAPES, SIZES, Scene, ShapeObject  # noqa: E402

HALF_WIDTHS = (4, 5, 6, 7, 8, 9, 10)


def drawings(kind: str, half: float, per_shape: int) -> list[Example]:
    question = load_examples(EXAMPLES_DIR / "shape" / "support.jsonl")[0].question
    rows = []
    for shape in SHAPES:
        for i in range(per_shape):
            rng = random.Random(f"between-{kind}-{half}-{shape}-{i}")
            obj = ShapeObject(rng.choice(tuple(COLOURS)), shape, "small", rng.randint(14, 50), rng.randint(14, 50))
            scale = half / SIZES["small"]
            if kind == "flat":
                style = world_render_style(scale)
            else:
                style = replace(hand_style(rng, sample_style(rng), WORLD_SIZE_WARP), scale=scale)
            rows.append(Example((render_drawn(Scene((obj,)), rng, style).image,), question, shape))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the bundled teaching model")
    parser.add_argument("--per-shape", type=int, default=24)
    args = parser.parse_args()
    quiet_transformers()
    loaded, run = load_model(args.model), RunOptions(batch_size=16)
    shape_sav = fit_examples(loaded, load_examples(EXAMPLES_DIR / "shape" / "support.jsonl"), run=run, k=20)[0]
    print(f"Shape read at each half-width (scene pixels of 64), {4 * args.per_shape} drawings a cell: SAV / answers")
    print("  half-width    " + "".join(f"{h:>13}" for h in HALF_WIDTHS))
    for kind in ("flat", "hand"):
        cells = []
        for half in HALF_WIDTHS:
            rows = drawings(kind, half, args.per_shape)
            sav = [p.label for p in predict_examples(loaded, shape_sav, rows, run)]
            answers = generate_answers(loaded, rows, Encoding(), run, max_new_tokens=4)
            right = [sum(g == r.label for g, r in zip(guesses, rows)) / len(rows) for guesses in (sav, answers)]
            cells.append(f"{100 * right[0]:5.1f}/{100 * right[1]:5.1f}")
        print(f"  {kind:<14}" + "".join(f"{c:>13}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
