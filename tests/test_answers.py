"""Reading the model's own answers as labels: whole words, longer labels first, no other label."""

import pytest

from sav_explorer.answers import ZeroShotReport, labels_named

LABELS = ["blue", "light blue", "red", "no", "yes"]


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ("Blue.", ["blue"]),
        ("It is LIGHT blue!", ["light blue"]),  # not also "blue"
        ("light blue and blue", ["light blue", "blue"]),
        ("reddish", []),  # whole words only
        ("Yes, it is.", ["yes"]),
        ("nothing", []),  # "no" is not inside "nothing"
        ("red or blue?", ["blue", "red"]),
    ],
)
def test_an_answer_names_labels_as_whole_words_longer_labels_first(answer, named):
    assert sorted(labels_named(answer, LABELS)) == sorted(named)


def test_an_answer_naming_no_label_is_unmatched_and_one_naming_two_is_wrong():
    report = ZeroShotReport("generate", predicted=["red", None, ""], truth=["red", "blue", "blue"], answers=["red", "purple", "red blue"])
    assert report.accuracy == pytest.approx(1 / 3) and report.unmatched == 1
    low, high = report.interval
    assert low < 1 / 3 < high
    assert report.to_json()["zero_shot_unmatched"] == 1
