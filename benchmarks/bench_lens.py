"""Prints the head lens's figures on the bundled teaching model; no timed assertions anywhere.

    python benchmarks/bench_lens.py

1. cost: the lens for one head on one image against capturing the same layers for that image
   (both stop after the head's layer; target: ratio <= 1.5), median of interleaved runs.
2. pointer head: on the colour task's single-object queries, the share of head (2, 0)'s image
   attention on the grid cells that cover the object (target: median >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in a checkout

from sav_explorer import Example, capture_heads, load_examples, load_model
from sav_explorer.capture import sites_for_heads
from sav_explorer.lens import look, region_share
from sav_explorer.models import EXAMPLES_DIR
from sav_explorer.teaching.shapes import BACKGROUND


def bench_cost(loaded, example: Example, head: tuple[int, int], repeats: int) -> None:
    sites = sites_for_heads(loaded, [head])
    lens_times, capture_times = [], []
    for _ in range(repeats):  # interleaved, so that a busy moment of the machine hits both
        start = time.perf_counter()
        look(loaded, example, [head])
        lens_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        capture_heads(loaded, [example], sites=sites)
        capture_times.append(time.perf_counter() - start)
    lens_ms, capture_ms = 1000 * statistics.median(lens_times), 1000 * statistics.median(capture_times)
    print(f"[cost] head {head} on one {Image.open(example.images[0]).size} image, median of {repeats}:")
    print(f"[cost] lens {lens_ms:.2f} ms, capture of the same layers {capture_ms:.2f} ms, ratio {lens_ms / capture_ms:.2f} (target <= 1.5)")


def object_share(lens, head, path) -> float:
    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.int64))
    return region_share(lens, head, (pixels - torch.tensor(BACKGROUND)).abs().sum(-1) > 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model(device="cpu")
    queries = load_examples(EXAMPLES_DIR / "colour" / "queries.jsonl")
    for query in queries[:3]:  # warm up
        look(loaded, query, [(2, 0)])
    bench_cost(loaded, queries[0], (2, 0), args.repeats)
    bench_cost(loaded, queries[0], (7, 0), args.repeats)
    shares = [object_share(look(loaded, q, [(2, 0)]), (2, 0), q.images[0]) for q in queries]
    print(
        f"[pointer] head (2, 0) on {len(shares)} colour queries: share of image attention on the object's cells "
        f"median {statistics.median(shares):.4f}, min {min(shares):.4f} (target median >= 0.95)"
    )


if __name__ == "__main__":
    main()
