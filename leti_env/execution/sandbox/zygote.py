"""The zygote: sets a slot up once, then forks a solution process and (when needed) a verifier per run.

One file (about 500 lines) on purpose: the order of every step between fork and exec (mounts, uid
changes, capabilities, seccomp, Landlock) is the security argument, and it has to be read in one place.

Process tree of one worker slot::

    caller (ExecutorPool)            pipes: requests in, results out
      └─ launcher (__main__)         cgroups, new session keyring, user/PID/net/IPC namespaces; cleans up
           └─ zygote                 PID 1 of the slot's PID namespace; own mount namespace, minimal root
                ├─ solution process  uid nobody; runs ONLY the untrusted program, answers RPC calls
                └─ verifier process  another uid; runs the trusted tests, asks the solution by RPC

Both children leave with no capabilities, ``no_new_privs``, a seccomp deny-list and (where the
kernel has it) a Landlock domain; the solution also gets its own IPC namespace and a fresh ``/tmp``
each run. After each run every process of the run is killed, and the run's tmpfs is unmounted; any
cleanup error makes the slot restart rather than serve a dirty next run.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import select
import signal
import socket
import sys
import time

import codec
import spawner
from confine import Confinement
from feedback import truncate
from filesystem import RUN_DIR, RootView
from kernel import (
    CLONE_NEWCGROUP, CLONE_NEWNS, PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE, pidfd_open, prctl, resolve_symbols, set_process_name,
    unshare,
)
from process import NOBODY, _poll_status, _reap, classify, remove_tree, tree_usage
from protocol import SAFE_ENV, SOLUTION_KEYS, VERIFIER_KEYS, MessageReader, part, send_msg
from verifier import Verifier

# Modules imported once in the zygote, so that a forked program finds them warm.
PRELOAD = (
    "abc array bisect cmath collections collections.abc copy dataclasses datetime decimal enum "
    "fractions functools hashlib heapq itertools json math numbers operator random re statistics "
    "string textwrap typing unicodedata"
).split()
_HARNESS_STDERR: int | None = None  # the launcher's stderr, kept for harness bug reports



class _Output:
    """A run's stdout and stderr (one pipe): counted in full, only the first ``keep`` bytes kept."""

    def __init__(self, fd: int, keep: int, limit_mb: float | None):
        self.fd, self.keep, self.limit = fd, keep, (limit_mb * 2**20 if limit_mb else 0)
        self.head = bytearray()
        self.total = 0
        self.open = True  # until end of file
        self.exceeded = False  # wrote more than the output limit

    def read(self) -> None:
        """One read (the pipe is ready)."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            self.open = False
        self.total += len(chunk)
        if len(self.head) < self.keep:
            self.head += chunk[: self.keep - len(self.head)]
        if self.limit and self.total > self.limit:
            self.exceeded = True

    def drain(self) -> None:
        """What is in the pipe already, without waiting, while the head has room."""
        while self.open and len(self.head) < self.keep:
            if not select.select([self.fd], [], [], 0)[0]:
                break
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                break
            self.total += len(chunk)
            self.head += chunk[: self.keep - len(self.head)]


class Zygote:
    def __init__(self, config: dict, protections: dict, cgroups):
        self.config = config
        self.protections = protections
        self.notes = protections["notes"]
        self.cgroups = cgroups
        self.disabled = set(config.get("disable", ()))
        self.pid_namespace = protections.get("pid_namespace", False) and os.getpid() == 1
        self.user_namespace = protections.get("user_namespace", False)
        self.real_root = os.geteuid() == 0 and not self.user_namespace
        self.privileged = self.real_root or self.user_namespace  # full capabilities here: may mount
        self.devnull = os.open("/dev/null", os.O_RDWR)
        set_process_name("leti-zygote")
        if cgroups is not None:
            cgroups.join_run()  # before the filesystem view changes
            cgroups.keep_open()
        self.broken = False
        self._set_up_view()
        self.scan_proc = self.pid_namespace and self._proc_is_ours()
        self.confine = Confinement(self)
        self.confine.harness_stderr = _HARNESS_STDERR
        self.solution_uid = self.confine.solution_uid
        protections.update(
            minimal_root=self.view is not None, readonly_root=self.view is not None,
            private_proc=bool(self.view and self.view.proc), minimal_dev=self.view is not None,
            private_tmp=self.view is not None, per_run_ipc_namespace=self.confine.per_run_ipc,
            capabilities_dropped=True, rlimits=True, scrubbed_env=True,
        )
        self.verifier_pid: int | None = None
        self.control: socket.socket | None = None
        self.control_reader: MessageReader | None = None
        self.verifier_runs = 0
        self._rules_cache = None
        self._seal(protections)

    def _set_up_view(self) -> None:
        """The filesystem the children see: a minimal root with a private /proc and /tmp where this
        process may mount, else the host's with a temporary folder for the runs."""
        # Programs see their own cgroup as "/", not the host's container path. Only where the
        # launcher is another process: it removes the cgroups, which a process inside this cgroup
        # namespace could not leave.
        if self.privileged and self.pid_namespace:
            try:
                unshare(CLONE_NEWCGROUP)
            except OSError:
                pass
        # Our own view of processes: the host's /proc (kept open) unless we get our PID namespace's.
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.view: RootView | None = None
        self.tmp_root = "/tmp"
        if "mountns" not in self.disabled and self.privileged:
            self._build_view()
        if self.view is None:
            import tempfile

            self.tmp_root = tempfile.mkdtemp(prefix=f"leti-sandbox-{os.getpid()}-")  # swept once we are dead
            os.chmod(self.tmp_root, 0o711)  # programs (another uid, no capability) pass through to run/ only
        elif self.view.proc:
            os.close(self.proc_fd)
            self.proc_fd = (self.view.harness_proc_fd if self.view.harness_proc_fd is not None
                            else os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))

    def _seal(self, protections: dict) -> None:
        """Last steps before serving: not dumpable, how a run's processes are killed, a scrubbed
        environment, the modules programs may import preloaded, and the spawner started."""
        prctl(PR_SET_DUMPABLE, 0)  # programs cannot ptrace or read the zygote
        if self.pid_namespace:
            protections["process_tree_kill"] = "pid_namespace"
        elif prctl(PR_SET_CHILD_SUBREAPER, 1) == 0:
            protections["process_tree_kill"] = "subreaper" + ("+cgroup" if self.cgroups else "")
        else:
            protections["process_tree_kill"] = "process_group"
        self.confine.nproc_limit = self._processes_of_uid(self.solution_uid) + int(self.config.get("pids_max", 128))
        os.environ.clear()
        os.environ.update(SAFE_ENV)
        run_dir = "/tmp/run" if self.view else os.path.join(self.tmp_root, "run")
        os.environ.update({"HOME": run_dir, "TMPDIR": run_dir})
        if "tempfile" in sys.modules:
            sys.modules["tempfile"].tempdir = None  # cached by our own mkdtemp: programs get TMPDIR
        resolve_symbols()
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
        codec.freeze_known_modules()  # the only modules the verifier will hand to the tests
        sys.path[:] = [p for p in sys.path if p != _HERE]  # nothing forked from here imports the harness
        _forget_where_the_harness_lives()
        gc.collect()
        gc.freeze()  # forked children then do not copy the zygote's heap on their first GC
        self._start_spawner()  # now, before any request: its memory never holds a test or a program
        self.watch_memory = self.cgroups is None
        self.protections["memory_watch"] = self.watch_memory  # the run's memory read every 50 ms (no memory cgroup)
        self.protections["folder_watch"] = self.view is None  # the run's folder read every 50 ms (no tmpfs of its own)
        self.base_pages = self._anonymous_pages(self.spawner_pid)

    def _start_spawner(self) -> None:
        def serve(theirs: socket.socket) -> None:
            set_process_name("leti-spawner")
            spawner.serve(theirs, self.confine, self._run_dir_path(), report_harness_bug)

        self.spawner_pid, self.spawner = _fork_server("spawner", serve, socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def _ask_spawner(self, command: bytes, fds: list[int] = ()) -> list[bytes]:
        try:
            if fds:
                socket.send_fds(self.spawner, [command], list(fds))
            else:
                self.spawner.send(command)
            reply = self.spawner.recv(256)
        except OSError:
            reply = b""
        if not reply:  # it died: never respawn it from this (no longer clean) process
            self.broken = True
            raise OSError("the slot's spawner process died")
        return reply.split()

    def _run_dir_path(self) -> str:
        """Where every run of this slot works (the same path each run; its contents are new)."""
        return RUN_DIR if self.view is not None else os.path.join(self.tmp_root, "run")

    # -- set-up -------------------------------------------------------------------------------

    def _build_view(self) -> None:
        try:
            unshare(CLONE_NEWNS)  # our own mount namespace: the launcher keeps the host's view
            view = RootView(self.config, self.notes, self.pid_namespace, NOBODY)
            view.build()
            self.view = view
        except OSError as exc:
            self.notes.append(f"no minimal root ({exc}); programs see the host's files, within Landlock's rules")

    # -- the verifier ---------------------------------------------------------------------------

    def _verifier_ready(self) -> bool:
        """Alive and not stopped (a stopped verifier would turn the next correct program into a timeout)."""
        if self.verifier_pid is None:
            return False
        if _poll_status(self.verifier_pid) is not None:  # died (and now reaped)
            self._drop_verifier(kill=False)
            return False
        try:
            fd = os.open(f"{self.verifier_pid}/stat", os.O_RDONLY, dir_fd=self.proc_fd)
            try:
                state = os.read(fd, 4096).rsplit(b")", 1)[1].split()[0]
            finally:
                os.close(fd)
        except (OSError, IndexError):
            return False
        return state not in (b"T", b"t", b"Z", b"X")

    def _spawn_verifier(self) -> None:
        def serve(theirs: socket.socket) -> None:
            limits = {"memory_mb": self.config.get("memory_mb", 1024), "max_file_mb": 1}
            self.confine.enter("verifier", [theirs.fileno()], self.devnull, "/", limits)
            Verifier(theirs).serve()

        self.verifier_pid, self.control = _fork_server("verifier", serve)
        self.control_reader = MessageReader(self.control.fileno())
        self.verifier_runs = 0

    def _drop_verifier(self, kill: bool = True) -> None:
        if self.verifier_pid is not None and kill:
            try:
                os.kill(self.verifier_pid, signal.SIGKILL)
            except OSError:
                pass
            _reap(self.verifier_pid)
        if self.control is not None:
            self.control.close()
        self.verifier_pid = self.control = self.control_reader = None

    # -- one run ------------------------------------------------------------------------------

    def _fresh_run_dir(self) -> str:
        if self.view is not None:
            return self.view.fresh_tmp(self.solution_uid, self.solution_uid)
        path = self._run_dir_path()
        os.mkdir(path, 0o700)
        if self.solution_uid != os.getuid():
            os.chown(path, self.solution_uid, self.solution_uid)
        return path

    def _clear_run_dir(self) -> bool:
        """Remove everything the run wrote; False if that failed (the slot then restarts)."""
        try:
            if self.view is not None:
                self.view.clear_tmp()
            else:
                remove_tree(os.path.join(self.tmp_root, "run"))
            return True
        except OSError as exc:
            self.notes.append(f"cleanup failed, slot restarts: {exc}")
            return False

    def run(self, request: dict) -> dict:
        start = time.monotonic()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        oom_before = self.cgroups.oom_kills() if self.cgroups else 0
        if self.verifier_runs >= self.config.get("verifier_max_runs", 2000) or not self._verifier_ready():
            self._drop_verifier()
            self._spawn_verifier()
        try:
            run_dir = self._fresh_run_dir()
        except OSError:
            self.broken = True
            raise
        u_pid, pidfd, out_r, verifier_ok = self._start_run(request, run_dir)
        output = _Output(out_r, request["max_output_bytes"], request["output_limit_mb"])
        verdict, timed_out, over = self._await_verdict(output, start + request["timeout"], verifier_ok)
        u_status, u_cpu = self._end_run(u_pid, pidfd, verdict, output)
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        oom = over == "memory" or (self.cgroups is not None and self.cgroups.oom_kills() > oom_before)
        disk = (self.config.get("tmpfs_mb", 256), self.config.get("tmpfs_inodes", 16384)) if over == "disk" else None
        result = classify(request, verdict, u_status, timed_out, output.exceeded, oom, disk)
        result.update(
            duration_s=time.monotonic() - start,
            cpu_s=u_cpu + (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime),
            output=bytes(output.head).decode("utf-8", "replace"),
            output_bytes=output.total,
        )
        # the one cut of the feedback: its parts reached here clipped, and `omitted` counts what they left out
        omitted = verdict.get("omitted", 0) if verdict is not None and verdict.get("kind") == "exception" else 0
        result["feedback"] = truncate(result["feedback"], request["max_feedback_chars"], omitted)
        return result

    def _start_run(self, request: dict, run_dir: str) -> tuple[int, int | None, int, bool]:
        """Fork the solution process (it reads its program, never its tests, from a pipe) and hand the
        verifier its end of their socket and the tests. Returns the solution's pid and pidfd, the read
        end of its output pipe, and whether the verifier took the run."""
        # This run's tmpfs (namespaces) or run directory (Landlock only) is new: so is its ruleset
        # (a tmpfs handed on untouched from the last run keeps the last one).
        per_run_rules = self._program_rules(run_dir)
        out_r, out_w = os.pipe()
        program_r, program_w = os.pipe()
        sock_u, sock_v = socket.socketpair()
        chan_u = sock_u.detach()
        fds = [chan_u, out_w, program_r] + ([per_run_rules.fd] if per_run_rules is not None else [])
        try:
            u_pid = int(self._ask_spawner(spawner.FORK, fds)[0])
            if u_pid <= 0:
                raise OSError(f"could not start the program: {os.strerror(-u_pid)}")
        finally:
            for fd in fds[:3]:
                os.close(fd)
        try:  # the solution process reads its own program (never its tests) from this pipe
            with open(program_w, "wb") as pipe:
                pipe.write(json.dumps(part(request, SOLUTION_KEYS)).encode())
        except OSError:
            pass  # it died before reading: the run ends as a sandbox error below
        pidfd = pidfd_open(u_pid)
        fds = [sock_v.fileno()] + ([pidfd] if pidfd is not None else [])
        verifier_ok = True
        try:
            socket.send_fds(self.control, [b"R"], fds)
            send_msg(self.control.fileno(), part(request, VERIFIER_KEYS))
        except OSError:
            verifier_ok = False  # it died between runs; the run is reported as a sandbox error
        sock_v.close()
        self.verifier_runs += 1
        return u_pid, pidfd, out_r, verifier_ok

    def _await_verdict(self, output: _Output, deadline: float, verifier_ok: bool) -> tuple[dict | None, bool, str | None]:
        """Collect output until the verifier's verdict, the deadline, the output limit, the verifier's
        death or a watched limit passed, whichever comes first. Returns the verdict (or None), whether
        the deadline passed, and which watched limit the run passed (``"memory"``, ``"disk"`` or None).

        Watched every ``WATCH_S``, where no kernel mechanism bounds the run whole: its memory where no
        memory cgroup counts it (``_run_memory``), and its folder's bytes and entries where no tmpfs of
        its own holds it (namespaces refused: ``tree_usage`` against ``tmpfs_mb`` and ``tmpfs_inodes``).
        """
        verdict, timed_out = None, False
        control = self.control.fileno()
        memory_budget = (2 * self.config.get("memory_mb", 1024) + 64) * 2**20 if self.watch_memory else 0  # the cgroup's
        disk_budget = ((self.config.get("tmpfs_mb", 256) * 2**20, self.config.get("tmpfs_inodes", 16384))
                       if self.view is None else None)
        watching = bool(memory_budget or disk_budget)
        next_look = time.monotonic() + WATCH_S
        while verdict is None and verifier_ok:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                timed_out = True
                break
            if watching and now >= next_look:
                next_look = now + WATCH_S
                if memory_budget and self._run_memory() > memory_budget:
                    return None, False, "memory"
                if disk_budget and self._run_disk_exceeded(*disk_budget):
                    return None, False, "disk"
            wait = min(remaining, max(0.0, next_look - now)) if watching else remaining
            ready, _, _ = select.select(([output.fd] if output.open else []) + [control], [], [], wait)
            if output.fd in ready:
                output.read()
                if output.exceeded:
                    break
            if control in ready:
                if not self.control_reader.fill():
                    verifier_ok = False  # the verifier died mid-run
                elif self.control_reader.has_message():
                    verdict = self.control_reader.recv()
        return verdict, timed_out, None

    def _run_disk_exceeded(self, max_bytes: int, max_entries: int) -> bool:
        """Has the run's folder passed the bytes or entries a tmpfs of its own would hold?"""
        try:
            usage = tree_usage(self._run_dir_path(), max_bytes, max_entries)
        except OSError:
            return False  # unreadable this tick (a race with the program): the next tick reads again
        return usage is not None and (usage[0] > max_bytes or usage[1] > max_entries)

    def _run_memory(self) -> int:
        """Bytes of memory the run's processes hold beyond what each got from its parent at fork.

        Where no memory cgroup counts a run whole (rootless, or no cgroups), ``RLIMIT_AS`` caps each
        process and this, read every ``WATCH_S`` from ``/proc/<pid>/statm`` (resident minus
        file-backed pages, less the spawner's own), caps their sum. A child forked after its parent grew
        counts the pages it shares with it as its own: the watch errs toward stopping a run.
        """
        return sum(max(0, self._anonymous_pages(pid) - self.base_pages) for pid in self._run_pids()) * PAGE_SIZE

    def _end_run(self, u_pid: int, pidfd: int | None, verdict: dict | None, output: _Output) -> tuple[int | None, float]:
        """Kill what is left of the run and clear its folder; returns the solution's exit status (when
        how it ended is the verdict) and its CPU seconds."""
        judged = verdict is not None and verdict.get("kind") in ("passed", "exception", "harness_error")
        u_status, u_cpu = None, self._cpu_seconds(u_pid)
        if not judged:  # how it ended is the verdict: wait a little for that (after "gone", its socket
            # closed a moment before it can be reaped)
            if pidfd is not None and verdict is not None:
                select.select([pidfd], [], [], 0.25)
            u_status, cpu = self._solution_status(u_pid, 0 if pidfd is not None or verdict is None else 0.25)
            u_cpu = cpu or u_cpu
        if verdict is not None:
            output.drain()  # it flushed its prints before each reply: what it wrote is in the pipe already
        if pidfd is not None:
            os.close(pidfd)
        if verdict is None:  # the verifier is mid-run (timeout, output limit) or dead: replace it
            self._drop_verifier()
        self._kill_run(wait=not judged)
        if u_status is None and not judged:
            u_status, cpu = self._solution_status(u_pid, 2.0)
            u_cpu = cpu or u_cpu
        os.close(output.fd)
        if not self._clear_run_dir():
            self.broken = True
        return u_status, u_cpu

    def _program_rules(self, run_dir: str):
        """The program's Landlock ruleset for this run's writable folder (kept while that folder is)."""
        generation = self.view.tmp_generation if self.view is not None else None
        cached = self._rules_cache
        if cached is not None and generation is not None and cached[0] == generation:
            return cached[1]
        if cached is not None:
            cached[1].close()
        rules = self.confine.rules_for_run("/tmp" if self.view is not None else run_dir)
        self._rules_cache = (generation, rules) if rules is not None else None
        return rules

    def shutdown(self) -> None:
        """Stop the verifier, the spawner and anything left of a run, and wait for them: without a
        PID namespace they would otherwise keep the slot's cgroups busy past our exit."""
        self._drop_verifier()
        self._kill_run()
        try:
            os.kill(self.spawner_pid, signal.SIGKILL)
        except OSError:
            pass
        self.spawner.close()
        _reap(self.spawner_pid)

    def _solution_status(self, pid: int, seconds: float) -> tuple[int | None, float]:
        """How the solution process ended (the spawner reaps it), waiting up to ``seconds``."""
        status, cpu = self._ask_spawner(b"%s%d %r" % (spawner.WAIT, pid, float(seconds)))
        return (None if int(status) < 0 else int(status)), float(cpu)

    def _cpu_seconds(self, pid: int) -> float:
        """CPU time of a live process so far (its /proc schedstat), 0.0 where that is unreadable."""
        try:
            fd = os.open(f"{pid}/schedstat", os.O_RDONLY, dir_fd=self.proc_fd)
            try:
                return int(os.read(fd, 256).split()[0]) / 1e9
            finally:
                os.close(fd)
        except (OSError, ValueError, IndexError):
            return 0.0

    def _run_pids(self) -> set[int]:
        """Every process of the run that we can see (the harness excepted)."""
        keep = {os.getpid(), self.spawner_pid} | ({self.verifier_pid} if self.verifier_pid is not None else set())
        if self.scan_proc:
            return {int(p) for p in os.listdir(self.proc_fd) if p.isdigit()} - keep
        found, todo = set(), self._children(self.spawner_pid) + self._children(os.getpid())
        while todo and len(found) < 4096:
            pid = todo.pop()
            if pid not in found and pid not in keep:
                found.add(pid)
                todo += self._children(pid)
        return found | set(self.cgroups.run_pids() if self.cgroups else ())

    def _kill_run(self, wait: bool = True) -> None:
        """Kill every process of the run (descendants, orphans, daemons), sparing the verifier.

        ``wait=False``: stop once every process seen has been sent SIGKILL and a last look finds no
        new one (a process with SIGKILL pending can no longer fork); they finish dying while the
        next run starts, and the spawner or we reap them.
        """
        keep = {os.getpid(), self.spawner_pid} | ({self.verifier_pid} if self.verifier_pid is not None else set())
        if self.pid_namespace and not self.scan_proc:
            # Init of a private PID namespace whose /proc we could not mount: -1 means "every process
            # in this namespace but me" (getpid() == 1 holds in no process outside a fresh namespace).
            os.kill(-1, signal.SIGKILL)
            self._drop_verifier(kill=False)
            self._reap_orphans()
            return
        killed: set[int] = set()
        for _ in range(1000):
            if self.scan_proc:  # our own /proc of our own PID namespace: every pid here is ours
                victims = {int(p) for p in os.listdir(self.proc_fd) if p.isdigit()}
            else:  # no PID namespace: the spawner's children, ours (we are a subreaper), the run cgroup
                victims = set(self._children(os.getpid())) | set(self._children(self.spawner_pid))
                victims |= set(self.cgroups.run_pids() if self.cgroups else ())
            victims -= keep
            if not victims or (not wait and victims <= killed):
                break
            if len(killed | victims) > 4:
                wait = True  # many processes (a fork bomb): they hold the slot's pids until reaped
            killed |= victims
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self._reap_orphans(block=False)
            if wait:
                time.sleep(0.0005)
        else:  # something of the run would not die: never serve the next run beside it
            self.broken = True
        self._reap_orphans(block=False)

    def _reap_orphans(self, block: bool = True) -> None:
        deadline = time.monotonic() + 2.0
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid and pid == self.verifier_pid:
                self.verifier_pid = None
                self._drop_verifier(kill=False)
            if pid and pid == self.spawner_pid:
                self.broken = True
            if pid == 0:
                if not block or time.monotonic() > deadline:
                    return
                time.sleep(0.001)

    # -- /proc, through the zygote's own handle ---------------------------------------------------

    def _proc_is_ours(self) -> bool:
        """Is our /proc the procfs of the PID namespace we are init of? (it then shows us as pid 1)"""
        try:
            return os.getpid() == 1 and os.readlink("self", dir_fd=self.proc_fd) == "1"
        except OSError:
            return False

    def _children(self, pid: int) -> list[int]:
        """Direct children of ``pid`` (via /proc/<pid>/task/*/children)."""
        out: list[int] = []
        try:
            task_fd = os.open(f"{pid}/task", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.proc_fd)
            try:
                for tid in os.listdir(task_fd):
                    fd = os.open(f"{tid}/children", os.O_RDONLY, dir_fd=task_fd)
                    try:
                        out += [int(p) for p in os.read(fd, 1 << 16).split()]
                    finally:
                        os.close(fd)
            finally:
                os.close(task_fd)
        except OSError:
            pass
        return out

    def _anonymous_pages(self, pid: int) -> int:
        """Resident pages of ``pid`` that no file backs (0 where unreadable)."""
        try:
            fd = os.open(f"{pid}/statm", os.O_RDONLY, dir_fd=self.proc_fd)
            try:
                fields = os.read(fd, 256).split()
            finally:
                os.close(fd)
            return max(0, int(fields[1]) - int(fields[2]))
        except (OSError, ValueError, IndexError):
            return 0

    def _processes_of_uid(self, uid: int) -> int:
        count = 0
        for entry in os.listdir(self.proc_fd):
            if entry.isdigit():
                try:
                    if os.stat(entry, dir_fd=self.proc_fd).st_uid == uid:
                        count += 1
                except OSError:
                    pass
        return count


_HERE = os.path.dirname(os.path.abspath(__file__))


def _forget_where_the_harness_lives() -> None:
    """Drop the host path of leti's sandbox folder (a checkout's, for an editable install) from what
    programs inherit and can look up: ``sys.argv`` (``python -I <that folder>``), ``sys.orig_argv``,
    the import system's cache, and the harness modules' ``__file__``, ``__cached__`` and ``__spec__``.
    The modules' code objects still carry it in ``co_filename``, and the interpreter's own paths
    (``sys.executable``, ``sys.prefix``) stay, as Python needs them: the README says so."""
    sys.argv[:] = ["leti-sandbox"]
    if hasattr(sys, "orig_argv"):
        sys.orig_argv[:] = ["leti-sandbox"]
    for key in [k for k in sys.path_importer_cache if isinstance(k, str) and k.startswith(_HERE)]:
        del sys.path_importer_cache[key]
    for module in list(sys.modules.values()):
        if str(getattr(module, "__file__", "") or "").startswith(_HERE):
            for name in ("__file__", "__cached__"):
                module.__dict__.pop(name, None)
            module.__spec__ = None
            module.__loader__ = None
    import linecache

    linecache.clearcache()
WATCH_S = 0.05  # how often a run's memory (no memory cgroup) and folder (no tmpfs of its own) are read
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _fork_server(role: str, serve, *socket_args) -> tuple[int, socket.socket]:
    """Fork a helper process that runs ``serve(its end of a new socket pair)`` until it returns."""
    ours, theirs = socket.socketpair(*socket_args)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            serve(theirs)
        except BaseException:  # noqa: BLE001
            report_harness_bug(role)
        finally:
            os._exit(0)
    theirs.close()
    return pid, ours


def report_harness_bug(where: str) -> None:
    import traceback

    if _HARNESS_STDERR is not None:
        try:
            os.write(_HARNESS_STDERR, f"leti sandbox: error in {where}:\n{traceback.format_exc()}".encode())
        except OSError:
            pass
