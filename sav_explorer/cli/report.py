"""The report command: one self-contained HTML file of a saved classifier, and of its evaluation on queries.

python -m sav_explorer report --classifier runs/colour --data QUERIES [--support TRAIN] [--out report.html]
"""

from __future__ import annotations

from pathlib import Path

from ..analysis import accuracy_curve, class_indices
from ..capture import capture_heads
from ..classifier import SAVClassifier
from ..data import labels_of
from ..pipeline import Evaluation, load_activations
from ..report import LENS_HEADS, ModelInfo, Results, lens_maps, questions_of, write_report
from .common import data_options, encoding_for, model_for, model_options, read_data, run_options


def add_command(commands) -> None:
    report = commands.add_parser("report", help="one self-contained HTML file: the classifier, its heads, and its evaluation")
    model_options(report, default=None)
    report.add_argument("--classifier", required=True, type=Path)
    report.add_argument(
        "--data", help="labeled queries: the evaluation (with its errors) and the curve's test line, from one capture of every layer"
    )
    report.add_argument(
        "--support", help="the support set the classifier was fitted on: where the top heads look (default: on the queries)"
    )
    report.add_argument("--lens-heads", type=int, default=LENS_HEADS, metavar="N", help="top heads whose lens is shown (0: none)")
    report.add_argument("--question", help="question for rows that have none (default: the classifier's)")
    report.add_argument("--out", type=Path, default=Path("report.html"), help="the file to write (default: report.html)")
    data_options(report)
    report.set_defaults(run=run_report)


def run_report(args) -> int:
    clf = SAVClassifier.load(args.classifier)
    encoding = encoding_for(args, clf)
    saved = load_activations(args.classifier, clf.layout_)  # the nested leave-one-out, where fit saved them
    queries = read_data(args, args.data, question=encoding.question) if args.data else []
    support = read_data(args, args.support, question=encoding.question) if args.support else []
    labels_of(queries)  # every query labeled, before any model work
    results = Results()
    maps, model = None, ModelInfo.of_classifier(clf)
    test_similarities = test_labels = None
    if queries or support:
        loaded = model_for(args, clf)
        model = ModelInfo.of(loaded)
        if queries:  # every layer once: the selected heads' votes, and every head's similarities for the curve
            activations = capture_heads(loaded, queries, encoding, run_options(args, "capturing the queries"))
            results.evaluation = Evaluation.of(queries, clf.explain(activations), clf.classes_)
            test_similarities, test_labels = clf.similarities(activations), class_indices(clf, labels_of(queries))
        if args.lens_heads > 0:
            source = "support images" if support else "queries"
            maps = lens_maps(loaded, clf, support or queries, clf.selected_heads[: args.lens_heads], encoding, source=source)
    results.curve = accuracy_curve(clf, saved[0] if saved else None, test_similarities, test_labels)
    path = write_report(
        args.out, clf, model, task=args.classifier.resolve().name, results=results, maps=maps, questions=questions_of(support or queries)
    )
    evaluated = f"; accuracy {results.evaluation.report.accuracy:.3f} on {results.evaluation.report.n} queries" if queries else ""
    print(f"report written to {path} ({path.stat().st_size / 1e6:.1f} MB){evaluated}")
    return 0
