"""Sandboxed execution of untrusted generated programs (standard library only, no torch).

See ``_sandbox.py`` for the process model and why the verdict cannot be forged by the program.
"""

from .pool import (
    ExecutorPool,
    SandboxUnavailableError,
    SandboxWarning,
    default_workers,
    execute,
    execute_many,
    get_pool,
    sandbox_report,
)
from .program import Program
from .result import STATUSES, ExecutionResult, Status

__all__ = [
    "STATUSES", "ExecutionResult", "ExecutorPool", "Program", "SandboxUnavailableError", "SandboxWarning",
    "Status", "default_workers", "execute", "execute_many", "get_pool", "sandbox_report",
]
