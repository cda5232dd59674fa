"""Lets the teaching model's tower read its images at `factor` × the pixels a side, with the same
image tokens: each token's patch is `factor` × as wide, and the patch kernel is spread over it.

    python -m sav_explorer.teaching.sharpen --out DIR --factor 2 MODEL   # then train --resume DIR

At 64 pixels a drawing a tenth of the canvas wide is thirteen pixels across and its pen under one,
so a washed square and an outlined cross blur towards the other shapes (the README's *Big
drawings*). A sharpened model starts as the model it came from: a patch kernel repeated over
`factor` × `factor` blocks and divided by `factor`² reads a sharp image as the old kernel reads
its `factor` × `factor` block averages, and the position embeddings, the token count and the
decoder are unchanged. Stage 6 run on it again can then learn what the extra pixels show.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .build import build_processor, sharpness_of
from .mix import LOG_FILE, WEIGHTS_FILE

PATCH_KERNEL = "vision_tower.embeddings.patch_embedding.weight"  # as `save_pretrained` names it


def sharpen_patch_kernel(kernel: torch.Tensor, factor: int) -> torch.Tensor:
    """A (out, channels, p, p) kernel as a (out, channels, factor·p, factor·p) one that gives on an
    image what `kernel` gives on its factor × factor block averages."""
    if factor < 1:
        raise ValueError(f"the factor must be a whole number of 1 or more, not {factor}")
    spread = kernel.float().repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3) / factor**2
    return spread.to(kernel.dtype)


def sharpen_folder(source: Path, factor: int, out: Path) -> None:
    """Writes the sharpened model into `out`: its weights with the patch kernel spread, its
    configuration and processor for `factor` × the pixels, and its training log, which records
    the sharpening."""
    from transformers import AutoConfig

    if not (source / WEIGHTS_FILE).is_file():
        raise SystemExit(f"{source} has no {WEIGHTS_FILE}: give a folder this package's training wrote")
    config = AutoConfig.from_pretrained(source)
    weights = load_file(source / WEIGHTS_FILE)
    if PATCH_KERNEL not in weights:
        raise SystemExit(f"{source} is not a teaching model: it has no {PATCH_KERNEL}")
    before = sharpness_of(config)
    weights[PATCH_KERNEL] = sharpen_patch_kernel(weights[PATCH_KERNEL], factor)
    config.vision_config.image_size *= factor
    config.vision_config.patch_size *= factor
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_file(weights, out / WEIGHTS_FILE, metadata={"format": "pt"})
    if (source / "generation_config.json").is_file():
        shutil.copy2(source / "generation_config.json", out / "generation_config.json")
    build_processor(before * factor).save_pretrained(out)  # the chat template too
    log = json.loads((source / LOG_FILE).read_text()) if (source / LOG_FILE).is_file() else {"stages": []}
    log["sharpened"] = {"from": str(source), "factor": factor, "sharpness": before * factor}
    (out / LOG_FILE).write_text(json.dumps(log, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Lets the teaching model's tower read its images at more pixels, same tokens.")
    parser.add_argument("model", type=Path)
    parser.add_argument("--factor", type=int, default=2, help="pixels a side per pixel before (default 2: 64 to 128)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.factor < 1:
        parser.error(f"--factor must be a whole number of 1 or more, not {args.factor}")
    sharpen_folder(args.model, args.factor, args.out)


if __name__ == "__main__":
    main()
