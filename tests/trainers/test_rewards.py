"""ExecutionReward in TRL's trainers, and saved rollouts as an SFT dataset."""

from __future__ import annotations

import pytest

from tests.trainers.conftest import small_config, tiny_grpo_config
from trainers import ExecutionReward, LetiTrainer, rollouts_to_sft_dataset, tasks_to_dataset


def test_rewards_equal_the_environments(mbpp_tasks):
    import gymnasium as gym

    env = gym.make("LETI-MBPP", split="train").unwrapped
    completions = [t.reference_solution for t in mbpp_tasks] + ["\ndef nope(:\n"] * len(mbpp_tasks)
    tasks = mbpp_tasks * 2
    logged = {}
    reward = ExecutionReward(mbpp_tasks)
    rewards = reward(prompts=[t.prompt for t in tasks], completions=completions, task_id=[t.task_id for t in tasks],
                     log_extra=lambda name, values: logged.setdefault(name, values))
    expected = [r.reward for r in env.run_many(list(zip(tasks, completions)))]
    assert rewards == expected == [1.0] * 4 + [0.0] * 4
    assert logged["status"][4] == "syntax_error" and "SyntaxError" in logged["feedback"][4]


def test_rewards_run_under_the_tasks_own_limits_unless_limits_are_given():
    from leti_env import ExecutionLimits, load_tasks

    assert ExecutionReward("LETI-EAE").runner.limits == ExecutionLimits(timeout=30.0)  # LeTI's 30 s for EAE
    assert ExecutionReward(load_tasks("LETI-EAE", None, 2)).runner.limits.timeout == 30.0
    assert ExecutionReward().runner.limits == ExecutionLimits()
    tasks = load_tasks("LETI-Arith", "heldout", 1)
    late = "\nimport time\ntime.sleep(1.5)\n" + tasks[0].reference_solution  # a correct answer, 1.5 s late
    row = {"prompts": [tasks[0].prompt], "completions": [late], "task_id": [tasks[0].task_id]}
    assert ExecutionReward(tasks)(**row) == [0.0]  # killed at LETI-Arith's 1 s
    assert ExecutionReward(tasks, limits=tasks.limits.override(timeout=3.0))(**row) == [1.0]


def test_tests_column_and_conversational_completions():
    reward = ExecutionReward()
    rewards = reward(prompts=["def f():\n"], completions=[[{"role": "assistant", "content": "    return 1\n"}]],
                     tests=["assert f() == 1"])
    assert rewards == [1.0]
    with pytest.raises(ValueError, match="needs a `task_id` or a `tests` column"):
        reward(prompts=["x"], completions=["y"])


def test_chat_answers_are_scored_on_their_fenced_code(mbpp_tasks):
    task = mbpp_tasks[0]
    code = task.reference_solution.strip("\n")
    answers = {
        "fenced": f"Here is a solution:\n\n```python\n{code}\n```\nIt runs in linear time.",
        "unfenced": task.reference_solution,  # a base model's completion: taken as it is
        "multi-block": f"```bash\npip install nothing\n```\n```py\n{code}\n```\n```python\nprint('usage')\n```",
        "indented": "1. The function:\n   ```python\n" + "\n".join("   " + line for line in code.splitlines()) + "\n   ```",
        "wrong fenced": "```python\ndef nothing():\n    pass\n```",
    }
    chats = [[{"role": "assistant", "content": answer}] for answer in answers.values()]
    ids = [task.task_id] * len(chats)
    extracted = ExecutionReward(mbpp_tasks, extract_code=True)(prompts=[[]] * len(chats), completions=chats, task_id=ids)
    assert extracted == [1.0, 1.0, 1.0, 1.0, 0.0]
    as_is = ExecutionReward(mbpp_tasks)(prompts=[[]] * len(chats), completions=chats, task_id=ids)
    assert as_is == [0.0, 1.0, 0.0, 0.0, 0.0]  # the fence itself is a syntax error


def test_conversational_task_datasets(mbpp_tasks):
    chats = tasks_to_dataset(mbpp_tasks, conversational=True, system_prompt="Answer with one Python code block.")
    assert chats[0]["prompt"] == [{"role": "system", "content": "Answer with one Python code block."},
                                  {"role": "user", "content": mbpp_tasks[0].prompt}]
    assert chats["task_id"] == [t.task_id for t in mbpp_tasks]
    assert tasks_to_dataset(mbpp_tasks, conversational=True)[0]["prompt"] == [{"role": "user", "content": mbpp_tasks[0].prompt}]
    assert tasks_to_dataset(mbpp_tasks)[0]["prompt"] == mbpp_tasks[0].prompt
    with pytest.raises(ValueError, match="system_prompt needs conversational=True"):
        tasks_to_dataset(mbpp_tasks, system_prompt="x")


def test_unknown_task_id_names_the_fix(mbpp_tasks):
    with pytest.raises(KeyError, match="has no task 'MBPP/9999'"):
        ExecutionReward(mbpp_tasks)(prompts=["p"], completions=["c"], task_id=["MBPP/9999"])


def test_grpo_step_rewards_match_the_environment(tmp_path, tiny_model_dir, mbpp_tasks):
    import gymnasium as gym
    from trl import GRPOTrainer

    reward = ExecutionReward(mbpp_tasks)
    calls = []

    def recorded(prompts, completions, task_id, **kwargs):
        values = reward(prompts=prompts, completions=completions, task_id=task_id, **kwargs)
        calls.append((list(task_id), list(completions), values, sorted(kwargs)))
        return values

    recorded.__name__ = "execution_reward"
    args = tiny_grpo_config(tmp_path, max_completion_length=16)
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=[recorded], args=args,
                          train_dataset=tasks_to_dataset(mbpp_tasks))
    trainer.train()
    assert calls, "GRPOTrainer never called the reward"
    env = gym.make("LETI-MBPP", split="train").unwrapped
    for task_ids, completions, values, kwargs in calls:
        expected = [r.reward for r in env.run_many([(env.task(i), c) for i, c in zip(task_ids, completions)])]
        assert values == expected
        assert "log_extra" in kwargs and "trainer_state" in kwargs


def test_saved_rollouts_become_the_trainers_rows(tmp_path, tiny_model_dir, mbpp_tasks):
    config = small_config(tmp_path, num_iterations=1, eval_before_training=False)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2])
    rollouts = trainer.collect_rollouts(1, tmp_path / "iteration-1" / "rollouts")
    dataset = rollouts_to_sft_dataset(tmp_path / "iteration-1" / "rollouts", config, tokenizer=trainer.tokenizer)
    assert dataset["input_ids"] == [r["input_ids"] for r in trainer.training_rows(rollouts, 1)]
    texts = rollouts_to_sft_dataset(rollouts, config)
    assert texts[0]["text"].startswith(("<|bad|><|lang_feedback|>", "<|good|>"))
    from transformers import AutoTokenizer

    with pytest.raises(ValueError, match="the tokenizer lacks"):
        rollouts_to_sft_dataset(rollouts, config, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
