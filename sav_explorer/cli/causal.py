"""Commands that ask whether heads carry the answer: steer (a class's mean put into them), patch
(heads taken from another input's run, with a per-head sweep) and attribute (direct logit
attribution and the logit lens)."""

from __future__ import annotations

import json
from pathlib import Path

from ..attribution import attribute
from ..causal import patch, patch_on_ray, steering_on_ray, steering_study
from ..classifier import SAVClassifier
from ..data import Example
from ..errors import DataError
from .common import (
    check_ray_model,
    chosen_heads,
    encoding_for,
    heads_option,
    model_for,
    model_spec,
    ray_options_of,
    read_data,
    run_options,
)


def run_steer(args) -> int:
    clf = SAVClassifier.load(args.classifier)
    encoding = encoding_for(args, clf)
    queries = read_data(args, args.data, question=encoding.question)
    support = read_data(args, args.support, question=encoding.question)
    options = dict(mode=args.mode, alpha=args.alpha, n_random=args.random, seed=args.seed, method=args.answers)
    if args.ray:  # the random draws run the queries again each: on a cluster's actors
        report, description = steering_on_ray(
            ray_options_of(args),
            model_spec(args, clf),
            clf.layout_,
            queries,
            clf.classes_,
            support,
            args.to,
            chosen_heads(args, clf),
            encoding,
            batch_size=args.batch_size,
            **options,
        )
        check_ray_model(args, clf, description)
    else:
        loaded = model_for(args, clf)
        report = steering_study(
            loaded, queries, clf.classes_, support, args.to, chosen_heads(args, clf), encoding, run_options(args), **options
        )
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    low, high = report.flip_interval
    print(f"steering {len(report.heads)} heads to {report.target!r} ({report.mode}) on {report.n} queries of the other classes:")
    print(
        f"  flip rate {report.flip_rate:.3f} (95 % interval {low:.3f}-{high:.3f}); "
        f"already {report.target!r} before: {report.before_rate:.3f}"
    )
    if report.random:
        rates = ", ".join(f"{rate:.3f}" for rate in report.random_flip_rates)
        print(f"  as many random heads of the same layers: {rates}")
    for row in report.answers()[:10]:
        print(f"  {row['example']} ({row['label']}): {row['before']!r} -> {row['after']!r}")
    return 0


def run_patch(args) -> int:
    clf = SAVClassifier.load(args.classifier)
    encoding = encoding_for(args, clf)
    for path in (args.source, args.target):
        if not path.is_file():
            raise DataError(f"image not found: {path}")
    source, target = Example((args.source,), encoding.question), Example((args.target,), encoding.question)
    if args.ray:  # a sweep runs the target once per head: spread over a cluster's actors
        if not args.sweep:
            raise DataError("--ray spreads a sweep over a cluster; give --sweep with it (one patch is a single run)")
        report, description = patch_on_ray(
            ray_options_of(args),
            model_spec(args, clf),
            clf,
            source,
            target,
            chosen_heads(args, clf),
            encoding,
            batch_size=args.batch_size,
        )
        check_ray_model(args, clf, description)
    else:
        loaded = model_for(args, clf)
        report = patch(loaded, clf, source, target, chosen_heads(args, clf), encoding, sweep=args.sweep, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"source read as {report.source_label!r}, target as {report.target_label!r}; {len(report.heads)} heads patched")
    print(f"  answer: {report.answer_before!r} -> {report.answer_after!r}")
    print(
        f"  logit difference ({report.source_label} - {report.target_label}): "
        f"{report.logit_diff_before:.3f} -> {report.logit_diff_after:.3f}"
    )
    if report.effects is not None:
        top = sorted(report.effects, key=lambda e: -e[2])[:10]
        print("  heads patched alone, effect (1 = every head patched): " + ", ".join(f"{layer}:{h} {e:.3f}" for layer, h, e in top))
    return 0


def run_attribute(args) -> int:
    clf = SAVClassifier.load(args.classifier)
    encoding = encoding_for(args, clf)
    queries = read_data(args, args.data, question=encoding.question)
    loaded = model_for(args, clf)
    report = attribute(loaded, queries, clf.classes_, encoding, run_options(args))
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    scores = report.head_scores()
    order = scores.argsort(descending=True)[:10].tolist()
    print(f"direct logit attribution over {len(queries)} queries (decomposition error {report.decomposition_error:.2e}):")
    print(
        "  heads pushing the true class most: "
        + ", ".join(f"{report.heads[i][0]}:{report.heads[i][1]} {float(scores[i]):.3f}" for i in order)
    )
    print("  logit lens, by layer: the true class's first token's probability, then each class's, over all queries:")
    for (layer, probabilities), true in zip(report.logit_lens, report.true_class_lens):
        print(f"    layer {layer}: true {true:.3f} | " + "  ".join(f"{c} {p:.3f}" for c, p in probabilities.items()))
    return 0


def add_commands(commands, model_options, data_options, ray_options) -> None:
    from ..answers import ZERO_SHOT_METHODS
    from ..causal import STEER_MODES

    steer = commands.add_parser("steer", help="put a class's mean into heads: does the model's answer become that class?")
    model_options(steer, default=None)
    steer.add_argument("--classifier", required=True, type=Path)
    steer.add_argument("--data", required=True, help="labeled queries; those of the other classes are steered")
    steer.add_argument("--support", required=True, help="the support set the classifier was fitted on: the target class's means")
    steer.add_argument("--to", required=True, metavar="LABEL", help="the class to steer to")
    heads_option(steer)
    steer.add_argument("--mode", choices=STEER_MODES, default="replace")
    steer.add_argument("--alpha", type=float, default=1.0, help="with --mode add: the shift is alpha x (class mean - support mean)")
    steer.add_argument("--random", type=int, default=3, metavar="N", help="draws of as many random heads from the same layers")
    steer.add_argument("--seed", type=int, default=0)
    steer.add_argument("--answers", choices=ZERO_SHOT_METHODS, default="generate", help="how the model's answers are read")
    steer.add_argument("--question", help="question for rows that have none (default: the classifier's)")
    data_options(steer)
    ray_options(steer)
    steer.add_argument("--json", action="store_true")
    steer.set_defaults(run=run_steer)

    patching = commands.add_parser("patch", help="run a target image with heads taken from a source image's run")
    model_options(patching, default=None)
    patching.add_argument("--classifier", required=True, type=Path)
    patching.add_argument("--source", required=True, type=Path, help="the image whose heads' outputs are patched in")
    patching.add_argument("--target", required=True, type=Path, help="the image run with them")
    heads_option(patching)
    patching.add_argument("--sweep", action="store_true", help="also patch every head alone: each one's share of the whole change")
    patching.add_argument("--question", help="question to ask (default: the classifier's)")
    patching.add_argument("--json", action="store_true")
    ray_options(patching)
    patching.set_defaults(run=run_patch)

    attributing = commands.add_parser("attribute", help="direct logit attribution of every head, and the logit lens")
    model_options(attributing, default=None)
    attributing.add_argument("--classifier", required=True, type=Path)
    attributing.add_argument("--data", required=True, help="labeled queries")
    attributing.add_argument("--question", help="question for rows that have none (default: the classifier's)")
    data_options(attributing)
    attributing.add_argument("--json", action="store_true")
    attributing.set_defaults(run=run_attribute)
