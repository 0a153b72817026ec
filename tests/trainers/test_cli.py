"""The `leti` command: train (with and without a recipe), eval, envs; the run folder it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]
LETI = [sys.executable, "-m", "trainers.cli"]


def run(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*LETI, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "LETI_CACHE": str(tmp_path_factory.mktemp("cache")), "TRL_EXPERIMENTAL_SILENCE": "1",
            "HF_HUB_OFFLINE": "1"}


def test_help_and_envs(env):
    assert "leti train" in run(env=env).stdout
    out = run("envs", env=env)
    assert out.returncode == 0 and "LETI-Arith" in out.stdout and "LETI-EAE" in out.stdout


def test_train_writes_a_complete_run_folder_then_eval_reads_it(tmp_path, env):
    out = run("train", "--model_name_or_path", "tiny", "--max_train_tasks", "6", "--max_eval_tasks", "4",
              "--num_iterations", "1", "--num_generations_per_prompt", "2", "--max_new_tokens", "12",
              "--output_dir", str(tmp_path / "run"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "pass_rate.png", "report.md", "iteration-1/rollouts/dataset_info.json",
                 "iteration-1/model/config.json", "iteration-1/COMPLETE"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "pass_rate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| iteration |" in (run_dir / "report.md").read_text()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["passing_copies"] == 2 and config["use_peft"] is False  # the built-in default recipe applied
    out = run("eval", "--model", str(run_dir / "iteration-1" / "model"), "--env", "LETI-Arith", "--split", "heldout",
              "--max_tasks", "3", "--num_samples", "2", "--k", "1", "--max_new_tokens", "8", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["tasks"] == 3


def test_eval_rejects_k_above_samples(env):
    out = run("eval", "--model", "x", "--num_samples", "2", "--k", "10", env=env)
    assert out.returncode == 2 and "pass@k needs --num_samples >= k" in out.stderr
