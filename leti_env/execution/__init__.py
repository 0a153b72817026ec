"""Sandboxed execution of untrusted generated programs (standard library only, no torch).

See ``sandbox/zygote.py`` for the process model, ``sandbox/verifier.py`` for why the verdict cannot be
forged by the program, and ``sandbox/filesystem.py`` for what a program can see.
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
from .limits import ExecutionLimits
from .program import Program
from .result import STATUSES, ExecutionResult, Status
from .remote import ExecutionServerError, ExecutionServerWarning
from .runner import TaskRunner

__all__ = [
    "STATUSES", "ExecutionLimits", "ExecutionResult", "ExecutionServerError", "ExecutionServerWarning", "ExecutorPool", "Program", "SandboxUnavailableError", "SandboxWarning",
    "Status", "TaskRunner", "default_workers", "execute", "execute_many", "get_pool", "sandbox_report",
]
