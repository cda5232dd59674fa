"""An image-token budget per image, honoured by every family or refused with the reason."""

import pytest
from PIL import Image

from sav_explorer.encoding import Encoding
from sav_explorer.models import build_prompt, count_image_tokens, load_model
from sav_explorer.models.budget import BudgetError, budget_settings
from sav_explorer.models.prompts import processor_inputs
from tiny_models import FAMILIES, build_tiny

IMAGES = {"small": (40, 30), "square": (800, 800), "wide": (900, 300)}
NOT_ADJUSTABLE = {"llava_next", "llava_onevision"}  # grid pinpoints live in the model: refused with the reason


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-budget")
    return {family: load_model(str(build_tiny(family, root / family)), device="cpu") for family in FAMILIES}


def tokens_per_image(loaded, size, settings=None) -> int:
    inputs = processor_inputs(loaded, [[Image.new("RGB", size, (200, 40, 40))]], [build_prompt(loaded.processor, "What?", 1)], settings)
    return count_image_tokens(loaded, inputs["input_ids"])[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_budget_bounds_every_images_tokens_or_says_why_not(models, family):
    loaded = models[family]
    own = max(tokens_per_image(loaded, size) for size in IMAGES.values())
    honoured = 0
    for budget in (1, 4, 8, 12, 16, 70, 140, own):
        try:
            settings = budget_settings(loaded, budget)
        except BudgetError as refusal:
            assert family in NOT_ADJUSTABLE or "below" in str(refusal), (family, budget, str(refusal))
            continue
        honoured += 1
        assert settings.ceiling is None or settings.ceiling <= budget
        for name, size in IMAGES.items():
            tokens = tokens_per_image(loaded, size, settings)
            assert tokens <= budget, (family, budget, name, tokens, settings)
    assert honoured or family in NOT_ADJUSTABLE


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3", "smolvlm", "internvl", "mistral3"])
def test_a_tight_budget_lowers_the_count_below_the_processors_own(models, family):
    loaded = models[family]
    own = tokens_per_image(loaded, IMAGES["square"])
    budget = max(1, own // 3)
    try:
        settings = budget_settings(loaded, budget)
    except BudgetError:
        settings = budget_settings(loaded, own - 1)
        budget = own - 1
    assert tokens_per_image(loaded, IMAGES["square"], settings) <= budget < own


def test_budgets_below_a_familys_minimum_get_a_message_naming_it(models):
    with pytest.raises(BudgetError, match="at least 70 soft tokens"):
        budget_settings(models["gemma4"], 50)
    with pytest.raises(BudgetError, match="always turns an image into 16 tokens"):
        budget_settings(models["llava"], 8)
    with pytest.raises(BudgetError, match="grid pinpoints"):
        budget_settings(models["llava_next"], 1000)
    with pytest.raises(BudgetError, match="whole number"):
        budget_settings(models["qwen2_vl"], 0)


def test_a_classifier_fitted_under_a_budget_predicts_under_the_same(models, tmp_path, capsys):
    """fit --max-image-tokens stores the budget; eval, without the flag, sees the images as fitting did."""
    import json

    from sav_explorer.__main__ import main
    from sav_explorer.models import EXAMPLES_DIR

    colour = EXAMPLES_DIR / "colour"
    model = models["smolvlm"].model_id
    out = tmp_path / "clf"
    assert (
        main(
            [
                "fit",
                "--model",
                model,
                "--data",
                str(colour / "support.jsonl"),
                "--out",
                str(out),
                "--k",
                "4",
                "--max-image-tokens",
                "4",
                "--json",
            ]
        )
        == 0
    )
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["max_image_tokens"] == 4 and fitted["image_tokens"]["max"] <= 4
    assert json.loads((out / "manifest.json").read_text())["encoding"]["max_image_tokens"] == 4
    assert main(["eval", "--classifier", str(out), "--data", str(colour / "queries.jsonl"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_image_tokens"] == 4 and report["image_tokens"]["max"] <= 4
    assert (
        main(["fit", "--model", model, "--data", str(colour / "support.jsonl"), "--out", str(tmp_path / "own"), "--k", "4", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["image_tokens"]["max"] > 4  # without a budget: the processor's own views


@pytest.mark.parametrize(("family", "budget"), [("qwen2_vl", 8), ("smolvlm", 4), ("internvl", 12), ("gemma4", 70), ("mistral3", 9)])
def test_the_head_lens_lays_out_images_seen_under_a_budget(models, family, budget):
    """Where a head looks, on an image read under a budget: every image token sits in a grid of the known layout."""
    from sav_explorer.data import Example
    from sav_explorer.lens import look

    loaded = models[family]
    lens = look(loaded, Example((Image.new("RGB", (900, 300), (200, 40, 40)),), "What?"), [(0, 0)], Encoding(max_image_tokens=budget))
    assert lens.layout.known, lens.layout.note
    in_grids = sum(len(grid.positions) for views in lens.layout.grids for grid in views)
    assert 0 < in_grids <= budget
