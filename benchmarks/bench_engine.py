"""Prints the engine's speed figures (DESIGN section 4); no timed assertions anywhere.

    python benchmarks/bench_engine.py                 # all three, on the bundled model
    python benchmarks/bench_engine.py --only rescore

1. fit: seconds per example of `fit_examples` against a bare loop that runs the processor and
   the full model forward on the same inputs and batch size (target: ratio <= 1.1).
2. rescore: latency of a change of k or of the head set, from cached per-head similarities, at
   28 x 28 heads, 200 examples, 10 classes, head size 128 (target: median < 20 ms).
3. early stop: decoder time of a capture that stops after layer L, against a full forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in a checkout

from sav_explorer import SAVClassifier, fit_examples, load_examples, load_model
from sav_explorer.capture import HeadActivations, HeadCapture
from sav_explorer.encoding import RunOptions
from sav_explorer.heads import HeadLayout, LayerBlock
from sav_explorer.models import EXAMPLES_DIR, build_prompt
from sav_explorer.models.prompts import processor_inputs


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_fit(model_id: str | None, data: str, batch_size: int, repeats: int) -> None:
    loaded = load_model(model_id, device="cpu")
    examples = load_examples(data)

    @torch.no_grad()
    def bare_loop():
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            images = [e.load_images() for e in batch]
            prompts = [build_prompt(loaded.processor, e.question, len(i)) for e, i in zip(batch, images)]
            loaded.model(**processor_inputs(loaded, images, prompts), use_cache=False)

    fit = lambda: fit_examples(loaded, examples, run=RunOptions(batch_size=batch_size), k=20)  # noqa: E731
    fit(), bare_loop()  # warm up
    fit_time, bare_time = best_of(fit, repeats), best_of(bare_loop, repeats)
    n = len(examples)
    print(f"[fit] {loaded.model_id}: {n} examples, batch {batch_size}, best of {repeats}")
    print(
        f"[fit] bare loop {1000 * bare_time / n:.2f} ms/example, fit {1000 * fit_time / n:.2f} ms/example, "
        f"ratio {fit_time / bare_time:.3f} (target <= 1.1)"
    )


def bench_rescore(repeats: int) -> None:
    torch.manual_seed(0)
    n_layers, n_heads, n_examples, n_classes, head_dim = 28, 28, 200, 10, 128
    labels = [f"class{i % n_classes}" for i in range(n_examples)]
    centres = torch.randn(n_classes, n_layers * n_heads, head_dim)
    acts = centres[torch.tensor([i % n_classes for i in range(n_examples)])] + 3 * torch.randn(n_examples, n_layers * n_heads, head_dim)
    layout = HeadLayout(tuple(LayerBlock(layer, n_heads, head_dim) for layer in range(n_layers)))
    blocks = list(acts.split(n_heads, dim=1))
    start = time.perf_counter()
    clf = SAVClassifier(k=20).fit(HeadActivations(layout, blocks), labels)
    fit_ms = 1000 * (time.perf_counter() - start)
    rng = torch.Generator().manual_seed(1)

    def change_k():
        clf.select(k=int(torch.randint(1, 100, (1,), generator=rng)))
        return clf.leave_one_out_accuracy()

    def toggle_head():
        heads = clf.selected_heads
        extra = clf.heads_[int(torch.randint(0, len(clf.heads_), (1,), generator=rng))]
        heads = [h for h in heads if h != extra] if extra in heads else heads + [extra]
        clf.select(heads=heads or [extra])
        return clf.leave_one_out_accuracy()

    for name, fn in (("change k", change_k), ("toggle a head", toggle_head)):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t))
        print(
            f"[rescore] {name}: median {statistics.median(times):.2f} ms, p95 {sorted(times)[int(0.95 * len(times)) - 1]:.2f} ms "
            f"over {repeats} runs ({n_layers}x{n_heads} heads, {n_examples} examples, {n_classes} classes, head size {head_dim}, "
            f"torch threads {torch.get_num_threads()}; target median < 20 ms)"
        )
    print(f"[rescore] one-off fit from cached activations (all class means and similarities): {fit_ms:.0f} ms")


def bench_early_stop(model_id: str | None, data: str, batch_size: int, repeats: int, synthetic: bool) -> None:
    if synthetic:
        loaded = synthetic_llava()
    else:
        loaded = load_model(model_id, device="cpu")
    examples = load_examples(data)[:batch_size]
    images = [e.load_images() for e in examples]
    prompts = [build_prompt(loaded.processor, e.question, len(i)) for e, i in zip(examples, images)]
    inputs = processor_inputs(loaded, images, prompts)

    @torch.no_grad()
    def capture_until(site_index: int | None):
        sites = loaded.sites if site_index is None else [loaded.sites[site_index]]
        with HeadCapture(loaded, inputs["attention_mask"], sites, stop_early=site_index is not None):
            loaded.model(**inputs, use_cache=False)

    full = best_of(lambda: capture_until(None), repeats)
    before_decoder = best_of(lambda: capture_until(0), repeats)  # vision tower, projector, embeddings, layer 0 attention
    n = len(loaded.sites)
    print(f"[early stop] {loaded.model_id}: batch {len(examples)}, {loaded.n_layers} decoder layers, best of {repeats}")
    print(
        f"[early stop] full forward {1000 * full:.1f} ms; stop at the first layer {1000 * before_decoder:.1f} ms (vision + prefill start)"
    )
    for index in sorted({n // 4, n // 2, (3 * n) // 4, n - 1}):
        t = best_of(lambda index=index: capture_until(index), repeats)
        share = (t - before_decoder) / max(full - before_decoder, 1e-9)
        print(
            f"[early stop] deepest selected layer {loaded.sites[index].layer}: {1000 * t:.1f} ms, "
            f"decoder time {share:.2f} of a full forward's "
            f"(layer share {(index) / (n - 1):.2f})"
        )


def synthetic_llava():
    """A random-weight LLaVA of laptop scale (16 layers, width 512), where decoder time dominates."""
    from transformers import LlavaForConditionalGeneration

    from sav_explorer.models import LoadedModel, find_attention_sites
    from sav_explorer.teaching.build import build_config, build_processor

    processor = build_processor()
    config = build_config(processor.tokenizer, text_layers=16, text_heads=8, width=512)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    return LoadedModel(model, processor, "synthetic-llava-16x512", "random", find_attention_sites(model), 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default: $SAV_MODEL or the bundled teaching model")
    parser.add_argument("--data", default=str(EXAMPLES_DIR / "colour" / "support.jsonl"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("fit", "rescore", "early-stop"))
    parser.add_argument("--synthetic", action="store_true", help="early stop on a bigger random LLaVA instead of --model")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "rescore"):
        default_threads = torch.get_num_threads()
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            bench_rescore(repeats=50)
        torch.set_num_threads(default_threads)
    if args.only in (None, "fit"):
        bench_fit(args.model, args.data, args.batch_size, args.repeats)
    if args.only in (None, "early-stop"):
        bench_early_stop(args.model, args.data, args.batch_size, args.repeats, args.synthetic)


if __name__ == "__main__":
    main()
