"""Mixes two trainings of the teaching model weight by weight (Wortsman et al. 2022, "WiSE-FT").

    python -m sav_explorer.teaching.mix --out DIR --weight 0.7 FIRST SECOND   # 0.7 FIRST + 0.3 SECOND

Two stage-6 runs from the same weights (stage 5's) each kept half of what was asked: one read big
drawings and lost a point on scenes of several objects, the other kept those scenes and misread
big crosses. Both moved little from their common start, so the straight line between them stays
a good model and a point on it keeps both (see the README's *Big drawings*). The folder written
loads with `from_pretrained`; its `training_log.json` keeps both runs' logs and the weight.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "training_log.json"
# What a log says of its weights besides their stages, kept by `mix` and `train --resume` in every
# log they write after: `sharpened`, the stages before it were trained at another resolution.
CARRIED_RECORDS = ("sharpened",)


def mix_state_dicts(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """weight * first + (1 - weight) * second for every floating-point tensor, computed in float32
    and stored in the first's dtype; integer tensors (buffers such as position ids) must agree."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the weight must be between 0 and 1, not {weight}")
    if first.keys() != second.keys():
        only = sorted(first.keys() ^ second.keys())
        raise ValueError(f"the two models do not have the same tensors (only in one: {', '.join(only[:5])})")
    mixed = {}
    for name, a in first.items():
        b = second[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"{name}: {tuple(a.shape)} {a.dtype} against {tuple(b.shape)} {b.dtype}")
        if a.is_floating_point():
            mixed[name] = (weight * a.float() + (1.0 - weight) * b.float()).to(a.dtype)
        elif torch.equal(a, b):
            mixed[name] = a
        else:
            raise ValueError(f"{name}: integer tensors that differ cannot be mixed")
    return mixed


def mix_folders(first: Path, second: Path, weight: float, out: Path) -> None:
    """Writes the mixed model into `out`: the first folder's configuration, processor and template,
    the mixed weights, and a training log that records both runs and the weight."""
    for folder in (first, second):
        if not (folder / WEIGHTS_FILE).is_file():
            raise SystemExit(f"{folder} has no {WEIGHTS_FILE}: give two folders this package's training wrote")
    try:
        mixed = mix_state_dicts(load_file(first / WEIGHTS_FILE), load_file(second / WEIGHTS_FILE), weight)
    except ValueError as err:
        raise SystemExit(f"cannot mix {first} and {second}: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    for path in first.iterdir():
        if path.is_file() and path.name not in (WEIGHTS_FILE, LOG_FILE):
            shutil.copy2(path, out / path.name)
    save_file(mixed, out / WEIGHTS_FILE, metadata={"format": "pt"})
    logs = [json.loads((folder / LOG_FILE).read_text()) if (folder / LOG_FILE).is_file() else {} for folder in (first, second)]
    record = {
        "stages": logs[0].get("stages", []),  # what `train --resume` reads: every stage is done
        "mixed": {"weight": weight, "first": logs[0], "second": logs[1]},
    }
    record.update({key: logs[0][key] for key in CARRIED_RECORDS if key in logs[0]})
    (out / LOG_FILE).write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Mixes two trainings of the teaching model weight by weight.")
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--weight", type=float, required=True, help="the first model's share, between 0 and 1")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0.0 <= args.weight <= 1.0:
        parser.error(f"--weight must be between 0 and 1, not {args.weight}")
    mix_folders(args.first, args.second, args.weight, args.out)
    print(f"wrote {args.out}: {args.weight} x {args.first} + {1 - args.weight:g} x {args.second}")


if __name__ == "__main__":
    main()
