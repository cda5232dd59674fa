"""Command line: fit, evaluate and use SAV classifiers.

    python -m sav_explorer fit --data assets/examples/colour/support.jsonl --out runs/colour
    python -m sav_explorer eval --classifier runs/colour --data assets/examples/colour/queries.jsonl --json
    python -m sav_explorer predict --classifier runs/colour picture.png --json
    python -m sav_explorer attention --classifier runs/colour --out overlays picture.png

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

import torch
from tqdm import tqdm

from .analysis import accuracy_curve, compare_tasks, wilson_interval
from .capture import capture_heads
from .classifier import SAVClassifier
from .data import Example, labels_of, load_examples, open_image
from .errors import DataError, SAVError
from .lens import Weighting, density_on_image, look, overlay
from .method import Scoring, TieBreak
from .models import default_model_id, load_model, quiet_transformers, unseen_words
from .pipeline import evaluate, fit_examples, load_activations, predict_examples, save_activations

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

    curve = commands.add_parser("curve", help="accuracy against k: leave-one-out, nested, and on a test set")
    _model_options(curve, default=None)
    curve.add_argument("--classifier", required=True, type=Path)
    curve.add_argument("--data", help="a labeled test set: captured once, then re-scored for every k")
    curve.add_argument("--question", help="question for rows that have none (default: the classifier's)")
    curve.add_argument("--json", action="store_true")
    curve.set_defaults(run=run_curve)

    compare = commands.add_parser("compare", help="how two tasks' heads relate: shared top-k heads, Jaccard, rank correlation")
    compare.add_argument("classifiers", nargs=2, type=Path, metavar="DIR")
    compare.add_argument("--k", type=int, help="top-k heads to compare (default: the smaller of the two classifiers' k)")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(run=run_compare)

    attention = commands.add_parser("attention", help="where heads look: their attention from the last input token over each image")
    _model_options(attention, default=None)
    attention.add_argument(
        "--classifier", type=Path, help="a saved classifier: its model, question and (without --heads) its selected heads"
    )
    attention.add_argument("--heads", nargs="+", metavar="L:H", help="heads as layer:head, e.g. 2:0 3:5")
    attention.add_argument("--question", help="question to ask (default: the classifier's)")
    attention.add_argument("--weighting", choices=get_args(Weighting), default="attention", help="value: weights times value norms")
    attention.add_argument("--out", type=Path, help="folder for one overlay PNG per image and head")
    attention.add_argument("--json", action="store_true")
    attention.add_argument("images", nargs="*", type=Path)
    attention.set_defaults(run=run_attention)
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
    _warn_unseen_words(loaded, dict.fromkeys(e.question_or(args.question) for e in examples))
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
    loo = clf.leave_one_out_accuracy()
    summary = {
        "classifier": str(args.out),
        "model": loaded.model_id,
        "n": len(examples),
        "labels": clf.classes_,
        "k": clf.k,
        "selected": [list(h) for h in clf.selected_heads],
        "leave_one_out_accuracy_heads_fixed": loo,
        "leave_one_out_interval": list(wilson_interval(round(loo * len(examples)), len(examples))),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"fitted {len(clf.classes_)} classes on {len(examples)} examples; {clf.k} heads: {summary['selected']}")
        print(f"leave-one-out accuracy (heads not re-selected): {summary['leave_one_out_accuracy_heads_fixed']:.3f}")
        print(f"saved to {args.out}")
    return 0


def _warn_unseen_words(loaded, questions) -> None:
    unseen = unseen_words(loaded.processor, questions)
    if unseen:
        print(
            f"warning: the model does not know these words of the question and will not see them: {', '.join(map(repr, unseen))}",
            file=sys.stderr,
        )


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
    low, high = report.interval
    print(f"accuracy {report.accuracy:.3f} on {report.n} examples (95 % interval {low:.3f}-{high:.3f})")
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


def run_curve(args) -> int:
    clf = SAVClassifier.load(args.classifier)
    saved = load_activations(args.classifier, clf.layout_)
    test_sims = test_labels = None
    if args.data:
        clf, loaded = _classifier_and_model(args)
        examples = load_examples(args.data, question=args.question or clf.manifest_.question)
        activations = capture_heads(loaded, examples, batch_size=args.batch_size, on_batch=_progress("capturing heads"))
        test_sims = clf.similarities(activations)
        test_labels = torch.tensor([clf.classes_.index(e) if e in clf.classes_ else -1 for e in labels_of(examples)])
    curve = accuracy_curve(clf, saved[0] if saved else None, test_sims, test_labels)
    if args.json:
        print(json.dumps(curve.to_json()))
        return 0
    print("k    leave-one-out (optimistic)  nested  test")
    for i, k in enumerate(curve.k):
        nested = f"{curve.nested_loo[i]:.3f}" if curve.nested_loo else "  -  "
        test = f"{curve.test[i]:.3f}" if curve.test else "  -  "
        print(f"{k:<4} {curve.loo[i]:.3f}{'':22}{nested}   {test}")
    return 0


def run_compare(args) -> int:
    first, second = (SAVClassifier.load(folder) for folder in args.classifiers)
    k = args.k if args.k is not None else min(first.k, second.k)
    comparison = compare_tasks(first, second, k)
    if args.json:
        print(json.dumps(comparison.to_json()))
    else:
        print(
            f"top {k} heads: {comparison.shared} shared, Jaccard {comparison.jaccard:.3f}; "
            f"rank correlation of the head scores (Spearman) {comparison.spearman:.3f}"
        )
    return 0


def _parse_heads(texts: list[str]) -> list[tuple[int, int]]:
    heads = []
    for text in texts:
        layer, _, head = text.partition(":")
        if not (layer.isdigit() and head.isdigit()):
            raise DataError(f"heads are written layer:head, e.g. 2:0; got {text!r}")
        heads.append((int(layer), int(head)))
    return list(dict.fromkeys(heads))


def run_attention(args) -> int:
    # `--heads 2:0 picture.png` hands the picture to --heads: give files found there back to the images
    args.images += [Path(text) for text in args.heads or [] if ":" not in text and Path(text).is_file()]
    args.heads = [text for text in args.heads or [] if ":" in text or not Path(text).is_file()] or None
    if not args.images:
        raise DataError("name one or more images to look at")
    if args.classifier:
        clf, loaded = _classifier_and_model(args)
        question = args.question or clf.manifest_.question
        heads = _parse_heads(args.heads) if args.heads else clf.selected_heads
    else:
        if not args.heads:
            raise DataError("name the heads to look at with --heads L:H ... (or give --classifier to use its selected heads)")
        heads = _parse_heads(args.heads)
        loaded = _load(args, args.model or default_model_id())
        question = args.question
    if not question:
        raise DataError("no question: give --question (the lens reads the prompt that capture reads)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    report = []
    for path in args.images:
        lens = look(loaded, Example((path,), question), heads, weighting=args.weighting)
        views = [lens.heads[h] for h in heads]
        report.append({"image": str(path), "layout": lens.layout.note or "known", "heads": [_lens_json(v) for v in views]})
        if args.out:
            image = open_image(path)
            for view in views:
                density = density_on_image(view.maps[0], image.size) if view.maps[0] else None
                if density is not None:
                    overlay(image, density).save(args.out / f"{path.stem}_L{view.layer}H{view.head}.png")
    if args.json:
        print(json.dumps({"images": report}))
        return 0
    for entry in report:
        print(f"{entry['image']} (layout: {entry['layout']})")
        for head in entry["heads"]:
            print(
                f"  L{head['layer']} H{head['head']}: image {head['image_share']:.3f}  layout {head['layout_share']:.3f}  "
                f"text {head['text_share']:.3f}  first token {head['first_token_share']:.3f}"
            )
    if args.out:
        print(f"overlays written to {args.out}")
    return 0


def _lens_json(view) -> dict:
    maps = [{"view": m.view, "rows": m.rows, "cols": m.cols, "grid": m.grid, "box": list(m.box)} for m in view.maps[0]]
    shares = {name: getattr(view, name) for name in ("image_share", "layout_share", "text_share", "first_token_share")}
    return {"layer": view.layer, "head": view.head, **shares, "maps": maps}


if __name__ == "__main__":
    sys.exit(main())
