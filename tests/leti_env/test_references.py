"""Every reference solution gets reward 1 through the environment; mutants get 0 with the right error."""

from __future__ import annotations

import random

import gymnasium as gym
import pytest

from leti_env import ExecutionLimits  # (importing leti_env registers the ids)
from tests.conftest import FULL_DATA, HUMANEVAL_SIZE, MBPP_SIZES



@pytest.mark.parametrize("env_id, kwargs, count", [
    ("LETI-MBPP", {"split": "all"}, MBPP_SIZES["all"][0]),
    ("LETI-MBPP", {"split": "all", "sanitized": True}, MBPP_SIZES["all"][1]),
    ("LETI-HumanEval", {}, HUMANEVAL_SIZE),
])
def test_every_reference_solution_passes(env_id, kwargs, count):
    # Correctness, not speed: MBPP/123's reference is a 2-5 s pure-Python loop depending on the VM's load.
    env = gym.make(env_id, **kwargs, limits=ExecutionLimits(timeout=30.0)).unwrapped
    assert len(env.tasks) == count
    results = env.run_many([(t, t.reference_solution) for t in env.tasks])
    failed = {t.task_id: r.feedback for t, r in zip(env.tasks, results) if not r.passed}
    assert not failed


def test_references_pass_one_episode_at_a_time():
    env = gym.make("LETI-MBPP", split="test", limits=ExecutionLimits(timeout=30.0))  # MBPP/123: 2-5 s on a loaded VM
    tasks = env.unwrapped.tasks
    with_setup = next(t.task_id for t in tasks if t.setup_code)  # MBPP/367 upstream
    # plain, (upstream) the slowest at ~2 s, one with setup code
    for task_id in dict.fromkeys(["MBPP/11", "MBPP/123" if FULL_DATA else tasks[-1].task_id, with_setup]):
        prompt, info = env.reset(options={"task_id": task_id})
        task = env.unwrapped.task(task_id)
        obs, reward, terminated, truncated, info = env.step(task.reference_solution)
        assert (reward, terminated, truncated, obs, info["passed"], info["task_id"]) == (1.0, True, False, "", True, task_id)


def _mutants(tasks, seed=0, size=40):
    rng = random.Random(seed)
    for task in rng.sample(tasks, min(size, len(tasks))):
        name = task.entry_point
        if f"def {name}(" in task.reference_solution:  # MBPP: the completion defines the function
            yield task, task.reference_solution.replace(f"def {name}(", f"def {name}_renamed(", 1), "NameError"
        else:  # HumanEval: the completion is the function body
            yield task, "    return undefined_helper()\n", "NameError: name 'undefined_helper' is not defined"
        raising = f"\ndef {name}(*args, **kwargs):\n    raise ZeroDivisionError('mutant')\n"
        yield task, task.reference_solution + raising, "ZeroDivisionError: mutant"
        yield task, task.reference_solution + f"\ndef {name}(*args, **kwargs):\n    return None\n", ""


@pytest.mark.parametrize("env_id, kwargs", [("LETI-MBPP", {"split": "test"}), ("LETI-HumanEval", {})])
def test_mutated_solutions_fail_with_the_right_exception(env_id, kwargs):
    env = gym.make(env_id, **kwargs).unwrapped
    cases = list(_mutants([t for t in env.tasks if t.entry_point]))
    results = env.run_many([(t, completion) for t, completion, _ in cases])
    for (task, _, needle), result in zip(cases, results):
        assert result.reward == 0.0, task.task_id
        assert needle in result.feedback, (task.task_id, result.feedback)
        assert result.feedback.startswith("Traceback (most recent call last):\n"), result.feedback
