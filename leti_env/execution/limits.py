"""``ExecutionLimits``: what one program may use, declared once and carried to every runner.

A task's verdict depends on its limits (a correct EAE program needs LeTI's 30 s; a looping Arith program
should cost 1 s, not 5), so the limits belong to the environment that owns the tasks, and travel with
them (``leti_env.TaskSet``) to the trainer, TRL's reward, the GRPO and tool adapters, ``leti eval`` and
``leti serve``. Every default is written here and nowhere else; a caller changes a limit explicitly
(``limits.override(timeout=...)``), never by re-declaring a default of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExecutionLimits:
    """Per-program limits of the sandbox: time, memory, files, output and feedback size.

    >>> from leti_env import ExecutionLimits, execute
    >>> limits = ExecutionLimits(timeout=1.0)
    >>> execute("while True: pass", limits).status
    'timeout'
    >>> limits.override(timeout=None, memory_mb=512)   # None: keep this limit as it is
    ExecutionLimits(timeout=1.0, memory_mb=512, max_feedback_chars=4096, max_file_mb=64, output_limit_mb=0, max_output_bytes=4096)

    Attributes:
        timeout: Wall-clock seconds per program, which also bound its CPU time. LeTI's 5 s for MBPP and
            HumanEval; an environment whose programs need more or less declares its own (LETI-EAE: 30 s,
            LETI-Arith: 1 s).
        memory_mb: Address-space cap per program (MiB). Generated code allocates little; more is a bug
            or an attack, and it must not take the machine's memory from the trainer.
        max_feedback_chars: Longest feedback text kept. Longer feedback keeps its head (the traceback's
            start) and its tail (the exception line), with one marker between them: feedback is
            training data, and a flooding program must not make a row arbitrarily long.
        max_file_mb: Largest file a program may write (RLIMIT_FSIZE), within its private ``/tmp``.
        output_limit_mb: Stop a program that writes more than this to stdout/stderr; ``0``: never (its
            output is drained and counted, and only ``max_output_bytes`` of it kept).
        max_output_bytes: How much of a program's output is kept in ``ExecutionResult.output``.
    """

    timeout: float = 5.0
    memory_mb: int = 1024
    max_feedback_chars: int = 4096
    max_file_mb: int = 64
    output_limit_mb: int = 0
    max_output_bytes: int = 4096

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"`timeout` must be positive, got {self.timeout}")
        if self.memory_mb < 32:
            raise ValueError(f"`memory_mb` must be at least 32, got {self.memory_mb}: the interpreter alone needs "
                             "about 20 MiB")
        for name in ("max_feedback_chars", "max_file_mb", "max_output_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.output_limit_mb < 0:
            raise ValueError(f"`output_limit_mb` must be >= 0 (0: no limit), got {self.output_limit_mb}")

    def override(self, **changes: Any) -> ExecutionLimits:
        """These limits with ``changes`` applied; a change of ``None`` keeps that limit (an option the user
        left unset), so ``env.limits.override(timeout=args.timeout)`` is the environment's own limits unless
        ``--timeout`` was given."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"ExecutionLimits has no {', '.join(map(repr, unknown))}; its limits: "
                            f"{[f.name for f in dataclasses.fields(self)]}")
        given = {name: value for name, value in changes.items() if value is not None}
        return dataclasses.replace(self, **given) if given else self

    def capped(self, maxima: ExecutionLimits) -> ExecutionLimits:
        """These limits, each at most ``maxima``'s (``output_limit_mb``'s 0, no limit, counts as the largest).

        What ``leti serve`` runs a client's programs under: the client asks, the server's own limits bound it.

        >>> ExecutionLimits(timeout=30.0, memory_mb=512).capped(ExecutionLimits(timeout=5.0))
        ExecutionLimits(timeout=5.0, memory_mb=512, max_feedback_chars=4096, max_file_mb=64, output_limit_mb=0, max_output_bytes=4096)
        """
        values = {}
        for f in dataclasses.fields(self):
            asked, most = getattr(self, f.name), getattr(maxima, f.name)
            if f.name == "output_limit_mb":
                values[f.name] = asked if most == 0 else (most if asked == 0 else min(asked, most))
            else:
                values[f.name] = min(asked, most)
        return ExecutionLimits(**values)
