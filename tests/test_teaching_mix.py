"""Mixing two trainings of the teaching model weight by weight (`teaching.mix`), as the shipped
weights were made: the mix lies on the straight line between the two, loads with
`from_pretrained`, answers as a model, and keeps both runs' logs."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from sav_explorer.teaching.build import build_config, build_processor
from sav_explorer.teaching.mix import main, mix_state_dicts
from sav_explorer.teaching.train import STAGES


def test_the_mix_is_the_weighted_sum_of_the_two_and_its_ends_are_the_two():
    first = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1])}
    second = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([0, 1])}
    assert torch.allclose(mix_state_dicts(first, second, 0.75)["w"], torch.tensor([1.5, 3.0]))
    assert torch.equal(mix_state_dicts(first, second, 1.0)["w"], first["w"])
    assert torch.equal(mix_state_dicts(first, second, 0.0)["w"], second["w"])
    assert torch.equal(mix_state_dicts(first, second, 0.5)["ids"], first["ids"])


def test_models_that_do_not_match_are_refused_by_name():
    base = {"w": torch.zeros(2), "ids": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match="only in one: extra"):
        mix_state_dicts(base, {**base, "extra": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match=r"w: \(2,\)"):
        mix_state_dicts(base, {**base, "w": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="ids: integer tensors that differ"):
        mix_state_dicts(base, {**base, "ids": torch.tensor([1, 0])}, 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        mix_state_dicts(base, base, 1.5)


def test_the_command_writes_a_model_between_two_trainings_with_both_logs(tmp_path):
    processor = build_processor()
    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(build_config(processor.tokenizer, text_layers=2, text_heads=4, width=32))
        folder = tmp_path / f"run{seed}"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        stages = [{"stage": name, "steps": seed, "seconds": 0, "history": []} for name in STAGES]
        (folder / "training_log.json").write_text(json.dumps({"config": {"seed": seed}, "stages": stages}))
        folders.append(folder)
    main(["--out", str(tmp_path / "mixed"), "--weight", "0.7", *map(str, folders)])

    mixed = LlavaForConditionalGeneration.from_pretrained(tmp_path / "mixed")
    first, second = (LlavaForConditionalGeneration.from_pretrained(f).state_dict() for f in folders)
    for name, tensor in mixed.state_dict().items():
        assert torch.allclose(tensor, 0.7 * first[name] + 0.3 * second[name], atol=1e-6), name
    log = json.loads((tmp_path / "mixed" / "training_log.json").read_text())
    assert [s["stage"] for s in log["stages"]] == list(STAGES)  # `train --resume` sees every stage done
    assert log["mixed"]["weight"] == 0.7
    assert (log["mixed"]["first"]["config"], log["mixed"]["second"]["config"]) == ({"seed": 0}, {"seed": 1})


def test_a_folder_without_weights_is_refused_with_a_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="has no model.safetensors"):
        main(["--out", str(tmp_path / "out"), "--weight", "0.5", str(tmp_path / "empty"), str(tmp_path / "empty")])
