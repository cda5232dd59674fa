"""Image tokens, seconds and peak memory per image on a SmolVLM-256M-shaped model, at image-token budgets.

    python benchmarks/bench_budget.py [--images 4] [--budgets own 1024 256 64]

The model has random weights at SmolVLM-256M-Instruct's published dimensions (Idefics3
architecture: Llama text, hidden 576, intermediate 1536, 30 layers, 9 heads, 3 key-value heads,
vocabulary 49,280; SigLIP vision, hidden 768, intermediate 3072, 12 layers, 12 heads, patch 16,
image 512; pixel-shuffle scale 4: 64 tokens per 512-pixel view) and its processor as published
(image splitting on, longest edge 2048, 512-pixel splits), built offline and loaded through
`load_model`. Each setting runs in a fresh process, so that its peak resident memory is its own:
half the images 1024 x 768 (a photo), half 448 x 336, captured one at a time after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def build(folder: Path) -> Path:
    """SmolVLM-256M's shape with random weights, and a processor as published (`tests/real_size_models.py`)."""
    from real_size_models import build_real

    return build_real("smolvlm-256m", folder)


def measure(folder: str, budget: int | None, n_images: int) -> dict:
    """In this process: tokens, seconds per image (capture, one image at a time) and peak memory."""
    import torch
    from PIL import Image

    from sav_explorer.capture import capture_heads
    from sav_explorer.data import Example
    from sav_explorer.encoding import Encoding, RunOptions
    from sav_explorer.models import load_model, quiet_transformers

    quiet_transformers()
    torch.set_num_threads(2)
    loaded = load_model(folder, device="cpu")
    sizes = [(1024, 768) if i % 2 == 0 else (448, 336) for i in range(n_images)]
    examples = [Example((Image.new("RGB", size, (30 + 40 * i, 90, 160)),), "What is in the image?") for i, size in enumerate(sizes)]
    capture_heads(loaded, examples[:1], Encoding(max_image_tokens=budget), RunOptions(batch_size=1))  # warm-up
    start = time.perf_counter()
    activations = capture_heads(loaded, examples, Encoding(max_image_tokens=budget), RunOptions(batch_size=1))
    seconds = (time.perf_counter() - start) / n_images
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"budget": budget, "tokens": activations.image_tokens, "seconds_per_image": round(seconds, 2), "peak_mb": round(peak_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--budgets", nargs="+", default=["own", "1024", "256", "64"])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: FOLDER:BUDGET, measured in this process
    args = parser.parse_args()
    if args.one:
        folder, _, budget = args.one.rpartition(":")
        print(json.dumps(measure(folder, None if budget == "own" else int(budget), args.images)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        folder = build(Path(scratch) / "smolvlm-256m")
        print(f"built a SmolVLM-256M-shaped model in {time.perf_counter() - started:.0f} s")
        print(f"{'budget':>8} {'tokens per image (1024x768, 448x336)':>38} {'s / image':>10} {'peak MB':>8}")
        for budget in args.budgets:
            out = subprocess.run(
                [sys.executable, __file__, "--images", str(args.images), "--one", f"{folder}:{budget}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            tokens = sorted(set(row["tokens"]), reverse=True)
            print(f"{budget:>8} {', '.join(map(str, tokens)):>38} {row['seconds_per_image']:>10.2f} {row['peak_mb']:>8}")


if __name__ == "__main__":
    main()
