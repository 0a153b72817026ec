"""Every example runs, as its docstring's smoke command says (CleanRL style: the real script, tiny budget)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run(script: str, *args: str, env: dict) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "LETI_CACHE": str(tmp_path_factory.mktemp("cache")), "TRL_EXPERIMENTAL_SILENCE": "1",
            "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def test_train_leti_then_sft_from_its_rollouts(tmp_path, env):
    out = run("train_leti.py", "--model_name_or_path", "tiny", "--max_train_tasks", "4", "--max_eval_tasks", "2",
              "--num_iterations", "1", "--num_generations_per_prompt", "2", "--max_new_tokens", "16",
              "--eval_num_samples", "2", "--eval_k", "1", "--eval_max_new_tokens", "8", "--load_in_4bit", "false",
              "--activation_checkpointing", "false", "--bf16", "false", "--report_to", "tensorboard,trackio",
              "--output_dir", str(tmp_path / "leti"), env={**env, "TRACKIO_DIR": str(tmp_path / "trackio")})
    assert "'iteration': 1" in out and (tmp_path / "leti" / "iteration-1" / "COMPLETE").exists()
    assert list((tmp_path / "leti" / "runs").glob("events.out.tfevents.*"))  # tensorboard: one run, kept
    assert "trackio: project leti, run leti-" in out and list((tmp_path / "trackio").glob("leti.db"))
    out = run("sft_from_rollouts.py", "--rollouts", str(tmp_path / "leti" / "iteration-1" / "rollouts"),
              "--model_name_or_path", "tiny", "--output_dir", str(tmp_path / "sft"), "--max_steps", "2",
              "--per_device_train_batch_size", "2", "--load_in_4bit", "false", "--bf16", "false",
              "--activation_checkpointing", "false", env=env)
    assert "trained on 8 rows" in out


def test_grpo_with_execution_reward(tmp_path, env):
    out = run("grpo_execution_reward.py", "--model_name_or_path", "tiny", "--max_train_tasks", "4", "--max_steps", "1",
              "--num_generations", "4", "--per_device_train_batch_size", "4", "--max_completion_length", "16",
              "--output_dir", str(tmp_path / "grpo"), "--report_to", "none", "--bf16", "false", "--use_cpu", "true", env=env)
    assert "train_loss" in out or "loss" in out


def test_grpo_refinement_masks_the_feedback(tmp_path, env):
    out = run("grpo_refinement.py", "--model_name_or_path", "tiny", "--env_id", "LETI-Arith", "--max_train_tasks", "2",
              "--max_steps", "1", "--num_generations", "4", "--per_device_train_batch_size", "4",
              "--max_completion_length", "96", "--max_new_tokens", "12", "--output_dir", str(tmp_path / "refine"),
              "--report_to", "none", "--bf16", "false", "--use_cpu", "true", env=env)
    assert "train_loss" in out


def test_grpo_tool_env(tmp_path, env):
    out = run("grpo_tool_env.py", "--model_name_or_path", "tiny", "--chat_template", "qwen3", "--max_train_tasks", "2",
              "--max_steps", "1", "--num_generations", "4", "--per_device_train_batch_size", "4",
              "--max_completion_length", "24", "--output_dir", str(tmp_path / "tools"), "--report_to", "none",
              "--bf16", "false", "--use_cpu", "true", env=env)
    assert "train_loss" in out
