"""Tool-calling multi-turn GRPO: leti's executor as the run_tests tool of TRL's environment_factory."""

from __future__ import annotations

import pickle

import pytest

from tests.trainers.conftest import tiny_grpo_config
from trainers.tool_env import PASSED, CodeToolEnv, code_tool_task


def test_the_tool_runs_attempts_and_the_episode_is_scored(mbpp_tasks):
    task = mbpp_tasks[0]
    env = CodeToolEnv(mbpp_tasks, max_turns=2)
    assert env.reset(task_id=task.task_id, prompt=[]) is None and env.get_reward() == 0.0
    feedback = env.run_tests("```python\ndef nothing():\n    pass\n```")
    assert "NameError" in feedback and env.get_reward() == 0.0
    assert env.run_tests(f"Fixed:\n```python\n{task.reference_solution.strip()}\n```") == PASSED
    assert env.get_reward() == 1.0
    assert env.run_tests(task.reference_solution).startswith("No attempts left")  # max_turns=2
    env.rule = "first_try"
    assert env.get_reward() == 0.0
    env.reset(task_id=mbpp_tasks[1].task_id)  # pooled instances start every episode afresh
    assert env.results == [] and env.task is mbpp_tasks[1]
    clone = pickle.loads(pickle.dumps(env))
    assert clone.task.task_id == mbpp_tasks[1].task_id and clone.max_turns == 2
    with pytest.raises(KeyError, match="needs a task_id column"):
        env.reset(task_id="MBPP/0")
    with pytest.raises(ValueError, match="`reward` must be"):
        code_tool_task(mbpp_tasks, reward="last")


def test_tool_attempts_run_under_the_tasks_own_limits_unless_limits_are_given():
    from leti_env import ExecutionLimits

    assert CodeToolEnv("LETI-EAE").runner.limits == ExecutionLimits(timeout=30.0)  # LeTI's 30 s for EAE
    spec = code_tool_task("LETI-EAE", max_turns=2)
    assert spec.environment_factory().runner.limits.timeout == 30.0
    spec = code_tool_task("LETI-EAE", limits=ExecutionLimits(timeout=2.0))
    assert spec.environment_factory().runner.limits.timeout == 2.0


def test_grpo_with_the_tool_environment_on_a_tool_calling_template(tmp_path, tiny_model_dir, mbpp_tasks):
    from pathlib import Path

    import trl
    from transformers import AutoTokenizer
    from trl import GRPOTrainer
    from trl.chat_template_utils import add_response_schema

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    tokenizer = add_response_schema(tokenizer)
    spec = code_tool_task(mbpp_tasks[:2], max_turns=2)
    assert spec.train_dataset[0]["prompt"][-1] == {"role": "user", "content": mbpp_tasks[0].prompt}
    args = tiny_grpo_config(tmp_path, max_completion_length=24)
    trainer = GRPOTrainer(model=str(tiny_model_dir), processing_class=tokenizer, args=args,
                          train_dataset=spec.train_dataset, environment_factory=spec.environment_factory,
                          reward_funcs=spec.reward_funcs)
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "rewards/CodeToolEnv/mean" in h)
    assert 0.0 <= logged["rewards/CodeToolEnv/mean"] <= 1.0 and "tools/call_frequency" in logged
