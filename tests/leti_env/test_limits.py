"""ExecutionLimits: declared once, owned by each environment, carried with its tasks to every runner."""

from __future__ import annotations

import dataclasses
import pickle
import re

import gymnasium as gym
import pytest

import leti_env
from leti_env import CodeEnv, ExecutionLimits, TaskRunner, TaskSet, load_env, load_tasks, resolve_tasks
from leti_env.execution.sandbox import protocol

# Each registered environment's own limits (LeTI: 5 s for MBPP and HumanEval, 30 s for EAE; Arith's 1 s)
OWN_TIMEOUT = {"LETI-MBPP": 5.0, "LETI-HumanEval": 5.0, "LETI-EAE": 30.0, "LETI-Arith": 1.0}


def test_every_registered_environment_owns_its_limits():
    assert sorted(OWN_TIMEOUT) == sorted(i for i in gym.registry if i.startswith("LETI-"))
    for env_id, timeout in OWN_TIMEOUT.items():
        env = load_env(env_id)
        assert env.limits == ExecutionLimits(timeout=timeout), env_id
        assert env.runner.limits is env.limits  # what `env.step` and `run_many` execute with


def test_limits_travel_with_the_tasks_and_slicing_keeps_them():
    eae = load_tasks("LETI-EAE", None, 3)
    assert isinstance(eae, TaskSet) and len(eae) == 3 and eae.limits.timeout == 30.0
    assert eae[1:].limits.timeout == 30.0 and eae[0].task_id == list(eae)[0].task_id
    assert resolve_tasks("LETI-EAE").limits.timeout == 30.0  # an id
    assert resolve_tasks(gym.make("LETI-Arith", split="heldout")).limits.timeout == 1.0  # a wrapped environment
    assert resolve_tasks(eae) is eae  # a TaskSet stays as it is
    assert resolve_tasks(list(eae)).limits == ExecutionLimits()  # bare tasks: the defaults, 5 s
    assert pickle.loads(pickle.dumps(eae)) == eae
    with pytest.raises(ValueError, match="`tasks` is empty"):
        resolve_tasks(eae[:0])


def test_an_explicit_value_overrides_and_none_keeps_the_limit():
    arith = load_tasks("LETI-Arith", "heldout", 1).limits
    assert arith.override(timeout=None) is arith
    assert arith.override(timeout=3.0, memory_mb=None) == ExecutionLimits(timeout=3.0)
    env = gym.make("LETI-EAE", limits=ExecutionLimits(timeout=10.0)).unwrapped
    assert env.limits.timeout == env.runner.limits.timeout == 10.0
    with pytest.raises(TypeError, match="ExecutionLimits has no 'timeout_s'"):
        arith.override(timeout_s=3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        arith.timeout = 3.0  # type: ignore[misc]


@pytest.mark.parametrize("changes, message", [
    ({"timeout": 0}, "`timeout` must be positive, got 0"),
    ({"memory_mb": 8}, "`memory_mb` must be at least 32, got 8"),
    ({"max_feedback_chars": 0}, "`max_feedback_chars` must be at least 1, got 0"),
    ({"output_limit_mb": -1}, "`output_limit_mb` must be >= 0 (0: no limit), got -1"),
])
def test_impossible_limits_fail_where_they_are_written(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ExecutionLimits(**changes)


def test_a_slow_correct_program_times_out_under_arith_limits_and_passes_under_an_override():
    tasks = load_tasks("LETI-Arith", "heldout", 1)
    task = tasks[0]
    late = "\nimport time\ntime.sleep(1.5)\n" + task.reference_solution  # a correct answer, 1.5 s late
    own, longer = TaskRunner(tasks.limits), TaskRunner(tasks.limits.override(timeout=3.0))
    killed, passed = own.run([(task, late)])[0], longer.run([(task, late)])[0]
    assert (killed.status, passed.status) == ("timeout", "passed")
    assert "1 s time limit" in killed.feedback and passed.duration_s > 1.5


def test_the_worker_request_schema_is_the_limits_fields():
    assert protocol.LIMIT_KEYS == tuple(f.name for f in dataclasses.fields(ExecutionLimits))
    program = {"solution": "pass", "tests": "", "prelude": "", "entry_points": [], "modules": []}
    request = protocol.program_request(program, dataclasses.asdict(ExecutionLimits(timeout=2)))
    assert set(request) == set(protocol.PROGRAM_KEYS + protocol.LIMIT_KEYS) and request["timeout"] == 2.0
    with pytest.raises(ValueError, match="a request's limits must have the keys"):
        protocol.program_request(program, {"timeout": 2.0})
    whole = protocol.complete_request(dict(request, tests="assert True"))
    assert whole["text"] == "pass\nassert True" and whole["tests_line_offset"] == 1
    assert set(protocol.SOLUTION_KEYS) | set(protocol.VERIFIER_KEYS) <= set(whole)
    assert not {"tests", "prelude"} & set(protocol.SOLUTION_KEYS)  # the untrusted process never sees the tests


def test_code_env_takes_limits_not_loose_timeouts():
    tasks = load_tasks("LETI-Arith", "heldout", 1)
    with pytest.raises(TypeError, match="timeout"):
        CodeEnv(tasks, timeout=1.0)  # type: ignore[call-arg]
    assert CodeEnv(tasks).limits == ExecutionLimits() and "ExecutionLimits" in leti_env.__all__
