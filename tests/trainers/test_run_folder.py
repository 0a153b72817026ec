"""A run folder read back: its config, its prompt format, and how its models are loaded."""

from __future__ import annotations

import json

from trainers.run_folder import (base_loading_of_model, config_of_model, is_run_folder, prompt_format_of_model,
                                 run_config)
from trainers.sequences import PromptFormat


def test_a_runs_model_is_read_with_its_runs_config_and_other_folders_with_the_defaults(tmp_path):
    run = tmp_path / "run"
    model = run / "iteration-2" / "model"
    model.mkdir(parents=True)
    recipe = {"good_token": "<|pass|>", "bad_token": "<BAD_TOKEN>", "reward_token_target": False, "load_in_4bit": False,
              "use_peft": True}
    (run / "config.json").write_text(json.dumps(recipe))
    assert is_run_folder(run) and not is_run_folder(model)
    assert run_config(run) == config_of_model(model) == recipe
    # the bad token was masked by a pre-0.2 run: the default, which is what that run trained with
    assert prompt_format_of_model(model) == PromptFormat("<|pass|>", "<|bad|>", False)
    assert base_loading_of_model(model) == {"revision": "main"}  # not quantized: the base as saved, in its dtype

    elsewhere = tmp_path / "exported"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text(json.dumps({"model_type": "llama"}))  # a model's config, not a run's
    assert config_of_model(elsewhere) == {} and base_loading_of_model(elsewhere) == {}
    assert prompt_format_of_model(elsewhere) == PromptFormat()
    assert run_config(tmp_path / "missing") == {}

    (run / "config.json").write_text("{not json")  # a run folder cut short: read as no run
    assert config_of_model(model) == {}


def test_a_qlora_runs_adapter_is_loaded_on_a_4bit_base(tmp_path):
    """eval scores the model that was trained: a QLoRA run's base is loaded in 4-bit, as it trained."""
    model = tmp_path / "run" / "iteration-1" / "model"
    model.mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"load_in_4bit": True, "use_bnb_nested_quant": False}))
    loading = base_loading_of_model(model)
    quantization = loading["quantization_config"]
    assert quantization.load_in_4bit and not quantization.bnb_4bit_use_double_quant
