"""LetiConfig: documented fields, --help, and errors that name the fix (before any sampling)."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from trl import SFTConfig, TrlParser

from trainers import LetiConfig

OWN = [f for f in fields(LetiConfig) if f.name not in {g.name for g in fields(SFTConfig)}]


def test_every_own_field_is_documented():
    for f in OWN:
        assert f.metadata.get("help"), f.name
        assert f"{f.name} (`" in LetiConfig.__doc__, f.name


def test_help_renders():  # a bare % in a help string breaks argparse (TRL #5099)
    with pytest.raises(SystemExit) as exit_info:
        TrlParser((LetiConfig,)).parse_args_and_config(["--help"])
    assert exit_info.value.code == 0


def test_paper_defaults(tmp_path):
    c = LetiConfig(output_dir=str(tmp_path))
    assert (c.num_generations_per_prompt, c.temperature, c.top_p, c.num_train_epochs, c.learning_rate) == (128, 1.0, 1.0, 3.0, 1e-5)
    assert c.special_tokens == ["<|bad|>", "<|good|>", "<|lang_feedback|>", "<|/lang_feedback|>"]
    assert (c.feedback_mode, c.sequence_order, c.condition_first_iteration, c.append_eos) == ("text", "feedback_first", False, False)
    assert c.train_sampling_strategy == "sequential" and c.eval_temperature == 0.1 and c.eval_num_samples == 16


@pytest.mark.parametrize("kwargs, message", [
    ({"eval_k": [1, 100]}, "pass@k needs 1 <= k <= eval_num_samples, but eval_k=[1, 100] and eval_num_samples=16. Raise"),
    ({"load_in_4bit": True, "use_peft": False}, "`load_in_4bit=True` needs `use_peft=True`"),
    ({"feedback_mode": "verbose"}, "`feedback_mode` must be one of ['text', 'binary', 'none'], got 'verbose'"),
    ({"good_token": "<|bad|>"}, "the four LeTI tokens must be distinct"),
    ({"num_generations_per_prompt": 0}, "`num_generations_per_prompt` must be at least 1, got 0"),
    ({"execution_timeout": 0}, "`execution_timeout` must be positive"),
])
def test_bad_values_fail_with_the_fix(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LetiConfig(output_dir=str(tmp_path), **kwargs)


def test_eval_k_from_the_command_line_and_yaml_strings(tmp_path):
    (config,) = TrlParser((LetiConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--eval_k", "1", "5", "--eval_num_samples", "5"])
    assert config.eval_k == [1, 5]
    assert LetiConfig(output_dir=str(tmp_path), eval_k="1,10").eval_k == [1, 10]
