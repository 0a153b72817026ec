"""The one place where completions become verdicts: ``TaskRunner``.

Everything that executes model output goes through it: ``CodeEnv.run_many``, the LeTI trainer's
rollouts and evaluation, TRL's reward (``trainers.ExecutionReward``) and ``leti eval``. So the limits (an
``ExecutionLimits``: the tasks' own, carried from their environment), the choice of pool (this process's
cores under a multi-process launcher) and the deduplication of repeated programs are decided once, the
same way for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .limits import ExecutionLimits
from .program import Program
from .result import ExecutionResult

if TYPE_CHECKING:
    from ..tasks.base import CodeTask

Progress = Callable[[int, int], None]


class TaskRunner:
    """Runs ``(task, completion)`` pairs, or ready ``Program`` objects, in the sandbox; results in input order.

    Args:
        limits: What each program may use (default: ``ExecutionLimits()``). Pass the tasks' own
            (``env.limits``, ``resolve_tasks(...).limits``): LETI-EAE's programs need 30 s.
        workers: Sandbox workers (default: one per core of this process's share, see below).
        servers: ``leti serve`` URLs (``["http://10.0.0.5:8000", ...]``): run the programs on those servers'
            sandboxes instead of this process's (a GPU node's few cores, CPU machines beside it). Each batch
            is shared over the servers in proportion to their free workers; a server that fails mid-batch
            has its unanswered programs run on the others (``leti_env.execution.remote``). Each server caps
            the limits at its own. ``None`` (default): this process's pool.
        token: The servers' shared token (``leti serve --token``); default: ``LETI_SERVER_TOKEN``.
        deduplicate: Run each distinct program once and give every copy its result, also across calls
            (a trainer's iterations). Programs run in a fresh process with a seeded ``random``, so the
            verdict is the same as running every copy. A timeout is never remembered: it depends on the
            machine's load at the time, so the next call runs that program again.
        max_remembered: With ``deduplicate``, forget every verdict once this many are held (memory stays
            bounded on long runs with long programs).

    Under ``accelerate launch``/``torchrun`` each local process runs its workers on its own block of the
    machine's cores (``LOCAL_WORLD_SIZE``/``LOCAL_RANK``): pinned all to the first cores they would run
    several times slower, and correct but slow programs would time out.

    Examples:
        >>> from leti_env import ExecutionLimits, TaskRunner
        >>> runner = TaskRunner(ExecutionLimits(timeout=1.0))
        >>> [r.status for r in runner.run_programs(["assert 1 + 1 == 2", "1 / 0"])]
        ['passed', 'error']
    """

    def __init__(self, limits: ExecutionLimits | None = None, *, workers: int | None = None, deduplicate: bool = False,
                 max_remembered: int = 500_000, servers: Sequence[str] | str | None = None, token: str | None = None):
        if limits is not None and not isinstance(limits, ExecutionLimits):
            raise TypeError(f"`limits` must be an ExecutionLimits, got {type(limits).__name__}: write "
                            "TaskRunner(ExecutionLimits(timeout=...)), or pass an environment's `limits`")
        self.limits = limits if limits is not None else ExecutionLimits()
        self.workers, self.deduplicate, self.max_remembered = workers, deduplicate, max_remembered
        self._known: dict[Program, ExecutionResult] = {}
        self.remote = None
        if servers is not None:
            from .remote import RemoteExecutor, parse_servers

            urls = parse_servers(servers)
            if urls and workers is not None:
                raise ValueError("`workers` sizes this process's sandbox pool; with `servers` the programs run on "
                                 "the servers' workers (leti serve --workers): give one or the other")
            self.remote = RemoteExecutor(urls, token) if urls else None

    @property
    def servers(self) -> list[str] | None:
        """The execution servers' URLs, or None: this process's pool."""
        return [s.url for s in self.remote.servers] if self.remote is not None else None

    def run(self, pairs: Sequence[tuple[CodeTask, str]], progress: Progress | None = None) -> list[ExecutionResult]:
        """Execute each completion as its task's program (``task.program(completion)``)."""
        return self.run_programs([task.program(completion) for task, completion in pairs], progress)

    def run_programs(self, programs: Sequence[str | Program], progress: Progress | None = None) -> list[ExecutionResult]:
        """Execute programs (a ``str`` passes when it runs to its end); ``progress(done, total)`` counts
        the programs actually run, so with ``deduplicate`` its total is the number of distinct new ones."""
        programs = [Program(solution=p) if isinstance(p, str) else p for p in programs]
        if not self.deduplicate:
            return self._execute(programs, progress)
        if len(self._known) > self.max_remembered:
            self._known.clear()
        todo = list(dict.fromkeys(p for p in programs if p not in self._known))  # distinct new ones, in order
        now = dict(zip(todo, self._execute(todo, progress)))
        out = [now[p] if p in now else self._known[p] for p in programs]
        self._known.update((p, r) for p, r in now.items() if r.status != "timeout")
        return out

    def _execute(self, programs: list[Program], progress: Progress | None) -> list[ExecutionResult]:
        if not programs:
            return []
        if self.remote is not None:
            return self.remote.run(programs, self.limits, progress)
        return self.pool().run(programs, self.limits, progress=progress)

    def check_servers(self) -> dict[str, dict]:
        """With ``servers``: the capacity of each that answers (``ExecutionServerError`` if none does), so that
        a run finds a wrong URL or a stopped fleet before it samples anything. Without: ``{}``."""
        return self.remote.check() if self.remote is not None else {}

    def pool(self):
        """This process's sandbox pool (its share of the cores under a multi-process launcher)."""
        from .pool import get_pool, local_cpu_share

        return get_pool(self.workers, cpus=local_cpu_share())

    def forget(self) -> None:
        """Drop every remembered verdict (e.g. after changing a task's tests in place)."""
        self._known.clear()
