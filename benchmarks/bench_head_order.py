"""Which order should heads with equal scores take? Held-out accuracy of each order on fresh queries.

    python benchmarks/bench_head_order.py [--per-class 30] [--model DIR]

With 5 examples per class, head scores are fractions like 26/30 and many heads tie: at k = 20
on every bundled task more heads tie at the 20th place than there are places left, so the tie
order picks a good share of the voters. Each bundled task is fitted once on its support set;
the queries are fresh scenes from the shapes-world generator (seeds the bundled queries and
the training never used; drawn for the drawn task), captured once; every order and k is then re-scored from the same
similarities. Prints accuracy with 95 % Wilson intervals per task and pooled over the tasks.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sav_explorer.analysis import wilson_interval  # noqa: E402
from sav_explorer.capture import capture_heads  # noqa: E402
from sav_explorer.data import Example, load_examples  # noqa: E402
from sav_explorer.encoding import RunOptions  # noqa: E402
from sav_explorer.method import HeadOrder, select_heads, vote  # noqa: E402
from sav_explorer.models import EXAMPLES_DIR, load_model, quiet_transformers  # noqa: E402
from sav_explorer.pipeline import fit_examples  # noqa: E402
from sav_explorer.teaching.drawn import render_drawn  # noqa: E402
from sav_explorer.teaching.examples import TASKS  # noqa: E402
from sav_explorer.teaching.shapes import ShapesWorld  # noqa: E402

ORDERS: tuple[HeadOrder, ...] = ("layer-head", "official", "margin")
KS = (5, 10, 20)


def fresh_queries(task, per_class: int) -> list[Example]:
    world = ShapesWorld()
    rows = []
    for label in task.labels:
        for i in range(per_class):
            rng = random.Random(f"head-order-{task.name}-{label}-{i}")
            scene = task.scene_for(world, rng, label)
            image = render_drawn(scene, rng).image if task.drawn else world.render(scene, rng)
            rows.append(Example((image,), task.question, label))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    quiet_transformers()
    loaded = load_model(args.model, device="cpu")
    pooled = {(order, k): [0, 0] for order in ORDERS for k in KS}
    print(f"held-out accuracy on {args.per_class} fresh queries per class, support: the bundled 5 per class")
    print(f"{'task':<9} {'k':>3} " + " ".join(f"{order:>24}" for order in ORDERS) + "   tied at k-th place / places left")
    for task in TASKS:
        support = load_examples(EXAMPLES_DIR / task.name / "support.jsonl")
        clf, _ = fit_examples(loaded, support, run=RunOptions(batch_size=16), k=1)
        queries = fresh_queries(task, args.per_class)
        sims = clf.similarities(capture_heads(loaded, queries, run=RunOptions(batch_size=16)))
        truth = torch.tensor([clf.classes_.index(q.label) for q in queries])
        scores = clf.in_sample_scores_
        margins = clf.in_sample_margins_
        for k in KS:
            cells = []
            for order in ORDERS:
                ranking = select_heads(scores, k, order, margins)
                predicted, _ = vote(sims, ranking, clf.tie_break)
                right = int((predicted == truth).sum())
                pooled[(order, k)][0] += right
                pooled[(order, k)][1] += len(truth)
                low, high = wilson_interval(right, len(truth))
                cells.append(f"{right / len(truth):6.1%} ({low:5.1%}-{high:5.1%})")
            kth = torch.sort(scores, descending=True).values[k - 1]
            tied, above = int((scores == kth).sum()), int((scores > kth).sum())
            print(f"{task.name:<9} {k:>3} " + " ".join(f"{c:>24}" for c in cells) + f"   {tied} / {k - above}")
    print("pooled over the tasks:")
    for k in KS:
        cells = []
        for order in ORDERS:
            right, n = pooled[(order, k)]
            low, high = wilson_interval(right, n)
            cells.append(f"{right / n:6.1%} ({low:5.1%}-{high:5.1%})")
        print(f"{'all':<9} {k:>3} " + " ".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
