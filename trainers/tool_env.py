"""Multi-turn GRPO for tool-calling chat models: leti's executor as a tool in TRL's ``environment_factory``.

The model gets the task as a chat, calls ``run_tests(code)`` as often as ``max_turns`` allows, reads the
interpreter's feedback in the tool's reply, and is rewarded by what its attempts achieved (``get_reward``,
which TRL adds as a reward function named after the class). TRL masks the tool replies out of the loss.

    from trainers.tool_env import code_tool_task
    spec = code_tool_task("LETI-MBPP", max_turns=3)
    GRPOTrainer(model=..., args=GRPOConfig(...), train_dataset=spec.train_dataset,
                environment_factory=spec.environment_factory, reward_funcs=spec.reward_funcs)

The model's chat template must support tool calls (TRL's ``trl/chat_templates``, e.g. ``qwen3.jinja``).
Base models, which do not call tools, use ``trainers.grpo.refinement_rollout`` instead.

With ``server_url`` the programs run in a ``leti serve`` process (OpenEnv; maybe on another machine)
instead of this process's sandbox: each environment instance holds one OpenEnv session there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from leti_env import CodeTask, ExecutionLimits, ExecutionResult, TaskRunner, extract_code, resolve_tasks

DEFAULT_SYSTEM_PROMPT = ("Solve the programming task in Python. Call the run_tests tool with your complete solution "
                         "to check it against the hidden tests; if it fails, read the feedback and try again.")
PASSED = "All tests passed."


class CodeToolEnv:
    """One episode of a code task, for TRL's ``environment_factory``: ``reset`` picks the task by the row's
    ``task_id``; ``run_tests`` is the model's tool; ``get_reward`` scores the episode.

    Instances are reused across episodes (TRL pools them) and are picklable (tasks and limits only; the
    sandbox pool is per process, the server connection per instance). ``tasks``: an env id, an environment,
    a ``TaskSet`` or ``CodeTask``s; their programs run under the tasks' own limits (LETI-EAE's 30 s), or
    ``limits`` where given.

    With ``server_url`` (a ``leti serve`` of the same tasks, started with ``--max_turns`` at least this
    ``max_turns``) each episode is an OpenEnv session's episode there. The server ends an episode at the
    first pass, so after a pass ``run_tests`` answers without running again (``final`` is then the pass).
    """

    def __init__(self, tasks: Any, *, max_turns: int = 3, reward: Literal["final", "best", "first_try"] = "final",
                 limits: ExecutionLimits | None = None, server_url: str | None = None):
        if max_turns < 1:
            raise ValueError(f"`max_turns` must be at least 1, got {max_turns}")
        if reward not in ("final", "best", "first_try"):
            raise ValueError(f"`reward` must be 'final', 'best' or 'first_try', got {reward!r}")
        task_set = resolve_tasks(tasks, "tasks")
        self.tasks = {t.task_id: t for t in task_set}
        self.max_turns, self.rule = max_turns, reward
        self.runner = TaskRunner(limits if limits is not None else task_set.limits, deduplicate=True)
        self.server_url = server_url
        self._client = None  # the OpenEnv session (server_url), opened at the first reset
        self._episode_over = False
        self.task: CodeTask | None = None
        self.results: list[ExecutionResult] = []

    def close(self) -> None:
        """End the server session (``server_url``); the next ``reset`` opens a new one."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def reset(self, task_id: str | None = None, **row: Any) -> str | None:
        if task_id not in self.tasks:
            raise KeyError(f"CodeToolEnv has no task {task_id!r}: the dataset needs a task_id column from the same "
                           "tasks (code_tool_task builds both).")
        self.task, self.results = self.tasks[task_id], []
        if self.server_url is not None:
            if self._client is None:
                from leti_env.server import LetiEnvClient

                self._client = LetiEnvClient(base_url=self.server_url).sync()
                self._client.connect()
            self._client.reset(task_id=task_id)
            self._episode_over = False
        return None

    def run_tests(self, code: str) -> str:
        """Run a Python solution against the task's hidden tests.

        Args:
            code: The complete solution: the function definitions the task asks for (Markdown fences are removed).

        Returns:
            "All tests passed." or the interpreter's feedback on the first failing test (its traceback).
        """
        if self.task is None:
            return "No task: the environment was not reset."
        if len(self.results) >= self.max_turns:
            return f"No attempts left (at most {self.max_turns})."
        completion = "\n" + extract_code(str(code))
        if self.server_url is None:
            result = self.runner.run([(self.task, completion)])[0]
        elif self._episode_over:
            return PASSED if self.results and self.results[-1].passed else "No attempts left (the server's limit)."
        else:
            from leti_env.server import CodeAction

            observation = self._client.step(CodeAction(code=completion)).observation
            self._episode_over = observation.done
            result = ExecutionResult(observation.status, observation.feedback)
        self.results.append(result)
        return PASSED if result.passed else result.feedback

    def get_reward(self) -> float:
        """``final``: the last attempt passed; ``best``: any did; ``first_try``: the first did. No attempt: 0."""
        if not self.results:
            return 0.0
        rewards = [r.reward for r in self.results]
        return {"final": rewards[-1], "best": max(rewards), "first_try": rewards[0]}[self.rule]


@dataclass
class CodeToolTask:
    """What ``GRPOTrainer`` needs for tool-calling code episodes: pass its three fields on."""

    train_dataset: Any
    environment_factory: Callable[[], CodeToolEnv]
    reward_funcs: list = field(default_factory=list)  # get_reward is added by TRL itself


def code_tool_task(tasks: Any, *, max_turns: int = 3, reward: Literal["final", "best", "first_try"] = "final",
                   limits: ExecutionLimits | None = None, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                   server_url: str | None = None) -> CodeToolTask:
    """The dataset (chat prompts + ``task_id``), the environment factory and the reward functions for
    ``tasks`` (an env id, an environment, a ``TaskSet`` or ``CodeTask``s), whose programs run under the
    tasks' own limits unless ``limits`` is given. ``server_url``: run the programs on a ``leti serve`` of
    the same tasks (OpenEnv) instead of in this process's sandbox (the server's limits then apply)."""
    from .rewards import tasks_to_dataset

    tasks = resolve_tasks(tasks, "tasks")
    factory = functools.partial(CodeToolEnv, tasks, max_turns=max_turns, reward=reward, limits=limits,
                                server_url=server_url)
    factory()  # bad options fail here, not in the trainer
    return CodeToolTask(tasks_to_dataset(tasks, conversational=True, system_prompt=system_prompt), factory)
