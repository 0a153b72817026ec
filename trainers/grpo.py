"""Multi-turn GRPO on leti's feedback, for base models as in LeTI: TRL's ``rollout_func``.

The model writes a program; if it fails, the interpreter's feedback is appended as Python comments
followed by the prompt again (``leti_env.refinement_feedback``), and the model writes the program anew,
up to ``max_turns`` times. The feedback tokens are part of the completion the policy is scored on but
carry no loss (``env_mask = 0``): the model is trained on what it wrote, conditioned on what it was told.

    from trainers.grpo import refinement_rollout, RolloutReward
    rollout = refinement_rollout(tasks, max_turns=2)
    GRPOTrainer(model=..., args=GRPOConfig(...), train_dataset=tasks_to_dataset(tasks),
                rollout_func=rollout, reward_funcs=[RolloutReward()])

Attempts are sampled with TRL's vLLM engine when the trainer has one (``GRPOConfig(use_vllm=True)``, in
``"colocate"`` or ``"server"`` mode), else with transformers ``generate``. Chat models that call tools go
through ``trainers.tool_env`` instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from leti_env import CodeTask, ExecutionResult, TaskRunner, refinement_feedback, resolve_tasks


class Sampled(NamedTuple):
    """What a ``Generate`` returns where its sampler reports log-probabilities (vLLM): each new token's
    log-probability under the sampler, which TRL's importance-sampling correction needs."""

    ids: list[list[int]]
    logprobs: list[list[float | None]] | None


# generate(contexts, max_new_tokens) -> the new token ids of each context (EOS included when it stopped there),
# or a ``Sampled`` with their log-probabilities too
Generate = Callable[[list[list[int]], int], list[list[int]] | Sampled]
RewardRule = Literal["final", "best", "first_try"]


@dataclass
class Episode:
    """One refinement episode: the tokens the model wrote and the environment added, and every attempt's result."""

    task: CodeTask
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)  # 1: written by the model, 0: feedback from the environment
    results: list[ExecutionResult] = field(default_factory=list)
    # the sampler's log-probability of each completion token (0.0 on feedback); None where it reports none
    logprobs: list[float | None] | None = field(default_factory=list)

    def reward(self, rule: RewardRule) -> float:
        """``final``: the last attempt's reward; ``best``: any attempt's; ``first_try``: the first one's."""
        rewards = [r.reward for r in self.results]
        return {"final": rewards[-1], "best": max(rewards), "first_try": rewards[0]}[rule]


def run_episodes(tasks: Sequence[CodeTask], tokenizer: Any, generate: Generate, runner: TaskRunner, *,
                 max_turns: int = 2, max_completion_length: int = 256, max_new_tokens: int | None = None,
                 on_no_room: Callable[[int, int], None] | None = None) -> list[Episode]:
    """Refinement episodes, one per task, all advanced turn by turn in one batch.

    Each turn generates at most ``max_new_tokens`` (default: ``max_completion_length // max_turns``) for
    every unfinished episode, executes the attempts (``runner``), and appends the feedback of each failed
    one. An episode ends when it passes, after ``max_turns`` attempts, or when its completion has no room
    left under ``max_completion_length`` tokens (feedback included).

    Turns are budgeted: a failed attempt's feedback block (``refinement_feedback``: a header, the feedback
    as comments, the prompt again) is appended only with room left for a whole next attempt after it. A
    feedback too long for that is cut to its last lines (where the exception is), marked ``...``; where not
    even ``MIN_FEEDBACK_TOKENS`` of it fit, the episode ends there and ``on_no_room(turn, needed)`` is
    called with the completion length that turn would have needed. Cutting the whole block instead, as a
    plain length cap would, leaves the repeated prompt incomplete and no room to answer it: the episode
    then silently never takes its next turn.

    Where ``generate`` returns ``Sampled``, each episode keeps its tokens' log-probabilities (``logprobs``,
    0.0 on feedback tokens); else its ``logprobs`` is ``None``.
    """
    if max_turns < 1:
        raise ValueError(f"`max_turns` must be at least 1, got {max_turns}")
    per_turn = max_new_tokens if max_new_tokens is not None else max(1, max_completion_length // max_turns)
    episodes = [Episode(task, tokenizer(task.prompt, add_special_tokens=False)["input_ids"]) for task in tasks]
    active = list(range(len(episodes)))
    for turn in range(max_turns):
        room = {i: min(per_turn, max_completion_length - len(episodes[i].completion_ids)) for i in active}
        active = [i for i in active if room[i] > 0]
        if not active:
            break
        new = generate([episodes[i].prompt_ids + episodes[i].completion_ids for i in active], max(room.values()))
        new, new_logprobs = (new.ids, new.logprobs) if isinstance(new, Sampled) else (new, None)
        attempts = []
        for k, (i, ids) in enumerate(zip(active, new)):
            ids = list(ids)[: room[i]]
            episodes[i].completion_ids += ids
            episodes[i].env_mask += [1] * len(ids)
            if episodes[i].logprobs is not None and new_logprobs is not None:
                episodes[i].logprobs += list(new_logprobs[k])[: len(ids)]
            else:
                episodes[i].logprobs = None
            attempts.append((episodes[i].task, tokenizer.decode(ids, skip_special_tokens=True)))
        results = runner.run(attempts)
        still = []
        for i, result in zip(active, results):
            episodes[i].results.append(result)
            if result.passed or turn == max_turns - 1:
                continue
            room_for_block = max_completion_length - len(episodes[i].completion_ids) - per_turn
            block = _feedback_block(tokenizer, episodes[i].task.prompt, result.feedback, room_for_block)
            if block is None:
                if on_no_room is not None:
                    empty = _feedback_block(tokenizer, episodes[i].task.prompt, "", 10 ** 9) or []
                    needed = len(episodes[i].completion_ids) + len(empty) + MIN_FEEDBACK_TOKENS + per_turn
                    on_no_room(turn + 2, needed)
                continue
            episodes[i].completion_ids += block
            episodes[i].env_mask += [0] * len(block)
            if episodes[i].logprobs is not None:
                episodes[i].logprobs += [0.0] * len(block)
            still.append(i)
        active = still
    return episodes


MIN_FEEDBACK_TOKENS = 8  # below this, a cut feedback says nothing (not even the exception's name)


def _feedback_block(tokenizer: Any, prompt: str, feedback: str, room: int) -> list[int] | None:
    """``refinement_feedback(prompt, feedback)``'s tokens if they fit in ``room``; else the same block with the
    feedback cut to fit, ``...`` marking the cut: its last lines (the exception last), or where even the last
    line does not fit, that line's start (the exception's name and the start of its message). ``None`` where
    fewer than ``MIN_FEEDBACK_TOKENS`` of the feedback would fit."""
    def ids(text: str) -> list[int]:
        return tokenizer(refinement_feedback(prompt, text), add_special_tokens=False)["input_ids"]

    def largest(fits: Callable[[int], bool], high: int) -> int:  # the largest n in 0..high with fits(n) (monotone)
        low = 0
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        return low

    whole = ids(feedback)
    if len(whole) <= room:
        return whole
    if len(ids("")) + MIN_FEEDBACK_TOKENS > room:
        return None
    lines = feedback.rstrip("\n").split("\n")
    keep = largest(lambda k: k == 0 or len(ids("...\n" + "\n".join(lines[-k:]))) <= room, len(lines))
    if keep:
        text = "...\n" + "\n".join(lines[-keep:])
    else:
        last = lines[-1]
        text = "...\n" + last[:largest(lambda n: n == 0 or len(ids(f"...\n{last[:n]} ...")) <= room, len(last))] + " ..."
    block = ids(text)
    return block if len(block) <= room and len(block) - len(ids("")) >= MIN_FEEDBACK_TOKENS else None


def refinement_rollout(tasks: Any, *, max_turns: int = 2, reward: RewardRule = "final", runner: TaskRunner | None = None,
                       max_new_tokens: int | None = None, servers: Sequence[str] | None = None) -> Callable[[list, Any], dict]:
    """A ``rollout_func`` for TRL's ``GRPOTrainer``: refinement episodes on ``tasks`` (an env id, an
    environment or ``CodeTask``s; the dataset's prompts must be their prompts, as ``tasks_to_dataset`` writes).

    It returns one completion per prompt it receives (TRL has already repeated each prompt
    ``num_generations`` times), ``env_mask`` (0 on feedback tokens), and for the reward functions
    ``env_reward`` (by ``reward``: ``final``, ``best`` or ``first_try``), ``env_status``, ``env_feedback``
    (of the last attempt) and ``env_turns``. Pair it with ``RolloutReward()``. Each attempt gets at most
    ``max_new_tokens`` (default: ``max_completion_length // max_turns``); the whole completion, feedback
    included, at most ``GRPOConfig.max_completion_length``. Attempts run on ``runner`` (default: one with
    the tasks' own limits, e.g. LETI-EAE's 30 s, that runs each distinct program once, here or on the ``leti
    serve`` machines at ``servers``), which the returned function keeps as its ``runner`` attribute.

    Attempts are sampled by ``trainer_generate``: with the trainer's vLLM engine when it has one
    (``use_vllm=True``), then also returning vLLM's ``logprobs`` for TRL's importance-sampling correction;
    else with transformers (``logprobs`` ``None``).
    """
    task_set = resolve_tasks(tasks, "tasks")
    by_prompt = {t.prompt: t for t in task_set}
    if runner is not None and servers is not None:
        raise ValueError("give `servers` or a `runner` (TaskRunner(limits, servers=...)), not both")
    runner = runner if runner is not None else TaskRunner(task_set.limits, deduplicate=True, servers=servers)
    if reward not in ("final", "best", "first_try"):
        raise ValueError(f"`reward` must be 'final', 'best' or 'first_try', got {reward!r}")
    warned: list[int] = []

    def rollout_func(prompts: list, trainer: Any) -> dict:
        missing = [p for p in prompts if not isinstance(p, str) or p not in by_prompt]
        if missing:
            raise KeyError(f"refinement_rollout got a prompt that is none of its tasks' ({str(missing[0])[:80]!r}); "
                           "build the dataset with tasks_to_dataset(tasks) from the same tasks.")
        tokenizer = trainer.processing_class
        limit = trainer.args.max_completion_length

        def no_room(turn: int, needed: int) -> None:
            if not warned:
                warned.append(turn)
                warnings.warn(f"refinement_rollout: max_completion_length={limit} leaves no room for turn {turn} of an "
                              f"episode (its feedback block and a next attempt need about {needed} tokens); raise "
                              "max_completion_length or lower max_new_tokens, or episodes stop at their first "
                              "failure (warned once)", stacklevel=2)

        generate = trainer_generate(trainer)
        episodes = run_episodes([by_prompt[p] for p in prompts], tokenizer, generate, runner,
                                max_turns=max_turns, max_completion_length=limit,
                                max_new_tokens=max_new_tokens, on_no_room=no_room)
        if isinstance(generate, Lockstep):
            generate.finish()  # take part in the other processes' remaining turns
        logprobs = [e.logprobs for e in episodes]
        return {"prompt_ids": [e.prompt_ids for e in episodes], "completion_ids": [e.completion_ids for e in episodes],
                "logprobs": None if any(lp is None for lp in logprobs) else logprobs,
                "env_mask": [e.env_mask for e in episodes],
                "env_reward": [e.reward(reward) for e in episodes],
                "env_status": [e.results[-1].status for e in episodes],
                "env_feedback": [e.results[-1].feedback for e in episodes],
                "env_turns": [len(e.results) for e in episodes]}

    rollout_func.runner = runner  # type: ignore[attr-defined]
    return rollout_func


def trainer_generate(trainer: Any) -> Generate:
    """Sampling with the trainer's current policy and its sampling settings: through TRL's vLLM engine
    where the trainer has one (``trainer.use_vllm``), else with transformers ``generate``."""
    if getattr(trainer, "use_vllm", False):
        return vllm_generate(trainer)
    return transformers_generate(trainer)


def vllm_generate(trainer: Any) -> Generate:
    """Sampling with the ``GRPOTrainer``'s vLLM engine (``"colocate"`` or ``"server"``): one completion per
    context (token ids in, token ids out), with the trainer's ``temperature``, ``top_p``, ``top_k``,
    ``min_p``, ``repetition_penalty`` and ``generation_kwargs`` as the engine holds them, at most
    ``max_new_tokens`` new tokens, and vLLM's log-probability of each. TRL syncs the engine's weights
    before it calls the ``rollout_func``.

    Under several processes they sample in ``Lockstep``: the engine's calls can be collective (server mode
    gathers every process's prompts and hands back equal shares; tensor parallelism, and sleep mode's weight
    reload under DeepSpeed ZeRO-3 or FSDP, synchronize too), while episodes end after different turns."""
    tokenizer = trainer.processing_class

    def generate(contexts: list[list[int]], max_new_tokens: int) -> Sampled:
        return _trl_vllm_sample(trainer, contexts, max_new_tokens)

    if trainer.accelerator.num_processes == 1:
        return generate
    from accelerate.utils import gather_object

    filler = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id]
    return Lockstep(generate, filler, gather_object)


def _trl_vllm_sample(trainer: Any, contexts: list[list[int]], max_new_tokens: int) -> Sampled:
    """One completion per context from the trainer's vLLM engine, at most ``max_new_tokens`` long.

    Read from TRL 1.16.0 (trl/generation/vllm_generation.py, trl/trainer/grpo_trainer.py): GRPOTrainer keeps
    its engine, a ``VLLMGeneration``, as ``trainer.vllm_generation``; ``generate(prompts, images,
    num_generations)`` samples ``max_completion_length`` new tokens, an attribute it reads at each call. TRL
    has no per-call limit, so that attribute is set for the call (the turn's budget) and restored: the one
    thing here that is not TRL's public interface."""
    engine = getattr(trainer, "vllm_generation", None)
    if engine is None or not callable(getattr(engine, "generate", None)) or not hasattr(engine, "max_completion_length"):
        raise RuntimeError("refinement_rollout: the trainer has use_vllm=True but no vLLM engine as TRL 1.16.0 keeps it "
                           "(`trainer.vllm_generation`: generate() and max_completion_length); install trl==1.16.0 "
                           "(constraints.txt) or set use_vllm=False")
    previous = engine.max_completion_length
    engine.max_completion_length = max_new_tokens
    try:
        _, completion_ids, logprobs, _ = engine.generate(prompts=contexts, images=None, num_generations=1)
    finally:
        engine.max_completion_length = previous
    ids = [list(row)[:max_new_tokens] for row in completion_ids]
    if logprobs is None:  # a server that returns no logprobs
        return Sampled(ids, None)
    # TRL asks for logprobs=0: each token's one entry is the sampled token's (None where vLLM's was NaN)
    return Sampled(ids, [[top[0] for top in row][:max_new_tokens] for row in logprobs])


class Lockstep:
    """A ``Generate`` that every process calls the same number of times with as many contexts, for an engine
    whose calls are collective. Each call first exchanges every process's number of contexts and token
    budget (``gather``: accelerate's ``gather_object``); a process with fewer contexts pads with ``filler``
    (a one-token context) and keeps its own rows, cut to its own budget. A process whose episodes are over
    calls ``finish``: it takes part, with fillers alone, until every process has finished."""

    def __init__(self, generate: Callable[[list[list[int]], int], Sampled], filler: list[int],
                 gather: Callable[[list], list]):
        self.generate, self.filler, self.gather = generate, filler, gather

    def __call__(self, contexts: list[list[int]], max_new_tokens: int) -> Sampled:
        if not contexts:
            raise ValueError("Lockstep: a call needs at least one context (a process with none left calls finish())")
        return self._round(contexts, max_new_tokens)

    def finish(self) -> None:
        while self._round([], 0) is not None:
            pass

    def _round(self, contexts: list[list[int]], max_new_tokens: int) -> Sampled | None:
        wants = self.gather([(len(contexts), max_new_tokens)])
        width = max(n for n, _ in wants)
        if width == 0:  # every process has finished
            return None
        out = self.generate(contexts + [self.filler] * (width - len(contexts)), max(t for _, t in wants))
        ids = [row[:max_new_tokens] for row in out.ids[: len(contexts)]]
        logprobs = None if out.logprobs is None else [row[:max_new_tokens] for row in out.logprobs[: len(contexts)]]
        return Sampled(ids, logprobs)


def transformers_generate(trainer: Any) -> Generate:
    """Sampling with transformers ``generate`` on the trainer's current policy and its ``temperature``/``top_p``/``top_k``."""
    import torch
    from trl.models import unwrap_model_for_generation

    tokenizer = trainer.processing_class
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def generate(contexts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        width = max(len(c) for c in contexts)
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=trainer.accelerator.device)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=ids.device)
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model, torch.no_grad():
            was_training = model.training
            model.eval()  # no dropout while sampling, and a cache (activation checkpointing is off in eval)
            try:
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True,
                                     temperature=trainer.args.temperature, top_p=trainer.args.top_p,
                                     top_k=trainer.args.top_k or 0, pad_token_id=pad)
            finally:
                model.train(was_training)
        new = out[:, width:].tolist()
        return [_until_eos(row, tokenizer.eos_token_id, pad) for row in new]

    return generate


def _until_eos(ids: list[int], eos: int | None, pad: int) -> list[int]:
    """A generated row up to and including its EOS (the padding after it dropped)."""
    if eos is not None and eos in ids:
        return ids[: ids.index(eos) + 1]
    while ids and ids[-1] == pad and pad != eos:
        ids = ids[:-1]
    return ids


class RolloutReward:
    """The reward function that goes with ``refinement_rollout``: its ``env_reward``, logged with the
    last attempt's status and feedback (TRL's completions table) and the mean number of attempts."""

    __name__ = "execution_reward"

    def __call__(self, prompts=None, completions=None, env_reward=None, env_status=None, env_feedback=None,
                 env_turns=None, log_extra=None, log_metric=None, **kwargs) -> list[float]:
        if env_reward is None:
            raise ValueError("RolloutReward needs the `env_reward` that refinement_rollout returns: pass "
                             "rollout_func=refinement_rollout(tasks) to GRPOTrainer.")
        if log_extra is not None:
            log_extra("status", list(env_status or []))
            log_extra("feedback", list(env_feedback or []))
        if log_metric is not None and env_turns:
            log_metric("execution/turns", sum(env_turns) / len(env_turns))
        return [float(r) for r in env_reward]
