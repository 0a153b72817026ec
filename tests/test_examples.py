"""Every example runs, as its docstring's smoke command says (CleanRL style: the real script, tiny budget)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


# Each example's smoke command, exactly as its docstring gives it (tests/test_docs.py checks that); the tests run
# it with `runs/` moved into a temporary folder.
SMOKE = {
    "train_leti.py": (
        "python examples/train_leti.py --model_name_or_path tiny --max_train_tasks 4 --max_eval_tasks 2 "
        "--num_iterations 1 --num_generations_per_prompt 2 --max_new_tokens 16 --eval_num_samples 2 --eval_k 1 "
        "--eval_max_new_tokens 8 --load_in_4bit false --activation_checkpointing false --bf16 false "
        "--report_to tensorboard,trackio --output_dir runs/smoke"),
    "sft_from_rollouts.py": (
        "python examples/sft_from_rollouts.py --rollouts runs/smoke/iteration-1/rollouts --model_name_or_path tiny "
        "--output_dir runs/sft-smoke --max_steps 2 --per_device_train_batch_size 2 --load_in_4bit false --bf16 false "
        "--activation_checkpointing false"),
    "grpo_execution_reward.py": (
        "python examples/grpo_execution_reward.py --model_name_or_path tiny --max_train_tasks 4 --max_steps 1 "
        "--num_generations 4 --per_device_train_batch_size 4 --max_completion_length 16 --report_to none "
        "--bf16 false --use_cpu true --output_dir runs/grpo-smoke"),
    "grpo_refinement.py": (
        "python examples/grpo_refinement.py --model_name_or_path tiny --env_id LETI-Arith --max_train_tasks 2 "
        "--max_steps 1 --num_generations 4 --per_device_train_batch_size 4 --max_completion_length 96 "
        "--max_new_tokens 12 --report_to none --bf16 false --use_cpu true --output_dir runs/grpo-refine-smoke"),
    "grpo_tool_env.py": (
        "python examples/grpo_tool_env.py --model_name_or_path tiny --chat_template qwen3 --max_train_tasks 2 "
        "--max_steps 1 --num_generations 4 --per_device_train_batch_size 4 --max_completion_length 24 "
        "--report_to none --bf16 false --use_cpu true --output_dir runs/grpo-tools-smoke"),
}


def run(script: str, runs: Path, env: dict) -> str:
    """Run the example's smoke command, its `runs/` folder moved to `runs`."""
    command = shlex.split(SMOKE[script])
    assert command[:2] == ["python", f"examples/{script}"]
    args = [str(runs / a.removeprefix("runs/")) if a.startswith("runs/") else a for a in command[2:]]
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "LETI_CACHE": str(tmp_path_factory.mktemp("cache")), "TRL_EXPERIMENTAL_SILENCE": "1",
            "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def test_train_leti_then_sft_from_its_rollouts(tmp_path, env):
    out = run("train_leti.py", tmp_path, env={**env, "TRACKIO_DIR": str(tmp_path / "trackio")})
    assert "'iteration': 1" in out and (tmp_path / "smoke" / "iteration-1" / "COMPLETE").exists()
    assert list((tmp_path / "smoke" / "runs").glob("events.out.tfevents.*"))  # tensorboard: one run, kept
    assert "trackio: project leti, run smoke-" in out and list((tmp_path / "trackio").glob("leti.db"))
    out = run("sft_from_rollouts.py", tmp_path, env=env)
    assert "trained on 8 rows" in out


def test_grpo_with_execution_reward(tmp_path, env):
    out = run("grpo_execution_reward.py", tmp_path, env=env)
    assert "train_loss" in out or "loss" in out


def test_grpo_refinement_masks_the_feedback(tmp_path, env):
    out = run("grpo_refinement.py", tmp_path, env=env)
    assert "train_loss" in out
    # with the smoke settings (96 completion tokens) a failed first attempt still gets its second turn: the
    # feedback is cut to fit beside the repeated prompt and a whole next attempt
    turns = [float(t) for t in re.findall(r"'execution/turns': '?([0-9.]+)", out)]
    assert turns and max(turns) > 1.0, out[-2000:]


def test_grpo_tool_env(tmp_path, env):
    out = run("grpo_tool_env.py", tmp_path, env=env)
    assert "train_loss" in out
