"""Decodable or causal, on the teaching model: the flip rate of steering each task's SAV heads to each
class (replace, the class's support mean), beside as many random heads of the same layers; and the
cost of a patching sweep over every head against one forward pass.

    python benchmarks/bench_causal.py [--tasks colour shape count] [--random 3] [--every N]
"""

from __future__ import annotations

import argparse
import time

import torch

from sav_explorer import fit_examples, load_examples, load_model
from sav_explorer.causal import patch, steering_study
from sav_explorer.encoding import encode
from sav_explorer.models import EXAMPLES_DIR

K = {"colour": 5, "shape": 5, "count": 20, "size": 5, "presence": 20, "relation": 20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=["colour", "shape", "count"])
    parser.add_argument("--random", type=int, default=3)
    parser.add_argument("--every", type=int, default=1, help="every Nth query only (a quicker run)")
    args = parser.parse_args()
    loaded = load_model()
    for task in args.tasks:
        support = load_examples(EXAMPLES_DIR / task / "support.jsonl")
        queries = load_examples(EXAMPLES_DIR / task / "queries.jsonl")[:: args.every]
        clf, _ = fit_examples(loaded, support, k=K[task])
        print(f"{task}, k = {K[task]}, replace, generated answers, {len(queries)} queries:")
        for target in clf.classes_:
            start = time.perf_counter()
            report = steering_study(loaded, queries, clf.classes_, support, target, clf.selected_heads, clf.encoding, n_random=args.random)
            low, high = report.flip_interval
            rates = ", ".join(f"{r:.2f}" for r in report.random_flip_rates)
            print(
                f"  to {target:<8} flip {report.flip_rate:.3f} ({low:.2f}-{high:.2f}) on {report.n}; "
                f"random heads {rates}; before {report.before_rate:.2f}  [{time.perf_counter() - start:.0f} s]",
                flush=True,
            )
    support = load_examples(EXAMPLES_DIR / "colour" / "support.jsonl")
    clf, _ = fit_examples(loaded, support, k=5)
    queries = load_examples(EXAMPLES_DIR / "colour" / "queries.jsonl")
    source, target = queries[0], next(q for q in queries if q.label != queries[0].label)
    batch = encode(loaded, [target], clf.encoding)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(10):
            loaded.model(**batch.inputs, use_cache=False)
        forward = (time.perf_counter() - start) / 10
    for batch_size in (1, 16):
        start = time.perf_counter()
        report = patch(loaded, clf, source, target, clf.selected_heads, sweep=True, batch_size=batch_size)
        took = time.perf_counter() - start
        n = len(report.effects)
        print(
            f"patching sweep over {n} heads, {batch_size} per pass: {took:.2f} s in all, {took / n * 1000:.1f} ms per head "
            f"= {took / n / forward:.2f} forward passes (one forward {forward * 1000:.1f} ms)"
        )


if __name__ == "__main__":
    main()
