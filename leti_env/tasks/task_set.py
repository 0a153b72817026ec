"""``TaskSet``: tasks together with the limits their programs run under."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from ..execution.limits import ExecutionLimits
from .base import CodeTask


@dataclass(frozen=True)
class TaskSet(Sequence[CodeTask]):
    """An environment's tasks and its ``ExecutionLimits``, as one value: what ``load_tasks`` and
    ``resolve_tasks`` return, and what every runner of the tasks reads its limits from.

    Tasks and limits travel together because a verdict depends on both: LETI-EAE's correct programs
    need 30 s, and a list of its tasks run at the 5 s default would score them as timeouts. A
    ``TaskSet`` is a read-only sequence of ``CodeTask``; slicing keeps the limits
    (``load_tasks("LETI-EAE")[:10].limits.timeout == 30.0``), ``list(task_set)`` drops them.

    >>> from leti_env import load_tasks
    >>> tasks = load_tasks("LETI-Arith", "heldout", 2)
    >>> len(tasks), tasks.limits.timeout
    (2, 1.0)
    """

    tasks: tuple[CodeTask, ...]
    limits: ExecutionLimits = field(default_factory=ExecutionLimits)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        bad = next((t for t in self.tasks if not isinstance(t, CodeTask)), None)
        if bad is not None:
            raise TypeError(f"a TaskSet holds CodeTask objects, got a {type(bad).__name__}")
        if not isinstance(self.limits, ExecutionLimits):
            raise TypeError(f"`limits` must be an ExecutionLimits, got {type(self.limits).__name__}")

    def __len__(self) -> int:
        return len(self.tasks)

    @overload
    def __getitem__(self, index: int) -> CodeTask: ...

    @overload
    def __getitem__(self, index: slice) -> TaskSet: ...

    def __getitem__(self, index: int | slice) -> CodeTask | TaskSet:
        if isinstance(index, slice):
            return TaskSet(self.tasks[index], self.limits)
        return self.tasks[index]

    def __iter__(self) -> Iterator[CodeTask]:
        return iter(self.tasks)

    def __repr__(self) -> str:
        return f"TaskSet({len(self.tasks)} tasks, {self.limits!r})"

