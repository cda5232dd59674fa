"""Command line: fit, evaluate and use SAV classifiers.

    python -m sav_explorer fit --data assets/examples/colour/support.jsonl --out runs/colour
    python -m sav_explorer eval --classifier runs/colour --data assets/examples/colour/queries.jsonl --json
    python -m sav_explorer predict --classifier runs/colour picture.png --json

Errors caused by input print one line to stderr and exit with status 2; nothing is pickled.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import get_args

from tqdm import tqdm

from .classifier import SAVClassifier
from .data import Example, labels_of, load_examples
from .errors import SAVError
from .method import Scoring, TieBreak
from .models import default_model_id, load_model, quiet_transformers
from .pipeline import evaluate, fit_examples, predict_examples, save_activations

log = logging.getLogger("sav_explorer")
DEFAULT_K = 20  # the paper's


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
    _model_options(fit, default=default_model_id())
    fit.add_argument("--data", required=True, help="folder of class sub-folders, or a .jsonl / .csv file")
    fit.add_argument("--out", required=True, type=Path, help="classifier folder to write")
    fit.add_argument("--question", help="question for rows that have none")
    fit.add_argument("--k", type=int, help="number of heads that vote (default: 20, or every head of a smaller model)")
    fit.add_argument("--scoring", choices=get_args(Scoring), default="in-sample")
    fit.add_argument("--tie-break", choices=get_args(TieBreak), default="similarity")
    fit.add_argument("--save-activations", action="store_true", help="also write activations.safetensors")
    fit.add_argument("--json", action="store_true", help="print a JSON summary")
    fit.set_defaults(run=run_fit)

    ev = commands.add_parser("eval", help="accuracy of a saved classifier on a labeled test set")
    _model_options(ev, default=None)
    ev.add_argument("--classifier", required=True, type=Path)
    ev.add_argument("--data", required=True)
    ev.add_argument("--question", help="question for rows that have none (default: the classifier's)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(run=run_eval)

    predict = commands.add_parser("predict", help="classify images with a saved classifier")
    _model_options(predict, default=None)
    predict.add_argument("--classifier", required=True, type=Path)
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--question", help="question to ask (default: the classifier's)")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(run=run_predict)
    return parser


def _model_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    help_model = (
        "hub id or local folder (default: $SAV_MODEL or the bundled teaching model)" if default else "default: the classifier's model"
    )
    parser.add_argument("--model", default=default, help=help_model)
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), help="default float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--device-map", help="e.g. auto: shard across GPUs with accelerate (replaces --device)")
    parser.add_argument("--batch-size", type=int, default=8)


def _load(args, model_id: str):
    return load_model(model_id, dtype=args.dtype, device=args.device, device_map=args.device_map)


def _progress(total_label: str):
    bar = tqdm(desc=total_label, unit="example", file=sys.stderr, disable=None)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def run_fit(args) -> int:
    examples = load_examples(args.data, question=args.question)
    loaded = _load(args, args.model)
    k = args.k if args.k is not None else min(DEFAULT_K, loaded.layout.n_heads)
    clf, activations = fit_examples(
        loaded,
        examples,
        k=k,
        scoring=args.scoring,
        tie_break=args.tie_break,
        question=args.question,
        batch_size=args.batch_size,
        on_batch=_progress("capturing heads"),
    )
    question = args.question or examples[0].question
    clf.save(args.out, model_id=loaded.model_id, revision=loaded.revision, question=question)
    if args.save_activations:
        save_activations(args.out, activations, labels_of(examples), clf.classes_)
    summary = {
        "classifier": str(args.out),
        "model": loaded.model_id,
        "n": len(examples),
        "labels": clf.classes_,
        "k": clf.k,
        "selected": [list(h) for h in clf.selected_heads],
        "leave_one_out_accuracy_heads_fixed": clf.leave_one_out_accuracy(),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"fitted {len(clf.classes_)} classes on {len(examples)} examples; {clf.k} heads: {summary['selected']}")
        print(f"leave-one-out accuracy (heads not re-selected): {summary['leave_one_out_accuracy_heads_fixed']:.3f}")
        print(f"saved to {args.out}")
    return 0


def _classifier_and_model(args):
    clf = SAVClassifier.load(args.classifier)
    manifest = clf.manifest_
    loaded = _load(args, args.model or manifest.model_id)
    manifest.check_matches(loaded.model_id, loaded.revision, loaded.layout)
    return clf, loaded


def run_eval(args) -> int:
    clf, loaded = _classifier_and_model(args)
    examples = load_examples(args.data, question=args.question or clf.manifest_.question)
    truth = labels_of(examples)
    predictions = predict_examples(loaded, clf, examples, batch_size=args.batch_size, on_batch=_progress("classifying"))
    report = evaluate([p.label for p in predictions], truth, clf.classes_, names=[e.name for e in examples])
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"accuracy {report.accuracy:.3f} on {report.n} examples")
    for label, accuracy in report.per_class_accuracy.items():
        print(f"  {label}: {accuracy:.3f}")
    width = max(len(x) for x in report.confusion_labels + report.confusion_predicted) + 1
    print("confusion (rows: true, columns: predicted)")
    print(" " * width + "".join(p.rjust(width) for p in report.confusion_predicted))
    for label, row in zip(report.confusion_labels, report.confusion_matrix):
        print(label.rjust(width) + "".join(str(v).rjust(width) for v in row))
    return 0


def run_predict(args) -> int:
    clf, loaded = _classifier_and_model(args)
    question = args.question or clf.manifest_.question
    examples = [Example((path,), question) for path in args.images]
    predictions = predict_examples(loaded, clf, examples, batch_size=args.batch_size, default_question=question)
    rows = [{"image": str(path), "label": p.label, "votes": p.votes} for path, p in zip(args.images, predictions)]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['image']}: {row['label']}  votes {row['votes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
