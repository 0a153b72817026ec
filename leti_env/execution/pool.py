"""The caller's side of the executor: a pool of sandbox workers, and ``execute``/``execute_many``."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import _sandbox
from .program import Program
from .result import ExecutionResult

_WORKER_SCRIPT = str(Path(_sandbox.__file__).resolve())
_DISABLE_CHOICES = {"pidns", "netns", "mountns", "ipcns", "userns", "cgroup", "setuid"}
# What a caller may expect on Linux; anything missing is reported, never silently dropped.
_EXPECTED = ("pid_namespace", "network_namespace", "mount_namespace", "readonly_root", "private_tmp",
             "cgroup_pids", "cgroup_memory", "unprivileged_uid")


class SandboxWarning(UserWarning):
    """The kernel refused a protection the executor would normally apply."""


class SandboxUnavailableError(RuntimeError):
    """A protection required by ``strict=True`` (or ``LETI_SANDBOX=strict``) is not available."""


def default_workers() -> int:
    """One worker per usable core: more would turn wall-clock limits into flaky timeouts."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Worker:
    def __init__(self, config: dict, python: str):
        self.config = config
        env = dict(_sandbox._SAFE_ENV)  # the worker never sees the caller's environment (secrets)
        self.proc = subprocess.Popen(
            [python, "-I", _WORKER_SCRIPT, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env, cwd="/",
            close_fds=True, start_new_session=True, bufsize=0,
        )
        self.fd_in, self.fd_out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        ready, _, _ = select.select([self.fd_out], [], [], 60)
        hello = _sandbox.recv_msg(self.fd_out) if ready else None
        if not hello or hello.get("event") != "ready":
            self.kill()
            raise RuntimeError(f"the sandbox worker did not start (exit code {self.proc.poll()}); see stderr above")
        self.protections: dict = hello["protections"]
        self.busy_until = 0.0
        self.inflight: deque[int] = deque()  # request indices sent, oldest (running) first

    def send(self, request: dict) -> None:
        _sandbox.send_msg(self.fd_in, request)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # launcher and zygote (namespace init) share a group
        except OSError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # EOF: the zygote exits, the launcher removes its cgroups
            self.proc.wait(timeout=5)
            self.proc.stdout.close()
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


class ExecutorPool:
    """Long-lived sandbox workers that run untrusted programs in parallel.

    Each worker is a small process started before any heavy import; every program is forked from
    it, so a trainer's large heap is never copied and each run costs a few milliseconds. Workers are
    started lazily and restarted if one ever stops answering.

    Args:
        workers: Number of parallel workers (default: the number of usable cores).
        memory_mb: Memory cap of each worker's cgroup is sized from this (per-run caps are set per
            call with ``memory_mb=`` on ``run``).
        pids_max: Most processes one program may have at once (cgroup pids limit, or RLIMIT_NPROC).
        strict: Refuse to run (``SandboxUnavailableError``) if any protection is missing instead of
            warning once. Also enabled by the environment variable ``LETI_SANDBOX=strict``.
        disable: Protections to switch off, for testing degraded hosts: any of
            ``pidns netns mountns ipcns userns cgroup setuid``. Also read from ``LETI_SANDBOX_DISABLE``
            (comma-separated).
        python: Interpreter that runs the programs (default: this one).
        tmpfs_mb: Size of each slot's private ``/tmp`` (what programs may write in all).
        pin_cpus: Pin worker ``i`` to the ``i``-th usable core when there are at least as many cores
            as workers (faster calls between the solution and verifier processes, steadier timing).
    """

    def __init__(self, workers: int | None = None, *, memory_mb: int = 1024, pids_max: int = 128,
                 strict: bool | None = None, disable: Iterable[str] = (), python: str | None = None,
                 tmpfs_mb: int = 256, pin_cpus: bool = True):
        disable = set(disable) | {d for d in os.environ.get("LETI_SANDBOX_DISABLE", "").split(",") if d}
        unknown = disable - _DISABLE_CHOICES
        if unknown:
            raise ValueError(f"unknown protections to disable: {sorted(unknown)}; choose from {sorted(_DISABLE_CHOICES)}")
        if workers is not None and workers < 1:
            raise ValueError(f"`workers` must be at least 1, got {workers}")
        self.num_workers = workers or default_workers()
        self.strict = strict if strict is not None else os.environ.get("LETI_SANDBOX", "") == "strict"
        self.python = python or sys.executable
        self.pin_cpus = pin_cpus
        self.config = {"disable": sorted(disable), "memory_mb": memory_mb, "pids_max": pids_max, "tmpfs_mb": tmpfs_mb}
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        self._warned = False
        self._next_id = 0

    # -- lifecycle -------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if os.getpid() != self._owner_pid:  # we were forked: the workers belong to the parent
            self._workers, self._owner_pid = [], os.getpid()
        while len(self._workers) < self.num_workers:
            self._workers.append(_Worker(self._worker_config(len(self._workers)), self.python))
        self._check_protections(self._workers[0].protections)

    def _worker_config(self, index: int) -> dict:
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:
            cpus = []
        pin = self.pin_cpus and len(cpus) >= self.num_workers
        return {**self.config, "cpu": cpus[index % len(cpus)] if pin else None}

    def _check_protections(self, protections: dict) -> None:
        missing = [p for p in _EXPECTED if not protections.get(p)]
        if missing and self.strict:
            self.close()
            raise SandboxUnavailableError(
                f"the sandbox lacks {', '.join(missing)} on this host ({'; '.join(protections.get('notes', []))}). "
                "Run as root or enable unprivileged user namespaces, or drop strict mode."
            )
        if missing and not self._warned:
            self._warned = True
            warnings.warn(
                f"leti sandbox runs without: {', '.join(missing)}"
                + (f" ({'; '.join(protections.get('notes', []))})" if protections.get("notes") else "")
                + ". See leti_env.sandbox_report().",
                SandboxWarning, stacklevel=4,
            )

    def protections(self) -> dict:
        """Which protections the workers actually applied (starts the workers if needed)."""
        with self._lock:
            self._ensure_started()
            return dict(self._workers[0].protections)

    def close(self) -> None:
        """Stop the workers. The pool restarts them if used again."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()

    def __enter__(self) -> ExecutorPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running ---------------------------------------------------------------------------

    def run(self, programs: Sequence[str | Program], *, timeout: float = 5.0, memory_mb: int = 1024,
            max_feedback_chars: int = 4096, max_file_mb: int = 64, output_limit_mb: int | None = None,
            max_output_bytes: int = 4096, progress=None) -> list[ExecutionResult]:
        """Run every program; results come back in input order.

        Args:
            programs: Source strings (run as-is; they pass if they finish without an exception) or
                ``Program`` objects (untrusted solution + trusted tests, verdict out of the
                program's reach).
            timeout: Wall-clock limit in seconds per program (also bounds its CPU time).
            memory_mb: Address-space cap per program.
            max_feedback_chars: Feedback longer than this keeps its head and tail, with a marker.
            max_file_mb: Largest file a program may write.
            output_limit_mb: Stop a program that writes more than this to stdout/stderr (default:
                never; output is drained and counted, and only ``max_output_bytes`` are kept).
            max_output_bytes: How much of that output is kept in ``ExecutionResult.output``.
            progress: Optional callable ``progress(done, total)`` called after each result.
        """
        if not timeout > 0:
            raise ValueError(f"`timeout` must be positive, got {timeout}")
        if memory_mb < 32:
            raise ValueError(f"`memory_mb` must be at least 32, got {memory_mb}")
        requests = []
        for i, program in enumerate(programs):
            if isinstance(program, str):
                program = Program(solution=program)
            elif not isinstance(program, Program):
                raise TypeError(f"programs[{i}] must be a str or a Program, got {type(program).__name__}")
            requests.append({
                "solution": program.solution, "tests": program.tests, "prelude": program.prelude,
                "entry_points": list(program.entry_points), "modules": [list(m) for m in program.modules],
                "timeout": float(timeout),
                "memory_mb": int(memory_mb), "max_feedback_chars": int(max_feedback_chars),
                "max_file_mb": int(max_file_mb), "output_limit_mb": int(output_limit_mb or 0),
                "max_output_bytes": int(max_output_bytes),
            })
        with self._lock:
            self._ensure_started()
            return self._dispatch(requests, timeout, progress)

    def _dispatch(self, requests: list[dict], timeout: float, progress) -> list[ExecutionResult]:
        """Feed the workers, keeping a second (small) request queued behind the running one.

        The queued request hides the round trip through this process: a worker starts its next
        program the moment it sends a result. Large requests are not queued, so that a full pipe
        can never block this loop while other workers wait.
        """
        results: list[ExecutionResult | None] = [None] * len(requests)
        pending = deque(range(len(requests)))
        done = 0
        watchdog = timeout + 10.0  # the zygote enforces `timeout`; this only catches a wedged worker

        def fail_head(worker: _Worker, message: str) -> None:
            nonlocal done
            results[worker.inflight.popleft()] = ExecutionResult("sandbox_error", f"SandboxError: {message}\n")
            done += 1
            pending.extendleft(reversed(worker.inflight))  # queued, never started: run them elsewhere
            worker.inflight.clear()
            self._replace(worker)

        while done < len(requests):
            now = time.monotonic()
            for worker in self._workers:
                while pending and (not worker.inflight or (
                        len(worker.inflight) < 2 and _size(requests[pending[0]]) < _QUEUE_MAX_BYTES)):
                    index = pending.popleft()
                    self._next_id += 1
                    requests[index]["id"] = self._next_id
                    worker.send(requests[index])
                    if not worker.inflight:
                        worker.busy_until = now + watchdog
                    worker.inflight.append(index)
            busy = {w.fd_out: w for w in self._workers if w.inflight}
            wait = max(0.0, min(w.busy_until for w in busy.values()) - time.monotonic())
            ready, _, _ = select.select(list(busy), [], [], wait)
            for fd in ready:
                worker = busy[fd]
                reply = _sandbox.recv_msg(fd)
                if reply is None:  # the worker died: replace it, blame the harness, not the program
                    fail_head(worker, "the worker process died")
                else:
                    results[worker.inflight.popleft()] = _to_result(reply)
                    worker.busy_until = time.monotonic() + watchdog
                    done += 1
                if progress is not None:
                    progress(done, len(requests))
            now = time.monotonic()
            for worker in list(busy.values()):
                if worker.inflight and now > worker.busy_until and worker.fd_out not in ready:
                    fail_head(worker, "the worker stopped answering and was restarted")
        return results  # type: ignore[return-value]

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(worker.config, self.python)


_QUEUE_MAX_BYTES = 16384


def _size(request: dict) -> int:
    return len(request["solution"]) + len(request["tests"]) + len(request["prelude"])


def _to_result(reply: dict) -> ExecutionResult:
    fields = ExecutionResult.__dataclass_fields__
    return ExecutionResult(**{k: v for k, v in reply.items() if k in fields})


# ----------------------------------------------------------------------------------------------
# Module-level convenience: one shared pool per (workers, options) in this process.
# ----------------------------------------------------------------------------------------------

_pools: dict[int, ExecutorPool] = {}
_pools_lock = threading.Lock()


def get_pool(workers: int | None = None) -> ExecutorPool:
    """The process-wide pool with ``workers`` workers (default: one per core), created on first use."""
    key = workers or default_workers()
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ExecutorPool(key)
        return pool


@atexit.register
def _close_pools() -> None:
    for pool in list(_pools.values()):
        pool.close()


def execute(program: str | Program, *, timeout: float = 5.0, memory_mb: int = 1024, **options) -> ExecutionResult:
    """Run one untrusted program in the sandbox and report what happened.

    Raising, looping forever, exhausting memory, exiting early or flooding stdout all become an
    ``ExecutionResult``; only caller mistakes raise (``ValueError`` for a non-positive ``timeout``,
    ``TypeError`` for a program that is not a ``str`` or ``Program``).

    >>> execute("assert 1 + 1 == 3").status
    'failed'
    """
    return get_pool().run([program], timeout=timeout, memory_mb=memory_mb, **options)[0]


def execute_many(programs: Iterable[str | Program], *, workers: int | None = None, timeout: float = 5.0,
                 memory_mb: int = 1024, **options) -> list[ExecutionResult]:
    """Run many programs in parallel (``workers`` at a time, default one per core), in input order."""
    return get_pool(workers).run(list(programs), timeout=timeout, memory_mb=memory_mb, **options)


def sandbox_report(workers: int | None = None) -> dict:
    """Which isolation the executor applies on this host, and notes on anything the kernel refused."""
    return get_pool(workers).protections()
