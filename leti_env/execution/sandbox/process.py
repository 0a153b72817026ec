"""Process helpers of the zygote: limits, waiting and reaping, tree removal, and what a run's end means.

Standard library only; imported by ``zygote`` as a top-level module.
"""

from __future__ import annotations

import os
import resource
import signal

NOBODY = 65534  # the solution process
VERIFIER_UID = 65533  # the verifier: another uid, so the program cannot signal or trace it


def classify(request, verdict, u_status, timed_out, output_exceeded, oom) -> dict:
    """The result of one run from what the verifier said and how the solution process ended."""
    limit = request["timeout"]
    base = {"asserts_run": (verdict or {}).get("asserts", 0), "total_asserts": (verdict or {}).get("total_asserts", 0)}
    kind = (verdict or {}).get("kind")
    if kind == "passed":
        return {**base, "status": "passed", "feedback": ""}
    if kind == "exception":
        return {**base, "status": verdict["status"], "feedback": verdict["feedback"]}
    if kind == "harness_error":
        return {**base, "status": "sandbox_error", "feedback": "SandboxError: " + verdict["feedback"]}
    if output_exceeded:
        return {**base, "status": "output_limit",
                "feedback": f"OutputLimitError: the program wrote more than {request['output_limit_mb']} MiB of output\n"}
    if oom:
        return {**base, "status": "memory_exceeded",
                "feedback": f"MemoryError: the program exceeded the {request['memory_mb']} MiB memory limit\n"}
    if timed_out and kind is None:
        return {**base, "status": "timeout",
                "feedback": f"TimeoutError: the program did not finish within the {limit:g} s time limit\n"}
    ran = f"{base['asserts_run']} of {base['total_asserts']} asserts ran"
    if u_status is not None and os.WIFSIGNALED(u_status):
        sig = os.WTERMSIG(u_status)
        if sig == signal.SIGXCPU:
            return {**base, "status": "timeout",
                    "feedback": f"TimeoutError: the program used more than its {limit:g} s of CPU time\n"}
        return {**base, "status": "crashed",
                "feedback": f"Fatal error: the program was killed by signal {_signal_name(sig)} ({ran})\n"}
    if u_status is not None and os.WIFEXITED(u_status):
        code = os.WEXITSTATUS(u_status)
        return {**base, "status": "exited_early",
                "feedback": f"SystemExit: the program exited with status {code} before the tests finished ({ran})\n"}
    if kind == "gone":  # it closed its end of the tests' connection but kept running
        return {**base, "status": "exited_early",
                "feedback": f"SystemExit: the program stopped answering the tests ({ran})\n"}
    return {**base, "status": "sandbox_error", "feedback": "SandboxError: the test harness stopped without a verdict\n"}


def remove_tree(path: str) -> None:
    """Remove a directory tree without recursion (a program may leave 10,000 nested directories)."""
    stack = [path]
    while stack:
        top = stack[-1]
        try:
            entries = list(os.scandir(top))
        except FileNotFoundError:
            stack.pop()
            continue
        subdirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.path)
        if subdirs:
            stack.extend(subdirs)
        else:
            os.rmdir(top)
            stack.pop()


def _set_rlimit(which: int, soft: int, hard: int | None = None) -> None:
    cur_soft, cur_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _nobody_can_run_python() -> bool:
    """Can uid nobody read this interpreter's standard library and site-packages? (forked probe)"""
    import sysconfig

    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            for path in paths:
                os.listdir(path)
            os._exit(0)
        finally:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _poll_status(pid: int) -> int | None:
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if got == pid else None


def _reap(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None
