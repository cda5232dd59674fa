"""Commands that fit and use classifiers: fit, eval, predict."""

from __future__ import annotations

import json

from ..analysis import wilson_interval
from ..answers import zero_shot
from ..checks import check_classes, check_k
from ..classifier import SAVClassifier
from ..data import Example, labels_of
from ..errors import DataError
from ..pipeline import capture_for, evaluate, fit_activations, fit_examples, predict_examples, save_activations
from .common import (
    DEFAULT_K,
    captured_on_ray,
    check_made_for,
    classifier_and_model,
    encoding_for,
    fit_encoding,
    image_token_summary,
    load,
    model_for,
    read_data,
    run_options,
    warn_unseen_words,
)


def run_fit(args) -> int:
    examples = read_data(args, args.data, question=args.question)
    labels = labels_of(examples)
    settings = dict(scoring=args.scoring, tie_break=args.tie_break, head_order=args.head_order)
    encoding = fit_encoding(args, examples)
    if args.ray:  # the model's head count is known once the actors have loaded it
        check_classes(labels)  # before any model work
        captured = captured_on_ray(args, examples, encoding)
        activations, model_id, revision = captured.activations, captured.model_id, captured.revision
        k = fit_k(args, activations.layout.n_heads)
        check_k(k, activations.layout.n_heads)
        clf = fit_activations(activations, labels, encoding, k=k, **settings)
    else:
        loaded = load(args, args.model)
        warn_unseen_words(loaded, dict.fromkeys(e.question_or(args.question) for e in examples))
        k = fit_k(args, loaded.layout.n_heads)
        clf, activations = fit_examples(loaded, examples, encoding, run_options(args, "capturing heads"), k=k, **settings)
        model_id, revision = loaded.model_id, loaded.revision
    clf.save(args.out, model_id=model_id, revision=revision)
    if args.save_activations:
        save_activations(args.out, activations, labels, clf.classes_)
    loo = clf.leave_one_out_accuracy()
    summary = {
        "classifier": str(args.out),
        "model": model_id,
        "n": len(examples),
        "labels": clf.classes_,
        "k": clf.k,
        "selected": [list(h) for h in clf.selected_heads],
        "leave_one_out_accuracy_heads_fixed": loo,
        "leave_one_out_interval": list(wilson_interval(round(loo * len(examples)), len(examples))),
        "encoding": encoding.to_json(),
        "max_image_tokens": args.max_image_tokens,
        "image_tokens": image_token_summary(activations.image_tokens),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"fitted {len(clf.classes_)} classes on {len(examples)} examples; {clf.k} heads: {summary['selected']}")
        print(f"leave-one-out accuracy (heads not re-selected): {summary['leave_one_out_accuracy_heads_fixed']:.3f}")
        print(f"saved to {args.out}")
    return 0


def fit_k(args, n_heads: int) -> int:
    return args.k if args.k is not None else min(DEFAULT_K, n_heads)


def run_eval(args) -> int:
    if args.ray and args.zero_shot:
        raise DataError("--zero-shot runs the model here: give it without --ray (SAV's capture is what --ray spreads)")
    clf = SAVClassifier.load(args.classifier)
    encoding = encoding_for(args, clf)
    examples = read_data(args, args.data, question=encoding.question)
    truth = labels_of(examples)
    if args.ray:
        captured = captured_on_ray(args, examples, encoding, clf, layers=clf.needed_layers())
        check_made_for(args, clf, captured.model_id, captured.revision, captured.model_layout)
        activations = captured.activations
    else:
        loaded = model_for(args, clf)
        activations = capture_for(loaded, clf, examples, run_options(args, "classifying"), encoding)
    predictions = clf.explain(activations)
    report = evaluate([p.label for p in predictions], truth, clf.classes_, names=[e.name for e in examples])
    own = None
    if args.zero_shot:
        own = zero_shot(loaded, examples, clf.classes_, encoding, run_options(args), method=args.zero_shot)
    if args.json:
        tokens = {
            "encoding": encoding.to_json(),
            "max_image_tokens": encoding.max_image_tokens,
            "image_tokens": image_token_summary(activations.image_tokens),
        }
        print(json.dumps({**report.to_json(), **tokens, **(own.to_json() if own else {})}))
        return 0
    low, high = report.interval
    print(f"accuracy {report.accuracy:.3f} on {report.n} examples (95 % interval {low:.3f}-{high:.3f})")
    if own is not None:
        low, high = own.interval
        print(
            f"the model's own answers ({own.method}): accuracy {own.accuracy:.3f} (95 % interval {low:.3f}-{high:.3f}), "
            f"{own.unmatched} answers naming no label"
        )
        for kind, rows in own.samples.items():
            for row in rows:
                print(f"  {kind}: {row['example']} answered {row['answer']!r} (label {row['label']})")
    for label, accuracy in report.per_class_accuracy.items():
        print(f"  {label}: {accuracy:.3f}")
    width = max(len(x) for x in report.confusion_labels + report.confusion_predicted) + 1
    print("confusion (rows: true, columns: predicted)")
    print(" " * width + "".join(p.rjust(width) for p in report.confusion_predicted))
    for label, row in zip(report.confusion_labels, report.confusion_matrix):
        print(label.rjust(width) + "".join(str(v).rjust(width) for v in row))
    return 0


def run_predict(args) -> int:
    clf, loaded = classifier_and_model(args)
    encoding = encoding_for(args, clf)
    examples = [Example((path,)) for path in args.images]
    predictions = predict_examples(loaded, clf, examples, run_options(args), encoding)
    rows = [{"image": str(path), "label": p.label, "votes": p.votes} for path, p in zip(args.images, predictions)]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['image']}: {row['label']}  votes {row['votes']}")
    return 0
