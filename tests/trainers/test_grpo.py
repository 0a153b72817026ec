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
    assert out["logprobs"] is None  # sampled with transformers (use_vllm=False): no sampler logprobs to correct by
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


class FakeVLLMGeneration:
    """A stand-in for TRL's vLLM engine, ``trl.trainer.grpo_trainer.VLLMGeneration``, for the dispatch test only:
    vLLM needs CUDA and cannot run on a CPU machine (``scripts/gpu_check.py``'s ``grpo_vllm_turns`` runs the real
    one). GRPOTrainer builds it as it would build vLLM's, with its sampling settings; it keeps TRL 1.16's
    interface (``generate(prompts, images, num_generations)`` sampling ``max_completion_length`` tokens, read at
    each call; ``sync_weights()``), records every call, and answers each context with ``answer(context)``'s
    tokens and a log-probability of -0.5 per token, the shape TRL's ``logprobs=0`` gives."""

    def __init__(self, model, accelerator, processing_class, **settings):
        self.settings, self.max_completion_length = settings, settings["max_completion_length"]
        self.calls, self.syncs, self.answer = [], 0, None

    def sync_weights(self):
        self.syncs += 1

    def generate(self, prompts, images, num_generations, profiler=None):
        self.calls.append({"prompts": [list(p) for p in prompts], "images": images,
                           "num_generations": num_generations, "max_tokens": self.max_completion_length})
        completions = [self.answer(list(p))[: self.max_completion_length] for p in prompts]
        return prompts, completions, [[[-0.5]] * len(c) for c in completions], [[[t] for t in c] for c in completions]


def test_with_use_vllm_turns_are_sampled_by_trls_vllm_engine_with_its_settings_and_logprobs(tmp_path, tiny_model_dir,
                                                                                            monkeypatch):
    import math

    import leti_env
    import trl.trainer.grpo_trainer as grpo_trainer
    from trl import GRPOTrainer

    from trainers import tasks_to_dataset

    monkeypatch.setattr(grpo_trainer, "VLLMGeneration", FakeVLLMGeneration)
    tasks = leti_env.load_tasks("LETI-Arith", "train", 2)
    rollout = refinement_rollout(tasks, max_turns=2, max_new_tokens=24)
    seen = []

    def recorded(prompts, trainer):
        seen.append(rollout(prompts, trainer))
        return seen[-1]

    args = tiny_grpo_config(tmp_path, max_completion_length=200)
    args.use_vllm, args.vllm_mode, args.temperature, args.top_p = True, "colocate", 0.7, 0.9
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=[RolloutReward()], args=args,
                          train_dataset=tasks_to_dataset(tasks), rollout_func=recorded)
    engine = trainer.vllm_generation
    assert isinstance(engine, FakeVLLMGeneration)
    assert (engine.settings["temperature"], engine.settings["top_p"]) == (0.7, 0.9)  # TRL's sampling settings
    tokenizer = trainer.processing_class
    wrong = tokenizer("\nx = 1\n", add_special_tokens=False)["input_ids"]
    solution = tokenizer(tasks[0].reference_solution, add_special_tokens=False)["input_ids"]
    engine.answer = lambda context: wrong if len(engine.calls) == 1 else solution  # a fix on the second turn

    def no_transformers(*args, **kwargs):
        raise AssertionError("sampled with transformers although the trainer has a vLLM engine")

    trainer.model.generate = no_transformers
    trainer.train()

    out = seen[0]
    prompt_ids = out["prompt_ids"][0]
    assert len(engine.calls) == 2 and engine.syncs >= 1  # one engine call per turn; TRL synced the weights first
    first, second = engine.calls
    assert first == {"prompts": [prompt_ids] * 4, "images": None, "num_generations": 1, "max_tokens": 24}
    block = out["completion_ids"][0][len(wrong):-len(solution)]
    assert second["prompts"] == [prompt_ids + wrong + block] * 4 and second["max_tokens"] == 24
    assert "NameError" in tokenizer.decode(block)  # the interpreter's feedback on the first attempt
    assert engine.max_completion_length == 200  # the per-turn budget was set for each call only
    assert out["completion_ids"] == [wrong + block + solution] * 4
    assert out["logprobs"] == [[-0.5] * len(wrong) + [0.0] * len(block) + [-0.5] * len(solution)] * 4
    assert out["env_turns"] == [2] * 4 and out["env_reward"] == [1.0] * 4
    logged = next(h for h in trainer.state.log_history if "execution/turns" in h)
    assert logged["execution/turns"] == 2.0 and math.isfinite(logged["loss"])  # TRL's importance sampling used them


def test_without_use_vllm_turns_are_sampled_with_transformers_and_a_missing_engine_names_the_fix():
    from types import SimpleNamespace

    from trainers.grpo import trainer_generate, transformers_generate

    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    plain = SimpleNamespace(use_vllm=False, processing_class=tokenizer)
    assert trainer_generate(plain).__qualname__ == transformers_generate(plain).__qualname__
    broken = SimpleNamespace(use_vllm=True, processing_class=tokenizer, accelerator=SimpleNamespace(num_processes=1))
    with pytest.raises(RuntimeError, match=r"install trl==1\.16\.0 \(constraints.txt\) or set use_vllm=False"):
        trainer_generate(broken)([[5, 6]], 4)


def test_processes_sample_in_lockstep_when_their_episodes_end_after_different_turns(tokenizer, mbpp_tasks):
    """TRL's vLLM server gathers every process's prompts and hands back equal shares, so every process must call
    it as often, with as many contexts: one whose episodes end first keeps taking part, with fillers."""
    import threading

    from leti_env import ExecutionResult
    from trainers.grpo import Lockstep, Sampled

    world = 2
    barrier, slots = threading.Barrier(world, timeout=30), [None] * world  # a process left waiting: an error
    calls = [[] for _ in range(world)]  # (contexts, max_tokens) the engine saw from each process
    filler = [tokenizer.eos_token_id]
    wrong, right = "\nx = 1\n", mbpp_tasks[0].reference_solution

    def gather_for(rank):
        def gather(objects):  # accelerate's gather_object across two threads
            slots[rank] = objects[0]
            barrier.wait()
            everyone = list(slots)
            barrier.wait()
            return everyone
        return gather

    def engine_for(rank):
        def sample(contexts, max_tokens):
            calls[rank].append((len(contexts), max_tokens))
            text = right if rank == 0 or len(calls[rank]) > 1 else wrong  # process 1 fails its first turn
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            rows = [ids if c != filler else [rank] * max_tokens for c in contexts]
            return Sampled(rows, [[-1.0] * len(r) for r in rows])
        return sample

    class Runner:  # passes the reference solution; no sandbox needed to test the turn-taking
        def run(self, attempts):
            return [ExecutionResult("passed", "") if code == right else ExecutionResult("failed", "AssertionError")
                    for _, code in attempts]

    results, errors = [None] * world, []

    def process(rank):
        generate = Lockstep(engine_for(rank), filler, gather_for(rank))
        tasks = [mbpp_tasks[0]] * (1 + rank)  # process 1 has more episodes, and takes more turns
        try:
            results[rank] = run_episodes(tasks, tokenizer, generate, Runner(), max_turns=3,
                                         max_completion_length=4096, max_new_tokens=512)
            generate.finish()
        except threading.BrokenBarrierError:
            errors.append(rank)

    threads = [threading.Thread(target=process, args=(rank,), daemon=True) for rank in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors and not any(t.is_alive() for t in threads), "a process was left waiting for the others"
    assert calls[0] == calls[1] == [(2, 512), (2, 512)]  # as many calls, as many contexts, the same budget
    assert [len(e.results) for e in results[0]] == [1] and [len(e.results) for e in results[1]] == [2, 2]
    right_ids = tokenizer(right, add_special_tokens=False)["input_ids"]
    assert results[0][0].completion_ids == right_ids and results[0][0].logprobs == [-1.0] * len(right_ids)
    assert all(e.completion_ids[-len(right_ids):] == right_ids for e in results[1])  # their own rows, not fillers
