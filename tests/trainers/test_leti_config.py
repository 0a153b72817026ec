"""LetiConfig: documented fields, --help, and errors that name the fix (before any sampling)."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from trl import ModelConfig, SFTConfig, TrlParser

from trainers import LetiConfig

SFT, MODEL = {g.name for g in fields(SFTConfig)}, {g.name for g in fields(ModelConfig)}
# LeTI's fields, and ModelConfig's whose defaults LeTI changes (declared again in LetiConfig)
OWN = [f for f in fields(LetiConfig) if f.name not in SFT and (f.name not in MODEL or f.name in LetiConfig.__annotations__)]


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
    ({"feedback_mode": "verbose"}, "`feedback_mode` must be one of ['text', 'binary', 'none', 'dummy', 'shuffled'], got 'verbose'"),
    ({"dtype": "bf16"}, "`dtype` must be one of ['auto', 'bfloat16', 'float16', 'float32', None], got 'bf16'"),
    ({"bnb_4bit_quant_storage": "int4"}, "`bnb_4bit_quant_storage` must be one of ['uint8', 'bfloat16', 'float16'"),
    ({"load_in_8bit": True, "load_in_4bit": False, "use_peft": False}, "`load_in_8bit=True` needs `use_peft=True`"),
    ({"bnb_4bit_compute_dtype": "bfloat16"}, "`bnb_4bit_compute_dtype` is now `dtype` (the name TRL's ModelConfig uses"),
    ({"bnb_4bit_use_double_quant": False}, "`bnb_4bit_use_double_quant` is now `use_bnb_nested_quant`"),
    ({"vllm_dtype": "float8"}, "`vllm_dtype` must be one of ['auto', 'bfloat16', 'float16', 'float32'], got 'float8'"),
    ({"good_token": "<|bad|>"}, "the four LeTI tokens must be distinct"),
    ({"num_generations_per_prompt": 0}, "`num_generations_per_prompt` must be at least 1, got 0"),
    ({"execution_timeout": 0}, "`execution_timeout` must be positive (or None: the environment's own), got 0"),
    ({"execution_memory_mb": 8}, "`execution_memory_mb` must be at least 32 (or None: the environment's own), got 8"),
    ({"pretrain_dataset": "corpus", "train_sampling_strategy": "random"}, "Set train_sampling_strategy='sequential'"),
    ({"guidance_weight": -1.0}, "`guidance_weight` must be >= 0 (0: off), got -1.0"),
    ({"guidance_weight": 1.0, "generation_backend": "vllm"}, "`guidance_weight` > 0 needs generation_backend='hf'"),
    ({"eval_max_turns": 3}, "`eval_max_turns` must be 1 or 2"),
    ({"eval_extra_conditions": ["great"]}, "`eval_extra_conditions` takes good, none or bad; got ['great']"),
    ({"dummy_feedback_length": "words"}, "`dummy_feedback_length` must be one of ['tokens', 'characters']"),
])
def test_bad_values_fail_with_the_fix(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LetiConfig(output_dir=str(tmp_path), **kwargs)


def test_execution_limits_are_the_environments_unless_a_flag_sets_them(tmp_path):
    from leti_env import ExecutionLimits

    eae = ExecutionLimits(timeout=30.0)
    (unset,) = TrlParser((LetiConfig,)).parse_args_and_config(["--output_dir", str(tmp_path)])
    assert unset.execution_limits(eae) is eae  # None: LETI-EAE keeps its 30 s
    (given,) = TrlParser((LetiConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--execution_timeout", "2.5", "--max_feedback_chars", "300"])
    assert given.execution_limits(eae) == ExecutionLimits(timeout=2.5, max_feedback_chars=300)


def test_eval_k_from_the_command_line_and_yaml_strings(tmp_path):
    (config,) = TrlParser((LetiConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--eval_k", "1", "5", "--eval_num_samples", "5"])
    assert config.eval_k == [1, 5]
    assert LetiConfig(output_dir=str(tmp_path), eval_k="1,10").eval_k == [1, 10]


@pytest.mark.parametrize("recipe", ["codegen-350M-mbpp", "codegen-2B-mbpp", "qwen2.5-coder-0.5B-mbpp"])
def test_real_model_recipes_parse_and_keep_the_papers_settings(recipe):
    from tests.conftest import REPO
    from trainers.parser import make_parser

    path = REPO / "examples" / "configs" / f"{recipe}.yaml"
    script, config = make_parser().parse_args_and_config(["--config", str(path)])
    assert script.env_id == "LETI-MBPP" and (script.train_split, script.eval_split) == ("train", "test")
    assert (config.num_generations_per_prompt, config.temperature, config.num_train_epochs) == (128, 1.0, 3.0)
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps == 128  # the paper's global batch
    assert config.lr_scheduler_type == "constant" and config.max_grad_norm == 0.0
    assert config.use_peft and config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.pretrain_dataset == "bigcode/the-stack" and config.pretrain_max_documents == 50_000
    assert config.learning_rate == (5e-6 if "2B" in recipe else 1e-5)


def test_a_trl_recipes_model_block_parses_as_trl_parses_it(tmp_path):
    """A TRL script's model/LoRA/quantization YAML means the same to `leti train` (TRL's ModelConfig fields)."""
    from trainers.model_setup import model_loading_kwargs
    from trainers.parser import make_parser

    recipe = tmp_path / "trl.yaml"
    recipe.write_text("model_name_or_path: Qwen/Qwen2.5-Coder-0.5B\nmodel_revision: v1\ndtype: float16\n"
                      "attn_implementation: sdpa\nuse_peft: true\nlora_r: 8\nlora_alpha: 16\nlora_dropout: 0.1\n"
                      "lora_target_modules: [q_proj, v_proj]\nlora_modules_to_save: [lm_head]\nuse_rslora: true\n"
                      "load_in_4bit: true\nbnb_4bit_quant_type: fp4\nuse_bnb_nested_quant: false\n"
                      f"learning_rate: 2.0e-5\nbf16: false\nuse_cpu: true\noutput_dir: {tmp_path / 'run'}\n")
    _, config = make_parser().parse_args_and_config(["--config", str(recipe)])
    trl_model, _ = TrlParser((ModelConfig, SFTConfig)).parse_args_and_config(["--config", str(recipe)])
    for f in fields(ModelConfig):
        assert getattr(config, f.name) == getattr(trl_model, f.name), f.name
    kwargs = model_loading_kwargs(config)  # what the trainer loads the model with
    quantization = kwargs["quantization_config"]
    assert (quantization.bnb_4bit_quant_type, quantization.bnb_4bit_use_double_quant) == ("fp4", False)
    assert str(quantization.bnb_4bit_compute_dtype) == str(kwargs["dtype"]) == "torch.float16"  # TRL: dtype is both
    assert (kwargs["revision"], kwargs["attn_implementation"]) == ("v1", "sdpa")
    _, default = make_parser().parse_args_and_config(["--output_dir", str(tmp_path / "run")])
    leti = model_loading_kwargs(default)  # LeTI's defaults: QLoRA, nested, bf16 compute, the checkpoint's dtype
    assert "dtype" not in leti and str(leti["quantization_config"].bnb_4bit_compute_dtype) == "torch.bfloat16"
    assert leti["quantization_config"].bnb_4bit_use_double_quant and default.lora_target_modules == "all-linear"


def test_the_lora_fields_reach_the_adapter(tmp_path, tiny_model_dir, mbpp_tasks):
    from tests.trainers.conftest import small_config
    from trainers import LetiTrainer

    config = small_config(tmp_path, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"], use_rslora=True)
    lora = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks).model.peft_config["default"]
    assert (lora.r, lora.lora_alpha, lora.use_rslora, set(lora.target_modules)) == (4, 8, True, {"q_proj", "v_proj"})
    old = small_config(tmp_path, lora_target_modules="q_proj, v_proj")  # leti 0.1's comma-separated string
    assert old.lora_target_modules == ["q_proj", "v_proj"]
