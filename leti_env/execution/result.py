"""What running one program produced: the verdict, the feedback text, and timings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal[
    "passed",  # every test ran and none failed
    "failed",  # an assert failed
    "error",  # the program or a test raised another exception
    "syntax_error",  # the program does not compile
    "timeout",  # wall-clock or CPU-time limit
    "memory_exceeded",  # the memory cap was hit
    "crashed",  # killed by a signal (segfault, abort, ...)
    "exited_early",  # the program exited (sys.exit, os._exit) before the tests finished
    "output_limit",  # too much output on stdout/stderr
    "sandbox_error",  # the executor itself failed; not the program's fault
]

STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one untrusted program. Always returned, never raised.

    ``feedback`` is what LeTI trains on: empty when the program passed; otherwise the interpreter's
    error text (LeTI's traceback format, line numbers counted in the executed program) or one short
    line for a timeout, crash or early exit. It is deterministic: no temporary paths, pids, memory
    addresses or timings. Timings live in their own fields, for logs and benchmarks only.
    """

    status: Status
    feedback: str
    duration_s: float = 0.0
    cpu_s: float = 0.0
    output: str = ""  # the head of the program's stdout+stderr (not part of the feedback)
    output_bytes: int = 0  # how much it wrote in total
    asserts_run: int = 0  # asserts the trusted test code executed before the verdict
    total_asserts: int = 0  # assert statements in the test code

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def reward(self) -> float:
        """LeTI's binary reward: 1.0 if every test passed, else 0.0."""
        return 1.0 if self.passed else 0.0
