"""The caller's side of the executor: a pool of sandbox workers, and ``execute``/``execute_many``.

One file (about 500 lines) because it is one object's life: starting a worker slot, feeding it requests,
reading results and timeouts off its pipes, restarting it after a crash, and reporting which protections
it got. The parts share the slot's state and locks, and read best in one place."""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import os
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .limits import ExecutionLimits
from .program import Program
from .result import ExecutionResult
from .sandbox import protocol

_WORKER_DIR = str(Path(protocol.__file__).resolve().parent)  # run as `python -I <dir>`
_SHOWN_SYSTEM_TREES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")  # sandbox/filesystem.py's SYSTEM_DIRS
_DISABLE_CHOICES = {"pidns", "netns", "mountns", "ipcns", "userns", "cgroup", "setuid", "seccomp", "landlock"}
# What the full mode gives; anything missing is reported (and refused under strict=True).
_EXPECTED = ("pid_namespace", "network_namespace", "mount_namespace", "minimal_root", "private_tmp",
             "unprivileged_uid", "signal_isolation", "seccomp", "cgroup_pids", "cgroup_memory")
_HOW_TO_ENABLE = (
    "Enable one of them: unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu "
    "24.04 also kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile allowing userns), or "
    "Landlock (Linux >= 5.13 with 'landlock' in the lsm= boot parameter); in Docker, run with a seccomp "
    "profile that allows unshare/clone namespaces (or --security-opt seccomp=unconfined) or as rootless "
    "Docker/Podman. To run programs with no isolation anyway (never on a machine holding credentials), pass "
    "ExecutorPool(allow_unconfined=True) or set LETI_SANDBOX=unconfined."
)


def _caller_outside_leti() -> int:
    """``stacklevel`` for a warning raised by the caller of this function: the first frame outside leti's
    packages, so the warning names the user's line (their ``ExecutorPool``, ``gym.make`` or trainer)."""
    packages = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
                os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "trainers") + os.sep)
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(packages):
        frame, level = frame.f_back, level + 1
    return level


class SandboxWarning(UserWarning):
    """The kernel refused a protection the executor would normally apply."""


class SandboxUnavailableError(RuntimeError):
    """The host cannot isolate programs (or lacks what ``strict=True`` requires)."""


def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return []


def local_cpu_share() -> list[int] | None:
    """This process's share of the machine's cores when a launcher (``accelerate``, ``torchrun``)
    started several processes here (``LOCAL_WORLD_SIZE``, ``LOCAL_RANK``); None for a single process.

    Each local rank gets a contiguous, disjoint block of the cores it may use. A launcher that
    already bound each rank to its own cores (this process may use fewer than the launcher, its
    parent) is left as it is; a container's cpuset alone is not such a binding.
    """
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local <= 1:
        return None
    cpus = _usable_cpus()
    try:
        launcher = set(os.sched_getaffinity(os.getppid()))
    except (AttributeError, OSError):
        launcher = set(cpus)
    if not cpus or set(cpus) < launcher or len(cpus) < local:
        return cpus or None
    rank = int(os.environ.get("LOCAL_RANK", "0") or 0) % local
    per = len(cpus) // local
    return cpus[rank * per:(rank + 1) * per]


def _folders_to_hide(folders: list[str], python: str) -> list[str]:
    """Which of the caller's folders (working directory, home) the worker must be told to hide.

    Only those inside a tree the sandbox shows programs: a system tree Python needs (``/usr``, ``/lib``,
    ...: Docker's ``/usr/src/app``), or this interpreter's installation. Any other folder is not in the
    programs' view, and its name is not sent: programs are forked from the worker, so whatever the
    worker holds, a program can read in its own memory. ``/root`` and ``/home`` are hidden always.
    """
    own = python == sys.executable
    prefixes = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    out = []
    for folder in folders:
        folder = os.path.normpath(os.path.abspath(folder))
        inside = [f"/{d}" for d in _SHOWN_SYSTEM_TREES] + (sorted(prefixes) if own else [])
        if folder != "/" and (not own or any(folder.startswith(t.rstrip("/") + "/") for t in inside)):
            out.append(folder)
    return sorted(set(out))


def default_workers() -> int:
    """One worker per usable core: more would turn wall-clock limits into flaky timeouts."""
    return max(1, len(_usable_cpus()) or os.cpu_count() or 1)


class _Worker:
    def __init__(self, config: dict, python: str):
        self.config = config
        env = dict(protocol.SAFE_ENV)  # the worker never sees the caller's environment (secrets)
        self.proc = subprocess.Popen(
            [python, "-I", _WORKER_DIR],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env, cwd="/",
            close_fds=True, start_new_session=True, bufsize=0,
        )
        self.fd_in, self.fd_out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        protocol.send_msg(self.fd_in, config)  # not argv: programs could read that in /proc
        ready, _, _ = select.select([self.fd_out], [], [], 60)
        hello = protocol.recv_msg(self.fd_out) if ready else None
        if not hello or hello.get("event") != "ready":
            self.cgroup_paths: list[str] = []
            self.kill()
            raise RuntimeError(f"the sandbox worker did not start (exit code {self.proc.poll()}); see stderr above")
        self.protections: dict = hello["protections"]
        self.cgroup_paths = list(hello.get("cgroup_paths", ()))
        self.busy_until = 0.0
        self.inflight: deque[int] = deque()  # request indices sent, oldest (running) first

    def send(self, request: dict) -> None:
        protocol.send_msg(self.fd_in, request)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # launcher and zygote (namespace init) share a group
        except OSError:
            pass
        self.proc.wait()
        _remove_cgroups(self.cgroup_paths)  # the launcher died before it could
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

    Threads may share one pool: each ``run`` takes the idle workers it can use (at least one, waiting
    for one if every worker is busy) and hands each back as soon as it has nothing left to run, so the
    sessions of a server, or the reward functions of a threaded trainer, run side by side on it.

    Args:
        workers: Number of parallel workers (default: the number of usable cores).
        memory_mb: Memory cap of each worker's cgroup is sized from this (per-run caps are set per
            call with ``memory_mb=`` on ``run``).
        pids_max: Most processes one program may have at once (cgroup pids limit, or RLIMIT_NPROC).
        strict: Refuse to run (``SandboxUnavailableError``) unless every protection of the full
            mode is in place, instead of warning once. Also ``LETI_SANDBOX=strict``. Whatever this
            says, a host that can isolate programs neither with namespaces nor with Landlock is
            refused, unless ``allow_unconfined``.
        allow_unconfined: Run programs even where nothing isolates them (as the calling user, seeing
            its files and network). Never on a machine that holds credentials. Also
            ``LETI_SANDBOX=unconfined``. Warns on every start.
        disable: Protections to switch off, for testing weaker hosts: any of ``pidns netns mountns
            ipcns userns cgroup setuid seccomp landlock`` (``mountns`` also drops the PID namespace,
            which needs a /proc of its own). Also read from ``LETI_SANDBOX_DISABLE`` (comma-separated).
        python: Interpreter that runs the programs (default: this one).
        tmpfs_mb: Size of each slot's private ``/tmp`` (what programs may write in all). Where
            namespaces are refused, the run's folder is on the host's disk: the zygote reads its size
            every 50 ms and stops the run past this (a program sees ENOSPC on a tmpfs; here the run ends
            with that error), so a run holds at most this plus what it writes in 50 ms.
        tmpfs_inodes: Files and folders a run may create in all, held the same two ways.
        pin_cpus: Pin worker ``i`` to the ``i``-th usable core when there are at least as many cores
            as workers (faster calls between the solution and verifier processes, steadier timing).
        cpus: The cores this pool's workers may use (default: every core this process may use).
            Several processes on one machine (the ranks of a data-parallel run) each pass their own
            share, or their workers would all pin themselves to the same first cores.
    """

    def __init__(self, workers: int | None = None, *, memory_mb: int = 1024, pids_max: int = 128,
                 strict: bool | None = None, disable: Iterable[str] = (), python: str | None = None,
                 tmpfs_mb: int = 256, tmpfs_inodes: int = 16384, pin_cpus: bool = True,
                 allow_unconfined: bool | None = None, cpus: Sequence[int] | None = None):
        disable = set(disable) | {d for d in os.environ.get("LETI_SANDBOX_DISABLE", "").split(",") if d}
        unknown = disable - _DISABLE_CHOICES
        if unknown:
            raise ValueError(f"unknown protections to disable: {sorted(unknown)}; choose from {sorted(_DISABLE_CHOICES)}")
        if workers is not None and workers < 1:
            raise ValueError(f"`workers` must be at least 1, got {workers}")
        if cpus is not None:
            cpus = sorted({int(c) for c in cpus})
            usable = _usable_cpus()
            if not cpus or (usable and not set(cpus) <= set(usable)):
                raise ValueError(f"`cpus` must be a non-empty subset of this process's cores {usable}, got {cpus}")
        self.cpus = cpus
        self.num_workers = workers or (len(cpus) if cpus else default_workers())
        setting = os.environ.get("LETI_SANDBOX", "")
        if setting not in ("", "strict", "unconfined"):
            raise ValueError(f"LETI_SANDBOX={setting!r} is not a setting; use 'strict', 'unconfined' or leave it unset")
        self.strict = strict if strict is not None else setting == "strict"
        self.allow_unconfined = allow_unconfined if allow_unconfined is not None else setting == "unconfined"
        self.python = python or sys.executable
        self.pin_cpus = pin_cpus
        self.config = {"disable": sorted(disable), "memory_mb": memory_mb, "pids_max": pids_max, "tmpfs_mb": tmpfs_mb,
                       "tmpfs_inodes": tmpfs_inodes, "hide": _folders_to_hide([os.getcwd(), os.path.expanduser("~")], self.python)}
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []  # started workers no call is using
        self._lock = threading.Condition()  # guards _workers and _idle; notified when a worker is handed back
        self._owner_pid = os.getpid()
        self._warned = self._warned_unconfined = False
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if os.getpid() != self._owner_pid:  # we were forked: the workers belong to the parent
            self._workers, self._idle, self._owner_pid = [], [], os.getpid()
        while len(self._workers) < self.num_workers:
            worker = _Worker(self._worker_config(len(self._workers)), self.python)
            self._workers.append(worker)
            self._idle.append(worker)
            self._check_protections(worker.protections)

    def _acquire(self, wanted: int) -> list[_Worker]:
        """Up to ``wanted`` idle workers (at least one: waits for a concurrent call to hand one back)."""
        with self._lock:
            self._ensure_started()
            while not self._idle:
                self._lock.wait()
                self._ensure_started()  # a concurrent close() may have stopped them
            taken, self._idle = self._idle[:wanted], self._idle[wanted:]
            return taken

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            ours = worker in self._workers
            if ours and worker not in self._idle:
                self._idle.append(worker)
            self._lock.notify_all()
        if not ours:  # the pool was closed while this call ran (and may have restarted this slot): stop it
            worker.close()

    def _worker_config(self, index: int) -> dict:
        cpus = self.cpus or _usable_cpus()
        # Given cores are a promise to stay on them (other processes use the rest): pin even when
        # there are more workers than cores.
        pin = self.pin_cpus and cpus and (len(cpus) >= self.num_workers or self.cpus is not None)
        return {**self.config, "cpu": cpus[index % len(cpus)] if pin else None}

    def _check_protections(self, protections: dict) -> None:
        notes = "; ".join(protections.get("notes", []))
        if protections.get("mode") == "unconfined" and not self.allow_unconfined:
            self.close()
            raise SandboxUnavailableError(
                f"this host cannot isolate generated programs: no namespaces and no Landlock ({notes}). "
                + _HOW_TO_ENABLE)
        if protections.get("python_unreadable"):
            self.close()
            raise SandboxUnavailableError(
                f"uid nobody cannot read this Python ({protections['python_unreadable']}), and without a minimal "
                "root (namespaces are refused here) programs would need a capability to run it: use a Python "
                "outside /root (ExecutorPool(python='/usr/bin/python3'), or a venv made from one), or let other "
                "users reach it (chmod o+x on the folders above it, e.g. /root).")
        missing = [p for p in _EXPECTED if not protections.get(p)]
        if missing and self.strict:
            self.close()
            raise SandboxUnavailableError(
                f"the sandbox lacks {', '.join(missing)} on this host ({notes}). "
                "Run as root or enable unprivileged user namespaces, or drop strict mode.")
        if protections.get("mode") == "unconfined" and not self._warned_unconfined:
            self._warned_unconfined = True
            warnings.warn("leti sandbox is UNCONFINED (allow_unconfined): generated programs run as you, with "
                          "your files and network. Never do this on a machine that holds credentials.",
                          SandboxWarning, stacklevel=_caller_outside_leti())
        elif missing and not self._warned:
            self._warned = True
            warnings.warn(
                f"leti sandbox runs in {protections.get('mode')} mode, without: {', '.join(missing)}"
                + (f" ({notes})" if notes else "") + ". See `python -m leti_env sandbox`.",
                SandboxWarning, stacklevel=_caller_outside_leti(),
            )

    def capacity(self) -> dict[str, int]:
        """``{"workers": N, "free": M}``: this pool's size, and how many of its workers no call is using now
        (all of them before the first call starts them). What ``leti serve`` reports to a client that shares
        a batch over several servers."""
        with self._lock:
            started = os.getpid() == self._owner_pid and bool(self._workers)
            return {"workers": self.num_workers, "free": len(self._idle) if started else self.num_workers}

    def protections(self) -> dict:
        """Which protections the workers actually applied (starts the workers if needed)."""
        with self._lock:
            self._ensure_started()
            return dict(self._workers[0].protections)

    def harness_pids(self) -> list[int]:
        """Host pids of the workers' launchers, zygotes and verifiers (for probes and leak checks)."""
        pids: list[int] = []
        for worker in self._workers:
            pids.append(worker.proc.pid)
            pids += _descendants(worker.proc.pid)
        return pids

    def close(self) -> None:
        """Stop the workers. The pool restarts them if used again. A worker a concurrent ``run`` is using
        stops when that call hands it back (its pipes belong to that thread until then)."""
        self._warned_unconfined = False  # a restart of an unconfined pool warns again
        with self._lock:
            idle, self._workers, self._idle = self._idle, [], []
            self._lock.notify_all()
        for worker in idle:
            worker.close()

    def __enter__(self) -> ExecutorPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running ---------------------------------------------------------------------------

    def run(self, programs: Sequence[str | Program], limits: ExecutionLimits | None = None, *, progress=None,
            on_result: Callable[[int, ExecutionResult], None] | None = None, stop: threading.Event | None = None,
            **overrides: Any) -> list[ExecutionResult]:
        """Run every program; results come back in input order.

        Args:
            programs: Source strings (run as-is; they pass if they finish without an exception) or
                ``Program`` objects (untrusted solution + trusted tests, verdict out of the
                program's reach).
            limits: What each program may use (default: ``ExecutionLimits()``).
            progress: Optional callable ``progress(done, total)`` called after each result.
            on_result: Optional callable ``on_result(index, result)`` called as each program's result
                arrives, in the order they finish (``leti serve`` streams them to its client this way).
            stop: Optional event: once set, no further program is started; those already running finish
                (and reach ``on_result``), and every program never started is ``None`` in the returned list.
                A server sets it when its client hangs up.
            overrides: Limits to change for this call, by name (``timeout=1.0``): ``limits.override(...)``.
        """
        limits = (limits if limits is not None else ExecutionLimits()).override(**overrides)
        fields = dataclasses.asdict(limits)
        requests = []
        for i, program in enumerate(programs):
            if isinstance(program, str):
                program = Program(solution=program)
            elif not isinstance(program, Program):
                raise TypeError(f"programs[{i}] must be a str or a Program, got {type(program).__name__}")
            requests.append(protocol.program_request(
                {"solution": program.solution, "tests": program.tests, "prelude": program.prelude,
                 "entry_points": list(program.entry_points), "modules": [list(m) for m in program.modules]},
                fields))
        if not requests:
            return []
        workers = self._acquire(len(requests))
        try:
            return self._dispatch(requests, limits.timeout, progress, workers, on_result, stop)
        finally:
            for worker in workers:
                self._release(worker)

    def _dispatch(self, requests: list[dict], timeout: float, progress, workers: list[_Worker], on_result=None,
                  stop: threading.Event | None = None) -> list[ExecutionResult]:
        """Feed this call's workers, keeping a second (small) request queued behind the running one.

        The queued request hides the round trip through this process: a worker starts its next
        program the moment it sends a result. Large requests are not queued, so that a full pipe
        can never block this loop while other workers wait. A worker with nothing left to do is handed
        back at once, so a concurrent call (another thread: a server's sessions, a threaded reward)
        can use it while this call waits for its last programs.
        """
        results: list[ExecutionResult | None] = [None] * len(requests)
        pending = deque(range(len(requests)))
        done = 0
        watchdog = timeout + 10.0  # the zygote enforces `timeout`; this only catches a wedged worker

        def finish(index: int, result: ExecutionResult) -> None:
            nonlocal done
            results[index] = result
            done += 1
            if on_result is not None:
                on_result(index, result)

        def fail_head(worker: _Worker, message: str) -> None:
            finish(worker.inflight.popleft(), ExecutionResult("sandbox_error", f"SandboxError: {message}\n"))
            pending.extendleft(reversed(worker.inflight))  # queued, never started: run them elsewhere
            worker.inflight.clear()
            workers[workers.index(worker)] = self._replace(worker)

        while pending or any(w.inflight for w in workers):
            if stop is not None and stop.is_set():
                pending.clear()  # never started: left None; what runs now finishes (its worker stays in step)
                if not any(w.inflight for w in workers):
                    break
            now = time.monotonic()
            for worker in workers:
                while pending and (not worker.inflight or (
                        len(worker.inflight) < 2 and _size(requests[pending[0]]) < _QUEUE_MAX_BYTES)):
                    index = pending.popleft()
                    requests[index]["id"] = next(self._ids)
                    worker.send(requests[index])
                    if not worker.inflight:
                        worker.busy_until = now + watchdog
                    worker.inflight.append(index)
            if not pending:  # nothing left to start: hand idle workers back now
                for worker in [w for w in workers if not w.inflight]:
                    workers.remove(worker)
                    self._release(worker)
            busy = {w.fd_out: w for w in workers if w.inflight}
            wait = max(0.0, min(w.busy_until for w in busy.values()) - time.monotonic())
            ready, _, _ = select.select(list(busy), [], [], wait)
            for fd in ready:
                worker = busy[fd]
                reply = protocol.recv_msg(fd)
                if reply is None:  # the worker died: replace it, blame the harness, not the program
                    fail_head(worker, "the worker process died")
                elif reply.get("id") != requests[worker.inflight[0]].get("id"):
                    fail_head(worker, "the worker answered out of turn and was restarted")
                else:
                    finish(worker.inflight.popleft(), _to_result(reply))
                    worker.busy_until = time.monotonic() + watchdog
                    if reply.get("restart"):  # its cleanup failed: a fresh slot, queued work elsewhere
                        pending.extendleft(reversed(worker.inflight))
                        worker.inflight.clear()
                        workers[workers.index(worker)] = self._replace(worker)
                if progress is not None:
                    progress(done, len(requests))
            now = time.monotonic()
            for worker in list(busy.values()):
                if worker.inflight and now > worker.busy_until and worker.fd_out not in ready:
                    fail_head(worker, "the worker stopped answering and was restarted")
        return results  # type: ignore[return-value]

    def _replace(self, worker: _Worker) -> _Worker:
        """Kill ``worker`` and start a fresh slot in its place (the calling ``run`` keeps using it)."""
        worker.kill()
        fresh = _Worker(worker.config, self.python)
        with self._lock:
            if worker in self._workers:  # else the pool was closed meanwhile: the fresh one is this call's
                self._workers[self._workers.index(worker)] = fresh
        self._check_protections(fresh.protections)  # a restarted slot must be as confined as the first
        return fresh


_QUEUE_MAX_BYTES = 16384


def _descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` on this host (from /proc parent links)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found: list[int] = []
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - set(found)
        found += sorted(frontier)
    return found


def _remove_cgroups(paths: list[str]) -> None:
    """After SIGKILLing a worker: kill what is left in its cgroups (daemons its programs started
    outside a PID namespace), then remove them."""
    if paths:
        from .sandbox import cgroups

        cgroups.kill_paths(paths)
        cgroups.remove_paths(paths)


def _size(request: dict) -> int:
    return len(request["solution"]) + len(request["tests"]) + len(request["prelude"])


def _to_result(reply: dict) -> ExecutionResult:
    fields = ExecutionResult.__dataclass_fields__
    return ExecutionResult(**{k: v for k, v in reply.items() if k in fields})


# ----------------------------------------------------------------------------------------------
# Module-level convenience: one shared pool per (workers, options) in this process.
# ----------------------------------------------------------------------------------------------

_pools: dict[tuple[int, tuple[int, ...] | None], ExecutorPool] = {}
_pools_lock = threading.Lock()


def get_pool(workers: int | None = None, cpus: Sequence[int] | None = None) -> ExecutorPool:
    """The process-wide pool with ``workers`` workers on ``cpus`` (default: one per core, every core),
    created on first use."""
    cpus = sorted(set(cpus)) if cpus else None
    key = (workers or (len(cpus) if cpus else default_workers()), tuple(cpus) if cpus else None)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ExecutorPool(key[0], cpus=cpus)
        return pool


@atexit.register
def _close_pools() -> None:
    for pool in list(_pools.values()):
        pool.close()


def execute(program: str | Program, limits: ExecutionLimits | None = None, **overrides: Any) -> ExecutionResult:
    """Run one untrusted program in the sandbox and report what happened.

    ``limits`` (default: ``ExecutionLimits()``) with any ``overrides`` by name: ``execute(p, timeout=1.0)``.
    Raising, looping forever, exhausting memory, exiting early or flooding stdout all become an
    ``ExecutionResult``; only caller mistakes raise (``ValueError`` for a non-positive ``timeout``,
    ``TypeError`` for a program that is not a ``str`` or ``Program``, or a limit that does not exist).

    >>> execute("assert 1 + 1 == 3").status
    'failed'
    """
    return get_pool().run([program], limits, **overrides)[0]


def execute_many(programs: Iterable[str | Program], limits: ExecutionLimits | None = None, *,
                 workers: int | None = None, **overrides: Any) -> list[ExecutionResult]:
    """Run many programs in parallel (``workers`` at a time, default one per core), in input order; ``limits``
    and ``overrides`` as in ``execute``."""
    return get_pool(workers).run(list(programs), limits, **overrides)


# What each protection means, in the order `python -m leti_env sandbox` prints them.
PROTECTIONS = (
    ("mode", "namespaces (full), landlock (namespaces refused) or unconfined (refused unless allowed)"),
    ("minimal_root", "programs see a new root: /usr, /lib*, /bin, Python, a few /etc files; no /home, /root, cwd"),
    ("minimal_dev", "/dev holds only null zero full random urandom tty and a private devpts"),
    ("private_proc", "/proc of the slot's own PID namespace; /proc/sys and friends read-only, kcore/keys/kmsg masked"),
    ("private_tmp", "a fresh tmpfs on /tmp for every run, removed by one unmount"),
    ("unprivileged_uid", "programs never run as uid 0 of the host"),
    ("separate_verifier_uid", "the program and its verifier run under different uids"),
    ("signal_isolation", "the program cannot signal its zygote or verifier (by uid, or by Landlock's scope)"),
    ("seccomp", "namespaces, mounts, keyrings, bpf, perf, userfaultfd, io_uring, ptrace, modules refused"),
    ("landlock_filesystem", "Landlock: only the files above are readable, only the run's tmp is writable"),
    ("landlock_network", "Landlock: no TCP bind or connect (ABI >= 4)"),
    ("landlock_signals", "Landlock: no signals or abstract sockets outside the program's domain (ABI >= 6)"),
    ("pid_namespace", "own PID namespace: the host's processes are invisible; the run dies as a whole"),
    ("network_namespace", "own network namespace: no network at all"),
    ("ipc_namespace", "own IPC and UTS namespaces"),
    ("per_run_ipc_namespace", "a new IPC namespace per run: SysV objects die with the run"),
    ("user_namespace", "rootless: a user namespace gives the worker its namespaces"),
    ("session_keyring", "the worker left the caller's session keyring for a new one"),
    ("cgroup_pids", "a pids limit per slot (fork bombs stop at pids_max)"),
    ("cgroup_memory", "a memory limit per slot, with an OOM counter"),
    ("memory_watch", "no memory cgroup: the run's processes' memory read every 50 ms, the run stopped past the cap"),
    ("folder_watch", "no private tmpfs: the run's folder read every 50 ms, the run stopped past tmpfs_mb or tmpfs_inodes"),
    ("process_tree_kill", "how every process of a run is killed"),
)


def sandbox_report(workers: int | None = None, *, self_test: bool = False) -> dict:
    """Which isolation the executor applies on this host, and notes on anything the kernel refused.

    With ``self_test=True`` it also runs the safe probes of ``leti_env.execution.selftest`` (one per
    attack class: host files, kernel settings, devices, namespaces, keyrings, signals, IPC, forged
    verdicts, cleanup, free names) and adds their outcomes under ``"self_test"``.
    """
    pool = get_pool(workers)
    report = pool.protections()
    if self_test:
        from .selftest import run_self_test

        report["self_test"] = run_self_test(pool, harness_pids=pool.harness_pids())
    return report
