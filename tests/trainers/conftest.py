"""Tiny models built offline for the trainer tests (random init + a tokenizer trained here)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from trainers.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-untied"), vocab_size=2048, hidden_size=64, num_layers=2)


@pytest.fixture(scope="session")
def tiny_tied_model_dir(tmp_path_factory):
    from trainers.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-tied"), vocab_size=2048, hidden_size=64, num_layers=2,
                            tie_word_embeddings=True)


@pytest.fixture(scope="session")
def mbpp_tasks():
    import leti_env

    return leti_env.load_mbpp("train")[:4]


def small_config(output_dir, **overrides):
    """A LetiConfig that runs in seconds on a CPU."""
    from trainers import LetiConfig

    values = dict(output_dir=str(output_dir), num_iterations=2, num_generations_per_prompt=2, max_new_tokens=16,
                  eval_num_samples=2, eval_k=[1], eval_max_new_tokens=8, load_in_4bit=False,
                  per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-2, activation_checkpointing=False,
                  bf16=False, logging_steps=1, disable_tqdm=True, seed=0)
    values.update(overrides)
    return LetiConfig(**values)


def tiny_grpo_config(output_dir, max_completion_length: int):
    """One GRPO step on a CPU: 4 completions of one prompt, nothing saved or reported."""
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(output_dir), use_cpu=True, bf16=False, max_steps=1, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=max_completion_length, report_to="none",
                      save_strategy="no", logging_steps=1, disable_tqdm=True)
