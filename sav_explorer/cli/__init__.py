"""Command line: fit, evaluate and use SAV classifiers, and look at their heads.

    python -m sav_explorer fit --data assets/examples/colour/support.jsonl --out runs/colour
    python -m sav_explorer eval --classifier runs/colour --data assets/examples/colour/queries.jsonl --json
    python -m sav_explorer predict --classifier runs/colour picture.png --json
    python -m sav_explorer attention --classifier runs/colour --out overlays picture.png
    python -m sav_explorer ablate --classifier runs/colour --data assets/examples/colour/queries.jsonl \
        --support assets/examples/colour/support.jsonl --json
    python -m sav_explorer steer --classifier runs/colour --data QUERIES --support SUPPORT --to red --json
    python -m sav_explorer patch --classifier runs/colour --source red.png --target blue.png --sweep --json
    python -m sav_explorer attribute --classifier runs/colour --data QUERIES --json
    python -m sav_explorer atlas --models MODEL ... --tasks DATA ... --out atlas [--ray auto]
    python -m sav_explorer report --classifier runs/colour --data assets/examples/colour/queries.jsonl --out report.html

Errors caused by input print one line to stderr and exit with status 2; nothing is pickled.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import get_args

from ..answers import ZERO_SHOT_METHODS
from ..classifier import DEFAULT_HEAD_ORDER
from ..errors import SAVError
from ..interventions import ABLATION_MODES
from ..lens import Weighting
from ..method import HeadOrder, Scoring, TieBreak
from ..models import default_model_id, quiet_transformers
from .causal import add_commands as add_causal_commands
from .classify import run_eval, run_fit, run_predict
from .common import data_options, frames_option, heads_option, model_options, ray_options
from .heads import run_ablate, run_atlas, run_attention, run_compare, run_curve, run_data
from .report import add_command as add_report_command


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_transformers()
    try:
        return args.run(args)
    except SAVError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head -1`): stop quietly, as command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's own flush at exit does not complain
        return 141
    except Exception as error:  # an unexpected failure still gets one line, unless debugging
        if os.environ.get("SAV_DEBUG"):
            raise
        print(f"error: unexpected {type(error).__name__}: {error} (set SAV_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sav_explorer", description="Sparse Attention Vector classifiers over LMM attention heads."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="capture heads on a labeled support set and save a classifier")
    model_options(fit, default=default_model_id())
    fit.add_argument("--data", required=True, help="folder of class sub-folders, or a .jsonl / .csv file")
    fit.add_argument("--out", required=True, type=Path, help="classifier folder to write")
    fit.add_argument("--question", help="question for rows that have none")
    fit.add_argument("--k", type=int, help="number of heads that vote (default: 20, or every head of a smaller model)")
    fit.add_argument("--scoring", choices=get_args(Scoring), default="in-sample")
    fit.add_argument("--tie-break", choices=get_args(TieBreak), default="similarity")
    fit.add_argument("--head-order", choices=get_args(HeadOrder), default=DEFAULT_HEAD_ORDER, help="order of heads with equal scores")
    fit.add_argument("--save-activations", action="store_true", help="also write activations.safetensors")
    data_options(fit)
    frames_option(fit)
    ray_options(fit)
    fit.add_argument("--json", action="store_true", help="print a JSON summary")
    fit.set_defaults(run=run_fit)

    ev = commands.add_parser("eval", help="accuracy of a saved classifier on a labeled test set")
    model_options(ev, default=None)
    ev.add_argument("--classifier", required=True, type=Path)
    ev.add_argument("--data", required=True)
    ev.add_argument("--question", help="question for rows that have none (default: the classifier's)")
    ev.add_argument(
        "--zero-shot",
        nargs="?",
        const="generate",
        choices=ZERO_SHOT_METHODS,
        help="also score the model's own answers (generate: free answers matched to the labels; likelihood: forced choice)",
    )
    data_options(ev)
    frames_option(ev)
    ray_options(ev)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(run=run_eval)

    predict = commands.add_parser("predict", help="classify images with a saved classifier")
    model_options(predict, default=None)
    predict.add_argument("--classifier", required=True, type=Path)
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--question", help="question to ask (default: the classifier's)")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(run=run_predict)

    curve = commands.add_parser("curve", help="accuracy against k: leave-one-out, nested, and on a test set")
    model_options(curve, default=None)
    curve.add_argument("--classifier", required=True, type=Path)
    curve.add_argument("--data", help="a labeled test set: captured once, then re-scored for every k")
    curve.add_argument("--question", help="question for rows that have none (default: the classifier's)")
    data_options(curve)
    frames_option(curve)
    curve.add_argument("--json", action="store_true")
    curve.set_defaults(run=run_curve)

    compare = commands.add_parser("compare", help="how two tasks' heads relate: shared top-k heads, Jaccard, rank correlation")
    compare.add_argument("classifiers", nargs=2, type=Path, metavar="DIR")
    compare.add_argument("--k", type=int, help="top-k heads to compare (default: the smaller of the two classifiers' k)")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(run=run_compare)

    ablate = commands.add_parser("ablate", help="does the model need these heads? its own answers with them ablated, against random heads")
    model_options(ablate, default=None)
    ablate.add_argument("--classifier", required=True, type=Path)
    ablate.add_argument("--data", required=True, help="labeled queries: the model answers each one's question")
    ablate.add_argument("--support", help="the support set whose means replace the heads (needed for --mode mean)")
    heads_option(ablate)
    ablate.add_argument("--mode", choices=ABLATION_MODES, default="mean")
    ablate.add_argument("--random", type=int, default=5, metavar="N", help="draws of as many random heads from the same layers")
    ablate.add_argument("--zero-shot", choices=ZERO_SHOT_METHODS, default="generate", help="how the answers are read")
    ablate.add_argument("--question", help="question for rows that have none (default: the classifier's)")
    ablate.add_argument("--seed", type=int, default=0)
    data_options(ablate)
    ray_options(ablate)
    ablate.add_argument("--json", action="store_true")
    ablate.set_defaults(run=run_ablate)

    data = commands.add_parser("data", help="what the engine will read from a data file: images, final question text, label")
    data.add_argument("data", help="a data file (or a folder of class sub-folders)")
    data.add_argument("--question", help="question for rows that have none")
    data_options(data)
    data.add_argument("--json", action="store_true")
    data.set_defaults(run=run_data)

    attention = commands.add_parser("attention", help="where heads look: their attention from the last input token over each image")
    model_options(attention, default=None)
    attention.add_argument(
        "--classifier", type=Path, help="a saved classifier: its model, question and (without --heads) its selected heads"
    )
    attention.add_argument("--heads", nargs="+", metavar="L:H", help="heads as layer:head, e.g. 2:0 3:5")
    attention.add_argument("--question", help="question to ask (default: the classifier's)")
    attention.add_argument("--weighting", choices=get_args(Weighting), default="attention", help="value: weights times value norms")
    attention.add_argument("--out", type=Path, help="folder for one overlay PNG per image and head")
    attention.add_argument("--json", action="store_true")
    ray_options(attention)
    attention.add_argument("images", nargs="*", type=Path)
    attention.set_defaults(run=run_attention)
    add_causal_commands(commands, model_options, data_options, ray_options)
    add_report_command(commands)

    atlas = commands.add_parser("atlas", help="fit every task on every model: a table and a plot of where each task's heads sit")
    atlas.add_argument("--models", nargs="+", required=True, metavar="MODEL", help="hub ids or local folders")
    atlas.add_argument("--tasks", nargs="+", required=True, metavar="DATA", help="labeled support sets, one per task")
    atlas.add_argument("--out", required=True, type=Path, help="folder for atlas.csv, atlas.json, atlas.html and the classifiers")
    atlas.add_argument("--k", type=int, help="heads per task (default: 20, or every head of a smaller model)")
    atlas.add_argument("--question", help="question for rows that have none")
    atlas.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    atlas.add_argument("--device")
    atlas.add_argument("--batch-size", type=int, default=8)
    atlas.add_argument("--max-image-tokens", type=int, metavar="N", help="image tokens per image at most")
    atlas.add_argument("--max-pixels", type=int, metavar="N", help="larger images are scaled down to this many pixels first")
    data_options(atlas)
    ray_options(atlas)
    atlas.add_argument("--json", action="store_true")
    atlas.set_defaults(run=run_atlas, device_map=None)
    return parser
