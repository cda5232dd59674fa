"""Real sizes on this CPU: image tokens, peak memory and seconds per image for three published shapes.

    python benchmarks/bench_real_sizes.py [--models smolvlm-256m llava-onevision-0.5b qwen2-vl-2b] [--no-app]

Random-weight checkpoints at SmolVLM-256M-Instruct's, llava-onevision-qwen2-0.5b-ov-hf's and
Qwen2-VL-2B-Instruct's published dimensions (`tests/real_size_models.py`) are built offline,
saved, and loaded through `load_model` in a fresh process each, so that each peak resident memory
is its own. For each, at 448 x 448 (the app's default max pixels) and 1024 x 768 (a photo), through
the processor's own settings: image tokens per image; seconds per image of a bare processor +
forward loop (`model(**inputs)`) and of capture (one image, after a warm-up capture); the
early-stop saving of capturing only the first half of the layers; and, in a fresh process with
the weights paged in, the memory guard's activation estimate beside how far one capture raises
the peak resident memory (reset first, Linux's clear_refs) over what was resident before it. Then, on
the SmolVLM-256M shape, the app's whole flow with its CPU defaults (448 x 448 max pixels, 256
image tokens per image): extract 20 examples, classify one.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

SIZES = ((448, 448), (1024, 768))
QUESTION = "What is in the image?"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> float:
    """Resets this process's peak resident memory (Linux: clear_refs 5) and returns the resident memory now."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def photo(size: tuple[int, int]):
    """A photo-like image: smooth gradients and some texture, so that no processor shortcut applies."""
    import numpy as np
    from PIL import Image

    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 60], -1)
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype("uint8"))


def measure(folder: str) -> dict:
    """In this process: every figure of one model (see the module's doc)."""
    import torch

    from sav_explorer.capture import capture_heads
    from sav_explorer.data import Example
    from sav_explorer.encoding import RunOptions
    from sav_explorer.models import build_prompt, load_model, quiet_transformers
    from sav_explorer.models.prompts import processor_inputs

    quiet_transformers()
    torch.set_num_threads(2)
    started = time.perf_counter()
    loaded = load_model(folder, device="cpu")
    load_seconds = time.perf_counter() - started
    half = [site for site in loaded.sites if site.layer < loaded.n_layers // 2]
    no_guard = 1 << 50
    rows = []
    for index, size in enumerate(SIZES):
        image = photo(size)
        example = Example((image,), QUESTION)
        if index == 0:
            capture_heads(loaded, [example], run=RunOptions(memory_limit=no_guard))  # warm-up
        started = time.perf_counter()
        inputs = processor_inputs(loaded, [[image]], [build_prompt(loaded.processor, QUESTION, [image])])
        with torch.no_grad():
            loaded.model(**inputs, use_cache=False)
        bare = time.perf_counter() - started
        started = time.perf_counter()
        captured = capture_heads(loaded, [example], run=RunOptions(memory_limit=no_guard))
        capture = time.perf_counter() - started
        started = time.perf_counter()
        capture_heads(loaded, [example], run=RunOptions(memory_limit=no_guard), sites=half)
        halfway = time.perf_counter() - started
        rows.append(
            {
                "size": f"{size[0]}x{size[1]}",
                "image_tokens": captured.image_tokens[0],
                "bare_s": round(bare, 2),
                "capture_s": round(capture, 2),
                "ratio": round(capture / bare, 3),
                "half_depth_s": round(halfway, 2),
                "early_stop_saving": round(1 - halfway / capture, 3),
                "sequence": inputs["input_ids"].shape[1],
            }
        )
    parameters = sum(p.numel() for p in loaded.model.parameters())
    return {"parameters": parameters, "load_s": round(load_seconds, 1), "sizes": rows}


def memory(folder: str, size: tuple[int, int]) -> dict:
    """In a fresh process, weights paged in: the guard's estimate for one image, and how far one capture
    raises the peak resident memory over what was resident before it."""
    import torch

    from sav_explorer.capture import capture_heads
    from sav_explorer.data import Example
    from sav_explorer.encoding import RunOptions
    from sav_explorer.models import build_prompt, load_model, quiet_transformers
    from sav_explorer.models.memory import activation_estimate
    from sav_explorer.models.prompts import processor_inputs

    quiet_transformers()
    torch.set_num_threads(2)
    loaded = load_model(folder, device="cpu")
    sum(float(p.sum()) for p in loaded.model.parameters())  # page every weight in (safetensors are mapped lazily)
    image = photo(size)
    inputs = processor_inputs(loaded, [[image]], [build_prompt(loaded.processor, QUESTION, [image])])
    estimate = activation_estimate(loaded, inputs)
    resident = reset_peak()
    capture_heads(loaded, [Example((image,), QUESTION)], run=RunOptions(memory_limit=1 << 50))
    return {
        "estimate_mb": round(estimate.bytes / 2**20),
        "growth_mb": round(_status_mb("VmHWM") - resident),
        "resident_mb": round(resident),
    }


def app_flow(folder: str) -> dict:
    """The app's flow with its CPU defaults: extract 20 examples (two classes), classify one."""
    import torch

    from sav_explorer.data import Example
    from sav_explorer.encoding import Encoding
    from sav_explorer.models import load_model, quiet_transformers
    from sav_explorer.pipeline import fit_examples, predict_examples

    quiet_transformers()
    torch.set_num_threads(2)
    loaded = load_model(folder, device="cpu")
    examples = [Example((photo((800 + 16 * i, 600)),), QUESTION, "wide" if i % 2 else "narrow") for i in range(20)]
    started = time.perf_counter()
    clf, activations = fit_examples(loaded, examples, Encoding(max_pixels=448 * 448, max_image_tokens=256), k=20)
    extract = time.perf_counter() - started
    started = time.perf_counter()
    predict_examples(loaded, clf, [Example((photo((1024, 768)),), QUESTION)])  # under the fit's encoding
    classify = time.perf_counter() - started
    return {
        "extract_s": round(extract, 1),
        "per_example_s": round(extract / 20, 2),
        "classify_s": round(classify, 2),
        "image_tokens": activations.image_tokens[0],
        "peak_mb": round(peak_mb()),
    }


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    from real_size_models import REAL_SIZES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(REAL_SIZES), choices=REAL_SIZES)
    parser.add_argument("--no-app", action="store_true", help="skip the app's flow on the SmolVLM-256M shape")
    parser.add_argument("--memory-only", action="store_true", help="only the memory guard's estimate against the measured peak")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # internal: build|measure|app FOLDER
    args = parser.parse_args()
    if args.child:
        what, folder = args.child
        if what.startswith("build:"):
            from real_size_models import build_real

            build_real(what.partition(":")[2], Path(folder))
            print(json.dumps({"built": folder}))
        elif what.startswith("memory:"):
            width, height = what.partition(":")[2].split("x")
            print(json.dumps(memory(folder, (int(width), int(height)))))
        else:
            print(json.dumps(measure(folder) if what == "measure" else app_flow(folder)))
        return
    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            folder = str(Path(scratch) / name)
            started = time.perf_counter()
            child("--child", f"build:{name}", folder)
            built = time.perf_counter() - started
            if args.memory_only:
                for size in SIZES:
                    fresh = child("--child", "memory:{}x{}".format(*size), folder)
                    print(f"{name} {size[0]}x{size[1]}: estimate {fresh['estimate_mb']:,} MB, capture +{fresh['growth_mb']:,} MB")
                shutil.rmtree(folder, ignore_errors=True)
                continue
            result = child("--child", "measure", folder)
            print(
                f"\n{name}: {result['parameters'] / 1e6:,.0f} M parameters, built and saved in {built:.0f} s, "
                f"loaded in {result['load_s']} s"
            )
            print(
                f"{'image':>9} {'tokens':>7} {'seq':>6} {'bare s':>8} {'capture s':>10} {'ratio':>6} {'half s':>7} {'saving':>7} "
                f"{'estimate MB':>12} {'capture +MB':>12} {'resident MB':>12}"
            )
            for row, size in zip(result["sizes"], SIZES):
                fresh = child("--child", "memory:{}x{}".format(*size), folder)
                print(
                    f"{row['size']:>9} {row['image_tokens']:>7} {row['sequence']:>6} {row['bare_s']:>8.2f} {row['capture_s']:>10.2f} "
                    f"{row['ratio']:>6.3f} {row['half_depth_s']:>7.2f} {row['early_stop_saving']:>7.1%} {fresh['estimate_mb']:>12,} "
                    f"{fresh['growth_mb']:>12,} {fresh['resident_mb']:>12,}"
                )
            if name == "smolvlm-256m" and not args.no_app:
                flow = child("--child", "app", folder)
                print(
                    f"app flow (448 x 448 max pixels, 256 image tokens): extract 20 examples {flow['extract_s']} s "
                    f"({flow['per_example_s']} s each, {flow['image_tokens']} image tokens), classify one {flow['classify_s']} s, "
                    f"peak {flow['peak_mb']:,} MB"
                )
            shutil.rmtree(folder, ignore_errors=True)  # Qwen2-VL-2B's is 9 GB
    print(f"\ntotal {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
