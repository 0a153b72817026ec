"""Gymnasium contract for every registered id: check_env, make forms, episodes, vector envs."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import leti_env
from leti_env import load_mbpp, refinement_prompt
from tests.conftest import MBPP_SIZES

MBPP_11 = next(t for t in load_mbpp("test") if t.task_id == "MBPP/11")  # remove_Occ upstream
WRONG_11 = f"\ndef {MBPP_11.entry_point}(*args):\n    return args[0]\n"


LETI_IDS = sorted(i for i in gym.registry if i.startswith("LETI-"))


def test_ids_are_registered():
    assert {"LETI-MBPP", "LETI-HumanEval"} <= set(LETI_IDS)


@pytest.mark.parametrize("env_id", LETI_IDS)
def test_env_passes_checker(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as Gymnasium's own test: unexpected warnings fail
        warnings.filterwarnings("ignore", category=leti_env.SandboxWarning)
        check_env(gym.make(env_id, disable_env_checker=True).unwrapped)


def test_module_prefixed_id_imports_the_package():
    env = gym.make("leti_env:LETI-MBPP", split="prompt")
    assert len(env.unwrapped.tasks) == MBPP_SIZES["prompt"][0]


def test_episode_protocol():
    env = gym.make("LETI-MBPP", split="test")
    assert env.unwrapped.episode_over
    with pytest.raises(gym.error.ResetNeeded):
        env.unwrapped.step("x")
    prompt, info = env.reset(seed=3)
    assert prompt == env.unwrapped.task(info["task_id"]).prompt
    assert env.reset(seed=3)[1] == info  # seeded resets are reproducible
    assert env.reset(options={"task_id": 11})[1]["task_id"] == "MBPP/11"
    with pytest.raises(TypeError, match="the action must be a str .* got int"):
        env.unwrapped.step(42)
    assert not env.unwrapped.episode_over
    obs, reward, terminated, truncated, info = env.step(WRONG_11)
    assert (reward, terminated, truncated, info["status"]) == (0.0, True, False, "failed")
    assert env.unwrapped.episode_over  # one turn: over after a failure too
    assert obs == info["feedback"] and "AssertionError" in obs
    with pytest.raises(KeyError, match="no task 'MBPP/9999'"):
        env.reset(options={"task_id": "MBPP/9999"})


def test_refinement_episode():
    env = gym.make("LETI-MBPP", split="test", max_turns=3)
    prompt, _ = env.reset(options={"task_id": "MBPP/11"})
    wrong = WRONG_11
    obs, reward, terminated, truncated, info = env.step(wrong)
    assert (reward, terminated, truncated, info["turn"]) == (0.0, False, False, 1)
    assert not env.unwrapped.episode_over  # turns left: the episode goes on
    next_input = refinement_prompt(prompt, wrong, obs)
    assert next_input.startswith(prompt + wrong) and next_input.endswith(prompt)
    assert "# AssertionError" in next_input
    task = env.unwrapped.task("MBPP/11")
    obs, reward, terminated, truncated, info = env.step(task.reference_solution)
    assert (reward, terminated, truncated, obs) == (1.0, True, False, "")
    env.reset(options={"task_id": "MBPP/11"})
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(wrong)
    assert (terminated, truncated) == (False, True)


def test_text_spaces_accept_any_python_source():
    env = gym.make("LETI-MBPP", split="prompt").unwrapped
    assert env.action_space.contains("def f():\n\treturn 'ünï ✓ 中文'\n")
    assert not env.action_space.contains(b"bytes")
    assert env.observation_space.contains("")


def test_env_pickles():
    env = gym.make("LETI-MBPP", split="prompt").unwrapped
    clone = pickle.loads(pickle.dumps(env))
    assert [t.task_id for t in clone.tasks] == [t.task_id for t in env.tasks]


@pytest.mark.parametrize("vector_cls", ["sync", "async"])
def test_vector_envs(vector_cls):
    def make():
        return gym.make("leti_env:LETI-MBPP", split="test", workers=1)

    if vector_cls == "sync":
        envs = gym.vector.SyncVectorEnv([make] * 2, autoreset_mode=AutoresetMode.SAME_STEP)
    else:  # shared_memory=True corrupts Text observations in Gymnasium 1.4
        envs = gym.vector.AsyncVectorEnv([make] * 2, shared_memory=False, autoreset_mode=AutoresetMode.SAME_STEP)
    try:
        obs, infos = envs.reset(seed=0, options={"task_id": "MBPP/11"})
        assert list(obs) == [MBPP_11.prompt] * 2
        obs, rewards, terminated, truncated, infos = envs.step((MBPP_11.reference_solution, "\nbroken("))
        assert list(rewards) == [1.0, 0.0] and all(terminated)
        assert infos["final_info"]["status"][1] == "syntax_error"
    finally:
        envs.close()


def test_load_tasks_is_the_one_split_rule():
    """`leti`, the examples and the trainers read tasks through `load_tasks`: a split for environments
    with splits, `none` for those without, and an error that says so otherwise."""
    from leti_env import load_tasks

    assert [t.task_id for t in load_tasks("LETI-MBPP", "test", 2)] == [t.task_id for t in load_mbpp("test")[:2]]
    assert len(load_tasks("LETI-Arith", "heldout")) == 400
    assert load_tasks("LETI-HumanEval", "none")[0].task_id == load_tasks("LETI-HumanEval")[0].task_id == "HumanEval/0"
    with pytest.raises(ValueError, match="LETI-HumanEval has no splits: pass split none"):
        load_tasks("LETI-HumanEval", "test")
    with pytest.raises(ValueError, match="unknown environment id 'LETI-Nope'.*Registered leti ids"):
        load_tasks("LETI-Nope")
