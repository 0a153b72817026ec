"""Multi-turn GRPO on leti's feedback (base models): refinement episodes and TRL's rollout_func."""

from __future__ import annotations

import pytest

from leti_env import TaskRunner, refinement_feedback
from tests.trainers.conftest import tiny_grpo_config
from trainers.grpo import RolloutReward, refinement_rollout, run_episodes


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def scripted(tokenizer, attempts_by_turn):
    """A stand-in policy for the episode logic: turn t writes attempts_by_turn[t] (real tokens, real execution)."""
    calls = []

    def generate(contexts, max_new_tokens):
        text = attempts_by_turn[len(calls)]
        calls.append([list(c) for c in contexts])
        return [tokenizer(text, add_special_tokens=False)["input_ids"][:max_new_tokens] for _ in contexts]

    return generate, calls


def test_a_second_turn_fix_changes_the_reward_and_feedback_carries_no_loss(tokenizer, mbpp_tasks):
    task = mbpp_tasks[0]
    wrong = "\ndef nothing():\n    pass\n"
    generate, calls = scripted(tokenizer, [wrong, task.reference_solution])
    (episode,) = run_episodes([task], tokenizer, generate, TaskRunner(), max_turns=2, max_completion_length=4096,
                              max_new_tokens=2048)
    assert [r.passed for r in episode.results] == [False, True]
    assert (episode.reward("final"), episode.reward("best"), episode.reward("first_try")) == (1.0, 1.0, 0.0)
    first = tokenizer(wrong, add_special_tokens=False)["input_ids"]
    block = tokenizer(refinement_feedback(task.prompt, episode.results[0].feedback), add_special_tokens=False)["input_ids"]
    second = tokenizer(task.reference_solution, add_special_tokens=False)["input_ids"]
    assert episode.completion_ids == first + block + second
    assert episode.env_mask == [1] * len(first) + [0] * len(block) + [1] * len(second)
    assert "NameError" in tokenizer.decode(block)  # the interpreter's feedback, as the model sees it
    assert calls[1] == [episode.prompt_ids + first + block]  # the second attempt is conditioned on it

    generate, calls = scripted(tokenizer, [task.reference_solution])
    (solved,) = run_episodes([task], tokenizer, generate, TaskRunner(), max_turns=3, max_completion_length=4096,
                             max_new_tokens=2048)
    assert len(calls) == 1 and solved.env_mask == [1] * len(solved.completion_ids)  # passed: no feedback, no retry


def test_turns_are_budgeted_the_feedback_cut_to_fit_and_a_turn_without_room_is_reported(tokenizer, mbpp_tasks):
    """A long feedback is cut to its last lines so that the repeated prompt and a whole next attempt still fit
    under max_completion_length; where not even that fits, the episode ends and the caller hears of it."""
    from trainers.grpo import MIN_FEEDBACK_TOKENS

    task = mbpp_tasks[0]
    wrong = "\nraise ValueError('" + "x" * 400 + " the end')\n"  # a feedback of ~100+ tokens
    first = len(tokenizer(wrong, add_special_tokens=False)["input_ids"])
    empty = len(tokenizer(refinement_feedback(task.prompt, ""), add_special_tokens=False)["input_ids"])
    limit = first + empty + MIN_FEEDBACK_TOKENS + 20 + first  # a cut feedback, and room for a whole next attempt
    generate, calls = scripted(tokenizer, [wrong, task.reference_solution])
    (episode,) = run_episodes([task], tokenizer, generate, TaskRunner(), max_turns=2, max_completion_length=limit,
                              max_new_tokens=first)
    assert len(episode.results) == 2 and len(episode.completion_ids) <= limit  # it took its second turn
    block_ids = [t for t, m in zip(episode.completion_ids, episode.env_mask) if m == 0]
    block = tokenizer.decode(block_ids)
    assert block.startswith("\n\n# The program above failed its tests:\n# ...") and block.endswith(task.prompt)
    assert "# ValueError: xxx" in block and block.count("x") < 400 and "Traceback" not in block  # the exception kept
    assert calls[1] == [episode.prompt_ids + episode.completion_ids[:first + len(block_ids)]]  # conditioned on it

    reported = []
    generate, calls = scripted(tokenizer, [wrong, task.reference_solution])
    (short,) = run_episodes([task], tokenizer, generate, TaskRunner(), max_turns=2, max_completion_length=first + empty,
                            max_new_tokens=first, on_no_room=lambda turn, needed: reported.append((turn, needed)))
    assert len(short.results) == 1 and len(calls) == 1  # no second turn ...
    assert reported == [(2, first + empty + MIN_FEEDBACK_TOKENS + first)]  # ... and the caller is told what it needs


def test_grpo_trains_on_refinement_rollouts_with_feedback_masked(tmp_path, tiny_model_dir):
    import leti_env
    from trl import GRPOTrainer

    from trainers import tasks_to_dataset

    tasks = leti_env.load_tasks("LETI-Arith", "train", 2)
    rollout = refinement_rollout(tasks, max_turns=2, max_new_tokens=12)
    seen = []

    def recorded(prompts, trainer):
        out = rollout(prompts, trainer)
        seen.append(out)
        return out

    reward = RolloutReward()
    rewards = []

    def recorded_reward(**kwargs):
        values = reward(**kwargs)
        rewards.append((values, kwargs["env_turns"]))
        return values

    recorded_reward.__name__ = "execution_reward"
    args = tiny_grpo_config(tmp_path, max_completion_length=160)
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=[recorded_reward], args=args,
                          train_dataset=tasks_to_dataset(tasks), rollout_func=recorded)
    trainer.train()
    assert seen and rewards
    out = seen[0]
    assert len(out["completion_ids"]) == 4 and all(len(m) == len(c) for m, c in zip(out["env_mask"], out["completion_ids"]))
    assert any(0 in m for m in out["env_mask"])  # an untrained model fails: feedback was appended, then a retry
    assert rewards[0] == (out["env_reward"], out["env_turns"])
    logged = next(h for h in trainer.state.log_history if "completions/mean_length" in h)
    model_tokens = sum(sum(m) for m in out["env_mask"]) / 4
    assert logged["completions/mean_length"] == pytest.approx(model_tokens)  # feedback tokens are not counted
    assert model_tokens < sum(len(c) for c in out["completion_ids"]) / 4


def test_refinement_attempts_run_under_the_tasks_own_limits_unless_a_runner_is_given():
    from leti_env import ExecutionLimits, load_tasks

    assert refinement_rollout("LETI-EAE").runner.limits == ExecutionLimits(timeout=30.0)  # LeTI's 30 s for EAE
    assert refinement_rollout(load_tasks("LETI-Arith", "heldout", 2)).runner.limits.timeout == 1.0
    runner = TaskRunner(ExecutionLimits(timeout=2.0))
    assert refinement_rollout("LETI-EAE", runner=runner).runner is runner


def test_unknown_prompts_and_rules_name_the_fix(mbpp_tasks):
    with pytest.raises(ValueError, match="`reward` must be 'final', 'best' or 'first_try'"):
        refinement_rollout(mbpp_tasks, reward="last")
    with pytest.raises(KeyError, match="tasks_to_dataset"):
        refinement_rollout(mbpp_tasks)(["not a task prompt"], None)
    with pytest.raises(ValueError, match="needs the `env_reward`"):
        RolloutReward()(prompts=["p"], completions=["c"])
