"""Commands that look at heads: curve (accuracy against k), compare (two tasks), attention (where heads
look), ablate (whether the model needs them), atlas (many tasks on many models)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..ablation import ablation_on_ray, ablation_study
from ..analysis import accuracy_curve, class_indices, compare_tasks
from ..atlas import Task, build_atlas
from ..capture import capture_heads
from ..classifier import SAVClassifier
from ..data import Example, labels_of, open_image
from ..distributed import ModelSpec, example_row, run_on_ray
from ..encoding import Encoding
from ..errors import DataError
from ..lens import LensTask, density_on_image, lens_report, look, maps_of, overlay
from ..models import default_model_id
from ..pipeline import load_activations
from .common import (
    check_ray_model,
    chosen_heads,
    encoding_for,
    load,
    model_for,
    model_spec,
    parse_heads,
    ray_options_of,
    read_data,
    run_options,
)


def run_curve(args) -> int:
    clf = SAVClassifier.load(args.classifier)
    saved = load_activations(args.classifier, clf.layout_)
    test_sims = test_labels = None
    if args.data:
        loaded = model_for(args, clf)
        encoding = encoding_for(args, clf)
        examples = read_data(args, args.data, question=encoding.question)
        activations = capture_heads(loaded, examples, encoding, run_options(args, "capturing heads"))
        test_sims = clf.similarities(activations)
        test_labels = class_indices(clf, labels_of(examples))
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


def run_attention(args) -> int:
    # `--heads 2:0 picture.png` hands the picture to --heads: give files found there back to the images
    args.images += [Path(text) for text in args.heads or [] if ":" not in text and Path(text).is_file()]
    args.heads = [text for text in args.heads or [] if ":" in text or not Path(text).is_file()] or None
    if not args.images:
        raise DataError("name one or more images to look at")
    clf = SAVClassifier.load(args.classifier) if args.classifier else None
    if clf is not None:
        encoding = encoding_for(args, clf)
        heads = parse_heads(args.heads) if args.heads else clf.selected_heads
    else:
        if not args.heads:
            raise DataError("name the heads to look at with --heads L:H ... (or give --classifier to use its selected heads)")
        heads = parse_heads(args.heads)
        encoding = Encoding(args.question, args.max_pixels, args.max_image_tokens)
    if not encoding.question:
        raise DataError("no question: give --question (the lens reads the prompt that capture reads)")
    examples = [Example((path,)) for path in args.images]
    if args.ray:
        rows = [example_row(i, example, encoding.question) for i, example in enumerate(examples)]
        task = LensTask(heads, args.weighting, encoding)
        out, description, _ = run_on_ray(ray_options_of(args), model_spec(args, clf), task, rows, 1)
        if clf is not None:
            check_ray_model(args, clf, description)
        lenses = [json.loads(row["lens"]) for row in out]
    else:
        loaded = model_for(args, clf) if clf is not None else load(args, args.model or default_model_id())
        lenses = [lens_report(look(loaded, e, heads, encoding, weighting=args.weighting), heads) for e in examples]
    report = [{"image": str(path), **lens} for path, lens in zip(args.images, lenses)]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for path, lens in zip(args.images, lenses):
            image = open_image(path)
            for head in lens["heads"]:
                if head["maps"]:
                    density = density_on_image(maps_of(head), tuple(lens["size"]))  # as the model read it
                    overlay(image, density).save(args.out / f"{path.stem}_L{head['layer']}H{head['head']}.png")
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


def run_ablate(args) -> int:
    clf = SAVClassifier.load(args.classifier)
    encoding = encoding_for(args, clf)
    queries = read_data(args, args.data, question=encoding.question)
    support = read_data(args, args.support, question=encoding.question) if args.support else None
    heads = chosen_heads(args, clf)
    options = dict(mode=args.mode, support=support, n_random=args.random, seed=args.seed, method=args.zero_shot)
    if args.ray:
        report, description, _ = ablation_on_ray(
            ray_options_of(args),
            model_spec(args, clf),
            clf.layout_,
            queries,
            clf.classes_,
            heads,
            encoding,
            batch_size=args.batch_size,
            **options,
        )
        check_ray_model(args, clf, description)
    else:
        loaded = model_for(args, clf)
        report = ablation_study(loaded, queries, clf.classes_, heads, encoding, run_options(args), **options)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0

    def line(name: str, answers) -> str:
        low, high = answers.interval
        return f"{name:<34} {answers.accuracy:.3f}  (95 % interval {low:.3f}-{high:.3f})"

    print(f"the model's own answers ({args.zero_shot}) on {report.baseline.n} queries, {len(heads)} heads {args.mode}-ablated:")
    print(line("nothing ablated", report.baseline))
    print(line("these heads ablated", report.ablated))
    if report.random:
        spread = f", spread {report.random_spread:.3f}" if report.random_spread is not None else ""
        print(f"{'as many random heads, same layers':<34} {report.random_accuracy:.3f}  (mean of {len(report.random)} draws{spread})")
    else:
        print("no random control: the layers of these heads have too few other heads to draw as many")
    return 0


def run_data(args) -> int:
    """What the engine will use from a data file: resolved images in order, final question text, label."""
    examples = read_data(args, args.data, question=args.question)
    labels = [e.label for e in examples]
    rows = [{"images": [str(p) for p in e.images], "question": e.question, "label": e.label} for e in examples]
    if args.json:
        print(json.dumps({"n": len(examples), "labels": sorted({str(x) for x in labels if x is not None}), "rows": rows}))
        return 0
    print(f"{len(examples)} examples; labels: " + ", ".join(f"{label} {labels.count(label)}" for label in sorted(set(labels), key=str)))
    for row in rows[:5]:
        print(f"- {row['label']}: {' | '.join(row['images'])}\n  question: {row['question']!r}")
    return 0


def run_atlas(args) -> int:
    tasks = [Task.named_after(source, read_data(args, source, question=args.question), args.question) for source in args.tasks]
    ray = ray_options_of(args) if args.ray else None
    atlas = build_atlas(
        args.models,
        tasks,
        k=args.k,
        batch_size=args.batch_size,
        encoding=Encoding(max_pixels=args.max_pixels, max_image_tokens=args.max_image_tokens, video_frames=getattr(args, "frames", None)),
        load=lambda model: load(args, model),
        ray=ray,
        spec=lambda model: ModelSpec(model, dtype=args.dtype, device=args.device),
        on_fit=lambda model, task: print(f"fitted {task} on {model}", file=sys.stderr),
    )
    written = atlas.write(args.out)
    if args.json:
        print(json.dumps({"entries": [entry.to_json() for entry in atlas.entries]}))
        return 0
    for entry in atlas.entries:
        depth = entry.to_json()["mean_relative_depth"]
        print(f"{entry.model}  {entry.task}: k {entry.k}, mean relative depth {depth:.2f}, leave-one-out {entry.leave_one_out:.3f}")
    print("written: " + ", ".join(str(path) for path in written))
    return 0
