"""What the image-feature cache saves: a second extraction with a reworded question, and an ablation, with and without it.

    python benchmarks/bench_image_cache.py [--models smolvlm-256m qwen2-vl-2b llava-onevision-0.5b teaching]
                                           [--images 20] [--queries 8] [--draws 3] [--max-image-tokens N]

For each model, in one process and one run (so that the ratios share the machine's load):
- *extraction*: `fit_examples` on `--images` photos with one question (the cache cold), then again
  with a reworded question (every image in the cache); the ratio second / first.
- *ablation*: mean ablation of the fit's top 5 heads with `--draws` random draws, likelihood
  scoring of the labels, on `--queries` other photos, the means over as many support examples,
  first with the cache off (a limit of 0: every pass encodes its images), then with an empty cache
  of its own; the reports must be equal. The ratio cached / uncached.
Real-size shapes are random-weight checkpoints at published dimensions (`tests/real_size_models.py`),
read with the app's CPU defaults (448 x 448 max pixels) and an image-token budget (`--max-image-tokens`,
default 320: five 64-token views on SmolVLM; 0: the processor's own settings, 17 views of 64 on SmolVLM).
`teaching` is the bundled model on its colour task (30 support images), as the app extracts it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench_real_sizes import photo  # noqa: E402

QUESTIONS = ("What is in the image?", "Describe what this picture shows.")


def measure(folder: str | None, n_images: int, n_queries: int, draws: int, budget: int | None, ablation: bool = True) -> dict:
    import torch

    from sav_explorer import Encoding, Example, load_examples, load_model
    from sav_explorer.ablation import ablation_study
    from sav_explorer.capture import capture_heads
    from sav_explorer.image_cache import ImageFeatureCache
    from sav_explorer.models import EXAMPLES_DIR, default_model_id, quiet_transformers
    from sav_explorer.models.budget import BudgetError, budget_settings
    from sav_explorer.pipeline import fit_examples

    quiet_transformers()
    torch.set_num_threads(2)
    base = load_model(folder or default_model_id(), device="cpu", image_cache_bytes=0)
    if folder is None:  # the bundled model on its colour task, with the app's defaults
        support = load_examples(EXAMPLES_DIR / "colour" / "support.jsonl")  # all 30, as the app loads the task
        queries = load_examples(EXAMPLES_DIR / "colour" / "queries.jsonl")[::3]  # every colour
        encodings = [Encoding(question, max_pixels=200704) for question in QUESTIONS]
    else:
        try:
            budget_settings(base, budget or None)
        except BudgetError:  # a family without a budget reads its processor's own settings
            budget = None
        budget = budget or None
        support = [Example((photo((640 + 16 * i, 480)),), label="wide" if i % 2 else "narrow") for i in range(n_images)]
        queries = [Example((photo((480, 640 + 16 * i)),), label="wide" if i % 2 else "narrow") for i in range(n_images)]
        encodings = [Encoding(question, max_pixels=448 * 448, max_image_tokens=budget) for question in QUESTIONS]

    capture_heads(base, queries[:2], encodings[0])  # warm-up: first-call costs out of the timings
    cached = base.with_image_cache(ImageFeatureCache(4 * 1024**3))
    timings = {}
    started = time.perf_counter()
    clf, first = fit_examples(cached, support, encodings[0], k=20)
    timings["extract_first_s"] = time.perf_counter() - started
    started = time.perf_counter()
    fit_examples(cached, support, encodings[1], k=20)
    timings["extract_again_s"] = time.perf_counter() - started
    per_image = cached.image_cache.bytes / max(1, len(cached.image_cache))

    result = {
        "image_tokens": first.image_tokens[0] if first.image_tokens else None,
        "extract_first_s": round(timings["extract_first_s"], 1),
        "extract_again_s": round(timings["extract_again_s"], 1),
        "extract_ratio": round(timings["extract_again_s"] / timings["extract_first_s"], 3),
        "cache_mb_per_image": round(per_image / 2**20, 3),
    }
    if not ablation:
        return result
    heads, classes = clf.selected_heads[:5], clf.classes_
    means_from = support[::3] if folder is None else support  # the teaching support is sorted by colour
    reports = {}
    for name, loaded in (
        ("uncached", base.with_image_cache(ImageFeatureCache(0))),
        ("cached", base.with_image_cache(ImageFeatureCache(4 * 1024**3))),
    ):
        started = time.perf_counter()
        reports[name] = ablation_study(
            loaded, queries[:n_queries], classes, heads, encodings[0], support=means_from[:n_queries], n_random=draws, method="likelihood"
        )
        timings[f"ablation_{name}_s"] = time.perf_counter() - started
    if reports["cached"] != reports["uncached"]:
        raise SystemExit("the cached ablation report differs from the uncached one")
    return {
        **result,
        **{key: round(value, 1) for key, value in timings.items() if key.startswith("ablation")},
        "ablation_ratio": round(timings["ablation_cached_s"] / timings["ablation_uncached_s"], 3),
    }


def main() -> None:
    from real_size_models import REAL_SIZES, build_real

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[*REAL_SIZES, "teaching"], choices=[*REAL_SIZES, "teaching"])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--queries", type=int, default=8, help="ablation's queries, and the support examples its means average")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--max-image-tokens", type=int, default=320, help="0: the processor's own settings")
    parser.add_argument("--no-ablation", action="store_true", help="only the two extractions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            folder = None if name == "teaching" else str(build_real(name, Path(scratch) / name))
            result = measure(folder, args.images, args.queries, args.draws, args.max_image_tokens, not args.no_ablation)
            print(json.dumps({"model": name, "images": args.images, "queries": args.queries, "draws": args.draws, **result}), flush=True)


if __name__ == "__main__":
    main()
