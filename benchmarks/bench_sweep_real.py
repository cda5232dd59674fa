"""A patching sweep over every head of a real-size model (random weights, CPU), timed against one
forward pass: what `patch --sweep` costs per head where the model is not tiny.

    python benchmarks/bench_sweep_real.py [--model smolvlm-256m] [--batch 16]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import torch
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from sav_explorer import Encoding, Example, encode, load_model  # noqa: E402
from sav_explorer.causal import _last_logits, _sweep  # noqa: E402
from sav_explorer.interventions import support_means  # noqa: E402


def noise(seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (384, 384, 3), generator=generator, dtype=torch.uint8).numpy())


def main() -> None:
    from real_size_models import build_real

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smolvlm-256m")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        loaded = load_model(str(build_real(args.model, pathlib.Path(folder) / "m")), device="cpu")
        support = [Example((noise(i),), "Is it red?") for i in range(2)]
        encoding = Encoding(question="Is it red?", max_image_tokens=256)
        batch = encode(loaded, [support[1]], encoding)
        with torch.no_grad():
            loaded.model(**batch.inputs, use_cache=False)
            start = time.perf_counter()
            for _ in range(3):
                loaded.model(**batch.inputs, use_cache=False)
            forward = (time.perf_counter() - start) / 3
        # The builders' tokenizer writes every label as "Ġ" first, so `patch` refuses to compare labels;
        # the sweep's cost is the same for any two tokens: these are two of the vocabulary's.
        tokens = [100, 200]

        def logit_diff(logits):
            return logits[:, tokens[0]] - logits[:, tokens[1]]

        start = time.perf_counter()
        source_means = support_means(loaded, [support[0]], loaded.layout.heads, encoding)
        before = float(logit_diff(_last_logits(loaded, batch))[0])
        effects = _sweep(loaded, support[1], encoding, source_means, before, logit_diff, args.batch, None)
        took = time.perf_counter() - start
        n = len(effects)
        print(
            f"{args.model}: {n} heads, {batch.input_ids.shape[1]} tokens; sweep {took:.1f} s in all "
            f"({took / n * 1000:.0f} ms per head = {took / n / forward:.2f} forward passes; one forward {forward:.2f} s; "
            f"{args.batch} heads per pass, the source run included)"
        )


if __name__ == "__main__":
    main()
