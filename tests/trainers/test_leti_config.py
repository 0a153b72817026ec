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
    ({"bnb_4bit_compute_dtype": "bf16"}, "`bnb_4bit_compute_dtype` must be one of ['bfloat16', 'float16', 'float32']"),
    ({"vllm_dtype": "float8"}, "`vllm_dtype` must be one of ['auto', 'bfloat16', 'float16', 'float32'], got 'float8'"),
    ({"good_token": "<|bad|>"}, "the four LeTI tokens must be distinct"),
    ({"num_generations_per_prompt": 0}, "`num_generations_per_prompt` must be at least 1, got 0"),
    ({"execution_timeout": 0}, "`execution_timeout` must be positive"),
    ({"pretrain_dataset": "corpus", "train_sampling_strategy": "random"}, "Set train_sampling_strategy='sequential'"),
])
def test_bad_values_fail_with_the_fix(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LetiConfig(output_dir=str(tmp_path), **kwargs)


def test_eval_k_from_the_command_line_and_yaml_strings(tmp_path):
    (config,) = TrlParser((LetiConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--eval_k", "1", "5", "--eval_num_samples", "5"])
    assert config.eval_k == [1, 5]
    assert LetiConfig(output_dir=str(tmp_path), eval_k="1,10").eval_k == [1, 10]


@pytest.mark.parametrize("recipe", ["codegen-350M-mbpp", "codegen-2B-mbpp", "qwen2.5-coder-0.5B-mbpp"])
def test_real_model_recipes_parse_and_keep_the_papers_settings(recipe):
    from trl import TrlParser

    from tests.conftest import REPO
    from trainers.cli import TrainScriptArguments

    path = REPO / "examples" / "configs" / f"{recipe}.yaml"
    script, config = TrlParser((TrainScriptArguments, LetiConfig)).parse_args_and_config(["--config", str(path)])
    assert script.env_id == "LETI-MBPP" and (script.train_split, script.eval_split) == ("train", "test")
    assert (config.num_generations_per_prompt, config.temperature, config.num_train_epochs) == (128, 1.0, 3.0)
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps == 128  # the paper's global batch
    assert config.lr_scheduler_type == "constant" and config.max_grad_norm == 0.0
    assert config.use_peft and config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.pretrain_dataset == "bigcode/the-stack" and config.pretrain_max_documents == 50_000
    assert config.learning_rate == (5e-6 if "2B" in recipe else 1e-5)
