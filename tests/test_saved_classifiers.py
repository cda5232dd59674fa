"""Classifier folders written by earlier versions keep loading and predicting the same."""

from __future__ import annotations

import json

from sav_explorer import SAVClassifier, load_examples, load_model, predict_examples
from sav_explorer.models import EXAMPLES_DIR
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"


def test_a_format_1_folder_from_before_the_typed_core_predicts_as_it_did():
    recorded = json.loads((FIXTURES / "classifier-v1-predictions.json").read_text())
    clf = SAVClassifier.load(FIXTURES / "classifier-v1")
    assert clf.manifest_.format_version == 1 and clf.selected_heads[:2] == [(2, 0), (2, 5)]
    loaded = load_model()
    clf.manifest_.check_matches(loaded.model_id, loaded.revision, loaded.layout)  # re-record the fixture if the bundled model changes
    queries = load_examples(EXAMPLES_DIR / recorded["task"] / "queries.jsonl")
    by_name = {q.name: q for q in queries}
    examples = [by_name[row["image"]] for row in recorded["predictions"]]
    predictions = predict_examples(loaded, clf, examples)  # read under the encoding the old manifest implies
    assert [p.label for p in predictions] == [row["label"] for row in recorded["predictions"]]
    # Vote counts too, but a head whose two nearest class means are almost equally near may vote
    # otherwise on a CPU that rounds differently: at most one head's vote may move per image.
    for prediction, row in zip(predictions, recorded["predictions"]):
        moved = sum(abs(prediction.votes[c] - row["votes"][c]) for c in row["votes"])
        assert moved <= 2, (row["image"], prediction.votes, row["votes"])
    assert sum(p.votes == row["votes"] for p, row in zip(predictions, recorded["predictions"])) >= 38
