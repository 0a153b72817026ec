"""`python -m leti_env`: the command that runs an environment end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import HUMANEVAL_SIZE, MBPP_SIZES



def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leti_env", *args], capture_output=True, text=True, timeout=120)


def test_envs_lists_ids_with_sizes():
    out = run("envs")
    assert out.returncode == 0, out.stderr
    mbpp, humaneval = MBPP_SIZES["test"][0], HUMANEVAL_SIZE
    assert f"{'LETI-MBPP':<20} {mbpp} tasks\n" in out.stdout
    assert f"{'LETI-HumanEval':<20} {humaneval} tasks\n" in out.stdout


def test_demo_runs_reference_and_broken_solutions():
    out = run("demo", "--num-tasks", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("reference reward=1 status=passed") == 2
    assert out.stdout.count("broken    reward=0") == 2
    assert "mean reward 0.50 over 4 episodes" in out.stdout


def test_unknown_env_is_a_clear_error():
    out = run("demo", "--env", "LETI-Nope")
    assert out.returncode == 2 and "error: Environment `LETI-Nope` doesn't exist" in out.stderr


def test_help_renders_for_every_command():
    for args in (("--help",), ("demo", "--help"), ("envs", "--help"), ("sandbox", "--help")):
        assert run(*args).returncode == 0
