"""leti_env: execution-checked code tasks as Gymnasium environments, and a sandboxed executor.

``import leti_env`` registers ``LETI-MBPP``, ``LETI-HumanEval``, ``LETI-EAE`` and ``LETI-Arith`` with Gymnasium
(``gym.make("leti_env:LETI-MBPP")`` imports this package first). It imports no torch.
"""

from gymnasium.envs.registration import register as _register

from .execution import (
    ExecutionLimits,
    ExecutionResult,
    ExecutionServerError,
    ExecutionServerWarning,
    ExecutorPool,
    Program,
    SandboxUnavailableError,
    SandboxWarning,
    TaskRunner,
    execute,
    execute_many,
    sandbox_report,
)
from .metrics import pass_at_k
from .tasks import CodeTask, DatasetFormatError, extract_code, load_humaneval, load_mbpp
from .tasks.arith import load_arith
from .tasks.task_set import TaskSet

__version__ = "0.2.0"

_ENVS = {
    "LETI-MBPP": "leti_env.envs:MBPPEnv",
    "LETI-HumanEval": "leti_env.envs:HumanEvalEnv",
    "LETI-EAE": "leti_env.envs:EAEEnv",
    "LETI-Arith": "leti_env.envs:ArithEnv",
}
for _id, _entry_point in _ENVS.items():
    _register(id=_id, entry_point=_entry_point)


def __getattr__(name: str):
    # The env classes import gymnasium.spaces; keep `import leti_env` light until they are used.
    if name in ("CodeEnv", "MBPPEnv", "HumanEvalEnv", "EAEEnv", "ArithEnv", "AnyText", "refinement_prompt", "refinement_feedback",
                "make_leti_env", "load_env", "load_tasks", "resolve_tasks"):
        from . import envs

        return getattr(envs, name)
    raise AttributeError(f"module 'leti_env' has no attribute {name!r}")


__all__ = [
    "AnyText", "ArithEnv", "CodeEnv", "CodeTask", "DatasetFormatError", "EAEEnv", "ExecutionLimits", "ExecutionResult", "ExecutionServerError",
    "ExecutionServerWarning", "ExecutorPool", "HumanEvalEnv",
    "MBPPEnv", "Program", "SandboxUnavailableError", "SandboxWarning", "TaskRunner", "TaskSet", "execute", "execute_many", "extract_code", "load_humaneval",
    "load_arith", "load_env", "load_mbpp", "load_tasks", "make_leti_env", "pass_at_k", "refinement_feedback", "refinement_prompt", "resolve_tasks",
    "sandbox_report",
]
