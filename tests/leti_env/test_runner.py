"""TaskRunner: the one executor behind CodeEnv.run_many, the trainer, the TRL reward and `leti eval`."""

from __future__ import annotations

import gymnasium as gym
import pytest

import leti_env
from leti_env import ExecutionLimits, Program, TaskRunner


def test_deduplicate_runs_each_program_once_and_never_remembers_a_timeout():
    runner = TaskRunner(ExecutionLimits(timeout=1.0), deduplicate=True)
    slow = "while True:\n    pass\n"
    programs = ["assert 1 + 1 == 2", "1 / 0", "assert 1 + 1 == 2", Program("x = 1", "assert x == 2"), slow, "1 / 0"]
    totals: list[int] = []
    results = runner.run_programs(programs, progress=lambda done, total: totals.append(total))
    assert [r.status for r in results] == ["passed", "error", "passed", "failed", "timeout", "error"]
    assert totals[-1] == 4  # four distinct programs ran
    assert results[1] is results[5]  # the copy got the one verdict
    totals.clear()
    again = runner.run_programs(programs, progress=lambda done, total: totals.append(total))
    assert totals[-1] == 1  # only the timed-out program ran again (its verdict depends on load)
    assert [r.status for r in again] == [r.status for r in results]
    every = TaskRunner(ExecutionLimits(timeout=1.0))
    totals.clear()
    every.run_programs(programs[:3], progress=lambda done, total: totals.append(total))
    assert totals[-1] == 3  # without deduplicate every copy runs


def test_env_run_many_executes_through_its_runner_with_the_envs_limits():
    env = gym.make("LETI-Arith", split="heldout").unwrapped
    assert isinstance(env.runner, TaskRunner) and env.runner.limits == env.limits == ExecutionLimits(timeout=1.0)
    task = env.tasks[0]
    results = env.run_many([(task, task.reference_solution), (task, "\n    return 0\n")])
    assert [r.passed for r in results] == [True, False]
    assert env.runner.run([(task, task.reference_solution)])[0].passed
    eae = leti_env.load_env("LETI-EAE")
    assert eae.runner.limits.timeout == 30.0  # LETI-EAE keeps LeTI's 30 s wherever it is executed


def test_bad_limits_fail_when_they_are_built():
    with pytest.raises(ValueError, match="`timeout` must be positive"):
        ExecutionLimits(timeout=0)
    with pytest.raises(TypeError, match="`limits` must be an ExecutionLimits, got float"):
        TaskRunner(5.0)  # type: ignore[arg-type]
