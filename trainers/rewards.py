"""Execution rewards for TRL's own trainers (GRPO, RLOO), and rollouts as an SFT dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leti_env import CodeTask, ExecutionLimits, Program, TaskRunner, extract_code, resolve_tasks

from .leti_config import LetiConfig
from .rollouts import Rollout, load_rollouts
from .sequences import build_rows, training_texts


class ExecutionReward:
    """A TRL reward function: 1.0 if the completion passes the task's tests in the sandbox, else 0.0.

    Pass it to ``GRPOTrainer(reward_funcs=[ExecutionReward(tasks)])`` or ``RLOOTrainer``. The dataset
    needs a ``task_id`` column (tasks are looked up by id) or a ``tests`` column (then the program is
    ``prompt + completion`` checked by those tests). Feedback and status go to TRL's completions table
    through ``log_extra``; the pass rate is logged as ``execution/pass_rate``.

    Chat models: a conversational completion's last message is the answer, and with ``extract_code``
    its first fenced Python block is the code (``leti_env.extract_code``): an instruct model's
    ```` ```python ```` answer would otherwise be a syntax error whatever its code.

    Programs run under the tasks' own limits (``resolve_tasks(tasks).limits``: LETI-EAE's 30 s), or
    ``limits`` where given (``ExecutionLimits()`` without tasks), in this process's sandbox pool (``workers``),
    or on ``leti serve`` machines (``servers``: their URLs; the token, if they need one, from
    ``LETI_SERVER_TOKEN``). ``runner`` replaces the executor (a ``leti_env.TaskRunner``; e.g. one with
    ``deduplicate=True``, as GRPO samples the same program several times), limits and servers included.

    >>> reward = ExecutionReward("LETI-MBPP")
    >>> reward(prompts=[task.prompt], completions=[task.reference_solution], task_id=[task.task_id])
    [1.0]
    """

    def __init__(self, tasks: Any = None, *, limits: ExecutionLimits | None = None, workers: int | None = None,
                 runner: TaskRunner | None = None, extract_code: bool = False, servers: Sequence[str] | None = None):
        task_set = resolve_tasks(tasks, "tasks") if tasks is not None else None
        self.tasks = {t.task_id: t for t in task_set} if task_set is not None else {}
        if limits is None:
            limits = task_set.limits if task_set is not None else ExecutionLimits()
        # the executor of leti's own loop and of CodeEnv.run_many (under a multi-process launch: this rank's cores)
        if runner is not None and servers is not None:
            raise ValueError("give `servers` or a `runner` (TaskRunner(limits, servers=...)), not both")
        self.runner = runner if runner is not None else TaskRunner(limits, workers=workers, servers=servers)
        self.extract_code = extract_code
        self.__name__ = "execution_reward"  # TRL names the logged reward column after the function

    def programs(self, prompts: Sequence[Any], completions: Sequence[Any], task_id=None, tests=None) -> list[Program]:
        programs = []
        for i, completion in enumerate(completions):
            completion = _text(completion)
            if self.extract_code:  # the code on lines of its own, after the prompt (MBPP's ends with its docstring)
                completion = extract_code(completion)
                completion = completion if completion.startswith("\n") else "\n" + completion
            if task_id is not None:
                if task_id[i] not in self.tasks:
                    raise KeyError(f"ExecutionReward has no task {task_id[i]!r}; pass the tasks (or env id) it should know.")
                programs.append(self.tasks[task_id[i]].program(completion))
            elif tests is not None:
                prompt = "" if self.extract_code and not isinstance(prompts[i], str) else _text(prompts[i])
                programs.append(Program(prompt + completion, tests[i]))
            else:
                raise ValueError("ExecutionReward needs a `task_id` or a `tests` column in the training dataset.")
        return programs

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], task_id: Sequence[str] | None = None,
                 tests: Sequence[str] | None = None, log_extra=None, log_metric=None, **kwargs) -> list[float]:
        results = self.runner.run_programs(self.programs(prompts, completions, task_id, tests))
        if log_extra is not None:
            log_extra("feedback", [r.feedback for r in results])
            log_extra("status", [r.status for r in results])
        if log_metric is not None and results:
            log_metric("execution/pass_rate", sum(r.reward for r in results) / len(results))
        return [r.reward for r in results]


def tasks_to_dataset(tasks: Sequence[CodeTask], *, conversational: bool = False, system_prompt: str | None = None):
    """A ``prompt``/``task_id`` dataset that GRPOTrainer/RLOOTrainer take with ``ExecutionReward``.

    ``conversational``: each prompt is a chat (an optional ``system_prompt`` message, then the task's prompt
    as the user's), for chat models; pair it with ``ExecutionReward(extract_code=True)``.
    """
    import datasets

    if system_prompt is not None and not conversational:
        raise ValueError("system_prompt needs conversational=True (a plain-text prompt has no system message).")
    rows = []
    for task in tasks:
        prompt: Any = task.prompt
        if conversational:
            prompt = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
                [{"role": "user", "content": task.prompt}]
        rows.append({"prompt": prompt, "task_id": task.task_id})
    return datasets.Dataset.from_list(rows)


def rollouts_to_sft_dataset(rollouts: Sequence[Rollout] | str | Path, config: LetiConfig, tokenizer=None):
    """LeTI rows from saved rollouts, as a dataset ``SFTTrainer`` takes directly.

    With a tokenizer: pre-tokenized ``input_ids``/``labels`` (exactly the LetiTrainer rows; add the four
    special tokens to the tokenizer first). Without: a ``text`` column (note that SFTTrainer then appends
    EOS, which the authors' rows do not have). With ``config.failure_loss_weight`` other than 1 the rows
    also have a ``loss_weight`` column, which only ``trainers.weighted_loss.WeightedSFTTrainer`` reads
    (a plain ``SFTTrainer`` drops it and weighs every row alike).
    """
    import datasets

    if isinstance(rollouts, (str, Path)):
        rollouts = load_rollouts(rollouts)
    if tokenizer is None:
        return datasets.Dataset.from_list([{"text": t} for t in training_texts(rollouts, config, seed=config.seed)])
    missing = [t for t in config.special_tokens if t not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"the tokenizer lacks {missing}: call tokenizer.add_tokens(config.special_tokens, special_tokens=True) "
                         "and resize the model's embeddings first.")
    return datasets.Dataset.from_list(build_rows(rollouts, config, tokenizer, seed=config.seed))


def _text(value: Any) -> str:
    """A completion as text: plain strings, or the last message of a conversational completion."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    raise TypeError(f"a completion must be a str or a list of messages, got {type(value).__name__}")
