"""What every child of the zygote gets: identity, limits, Landlock, seccomp. Built once per slot.

``enter`` runs in a freshly forked child (the solution process or the verifier) and leaves it with a
new session, its own IPC namespace (the solution, where the slot has namespaces), only the file
descriptors it needs, rlimits, an unprivileged uid (two different ones as root: the program cannot
signal or trace its judge), no capabilities, ``no_new_privs``, a Landlock domain and the seccomp
deny-list, in that order (each step needs the privileges the next one drops).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import types

import landlock
import seccomp
from filesystem import ETC_FILES, SYSTEM_DIRS, hidden_paths, python_paths, readable_around
from kernel import (
    CLONE_NEWIPC, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, drop_capabilities,
    prctl, set_process_name, unshare,
)
from process import NOBODY, VERIFIER_UID, _nobody_can_run_python, _set_rlimit

OOM_SCORE_ADJ = 1000  # if the host runs out of memory, programs go first
WORKER_MODULES = ("codec", "confine", "feedback", "filesystem", "kernel", "landlock", "process", "protocol",
                  "seccomp", "solution", "spawner", "verifier", "zygote", "cgroups")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


class Confinement:
    """The slot's uids, seccomp program and Landlock rulesets, and ``enter`` to apply them in a child."""

    def __init__(self, zygote) -> None:
        self.config, self.protections, self.notes = zygote.config, zygote.protections, zygote.notes
        self.disabled, self.view, self.tmp_root = zygote.disabled, zygote.view, zygote.tmp_root
        self.real_root, self.user_namespace = zygote.real_root, zygote.user_namespace
        self.proc_fd, self.devnull = zygote.proc_fd, zygote.devnull
        self.limit_processes = zygote.cgroups is None  # else the pids cgroup does it
        self.harness_stderr: int | None = None
        self._choose_uids()
        self.per_run_ipc = bool(self.view) and zygote.privileged and "ipcns" not in self.disabled
        self._seccomp_filter = self._build_seccomp()
        # The spawner installs the program's filter once and its children inherit it (installing
        # one per run compiles it each time): the same filter, plus unshare(CLONE_NEWIPC) alone,
        # which each child makes before it drops its capabilities.
        self._spawner_filter = (self._build_seccomp(ipc_unshare=True)
                                if self._seccomp_filter is not None and self.per_run_ipc else self._seccomp_filter)
        self._inherited_filter = False
        self._rules = self._build_landlock()
        self.nproc_limit = 0

    def _choose_uids(self) -> None:
        """Never uid 0 of the host: as root, the solution and the verifier get two unprivileged uids.

        Without a minimal root, those uids read Python where it is installed. Where they cannot (a
        Python under ``/root``), the pool refuses to start (``python_unreadable``) rather than leave
        the program a capability to read it: ``CAP_DAC_READ_SEARCH`` would read every file Landlock
        lets it open, whoever owns it.
        """
        uid = os.getuid()
        self.solution_uid = self.verifier_uid = uid
        if self.real_root and "setuid" not in self.disabled:
            landlock_ok = "landlock" not in self.disabled and landlock.abi_version() > 0
            if self.view is not None or _nobody_can_run_python():
                self.solution_uid, self.verifier_uid = NOBODY, VERIFIER_UID
            elif landlock_ok:
                self.solution_uid, self.verifier_uid = NOBODY, VERIFIER_UID
                self.protections["python_unreadable"] = sys.prefix
            else:
                self.notes.append("uid nobody cannot read this Python installation and there is neither a "
                                  "minimal root nor Landlock: programs run as uid 0 with every capability dropped")
        self.protections["unprivileged_uid"] = self.solution_uid != 0 or self.user_namespace
        self.protections["separate_verifier_uid"] = self.solution_uid != self.verifier_uid

    def _build_seccomp(self, ipc_unshare: bool = False) -> bytes | None:
        ok, why = seccomp.available()
        if "seccomp" in self.disabled or not ok:
            if "seccomp" not in self.disabled:
                self.notes.append(f"no seccomp filter: {why}")
            self.protections["seccomp"] = False
            return None
        self.protections["seccomp"] = True
        return seccomp.build_filter(deny_sysv_ipc=not self.per_run_ipc,
                                    restrict_sockets=not self.protections.get("network_namespace"),
                                    deny_file_attrs=self.view is None, ipc_unshare=ipc_unshare)

    def seal_spawner(self) -> None:
        """In the spawner, once: load the program's seccomp filter, which every solution process
        it forks then inherits (fork keeps filters; nothing can remove one)."""
        if self._spawner_filter is not None:
            seccomp.install(self._spawner_filter)
            self._inherited_filter = True

    def _build_landlock(self) -> dict:
        """The verifier's ruleset, built once; the program's is built per run (``rules_for_run``)."""
        abi = 0 if "landlock" in self.disabled else landlock.abi_version()
        self.protections["landlock_abi"] = abi
        rules: dict = {}
        if abi <= 0:
            if "landlock" not in self.disabled:
                self.notes.append("no Landlock in this kernel (Linux >= 5.13 with landlock in the LSM list)")
        else:
            rules["verifier"] = self._ruleset(self._system_paths(), None)
        first = rules.get("verifier")
        self.protections["landlock_filesystem"] = first is not None
        self.protections["landlock_network"] = bool(first and first.handles_network)
        self.protections["landlock_signals"] = bool(first and first.scopes_signals)
        separate = self.protections["separate_verifier_uid"] or self.protections["landlock_signals"]
        self.protections["signal_isolation"] = ("uid" if self.protections["separate_verifier_uid"]
                                                else "landlock" if separate else False)
        return rules

    def _ruleset(self, readable: list[str], writable: str | None) -> landlock.Ruleset:
        """Read ``readable``, use the harmless devices, write only ``writable``."""
        ruleset = landlock.Ruleset()
        for path in readable:
            ruleset.allow(path, "read")
        for name in DEVICES:
            ruleset.allow(f"/dev/{name}", "device")
        if writable is not None:
            if self.view is not None:  # our own devpts (the host's would hold the caller's terminal)
                ruleset.allow("/dev/pts", "device")
            ruleset.allow(writable, "write")
        return ruleset

    def rules_for_run(self, writable: str) -> landlock.Ruleset | None:
        """The program's ruleset for one run, writing only that run's new directory.

        Built per run: Landlock ignores a rule on a mount point for the filesystem mounted over it
        (the run's tmpfs), and a rule on a parent would let one run leave files for the next.
        The caller closes it.
        """
        if "verifier" not in self._rules:
            return None
        return self._ruleset(["/"] if self.view is not None else self._system_paths(), writable)

    def _system_paths(self) -> list[str]:
        """What Python needs to read: system libraries, a few /etc files, its prefixes and sys.path."""
        hidden = hidden_paths(self.config)
        etc = ETC_FILES if self.view is None else ETC_FILES + ("passwd", "group")  # ours, in the view
        system = [p for d in SYSTEM_DIRS for p in readable_around(f"/{d}", hidden)]
        return system + [f"/etc/{f}" for f in etc] + python_paths(hidden)

    def enter(self, role: str, keep: list[int], stdout_fd: int, run_dir: str, request: dict,
              ruleset_fd: int | None = None) -> None:
        """In a fresh child: session, IPC, limits, identity, Landlock, seccomp. Order matters."""
        os.setsid()
        set_process_name(f"leti-{role}")
        if role == "solution":
            if self.per_run_ipc:
                unshare(CLONE_NEWIPC)  # SysV objects die with the run
            self._set_oom_score()
        os.dup2(self.devnull, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stdout_fd, 2)
        ruleset = self._rules.get(role) if ruleset_fd is None else None
        extra = {ruleset.fd} if ruleset is not None and ruleset.fd is not None else set()
        if ruleset_fd is not None:
            extra.add(ruleset_fd)
        if role == "verifier" and self.harness_stderr is not None:
            extra.add(self.harness_stderr)  # trusted: may report its own bugs
        keep = sorted(set(keep) | {0, 1, 2} | extra)
        lo = 0
        for fd in keep + [resource.getrlimit(resource.RLIMIT_NOFILE)[0]]:
            if fd > lo + 1:
                os.closerange(lo + 1, fd)
            lo = fd
        if role == "solution":
            cpu = int(request["timeout"]) + 1
            _set_rlimit(resource.RLIMIT_CPU, cpu, cpu + 1)
        _set_rlimit(resource.RLIMIT_AS, request["memory_mb"] * 2**20)
        _set_rlimit(resource.RLIMIT_FSIZE, request["max_file_mb"] * 2**20)
        _set_rlimit(resource.RLIMIT_CORE, 0)
        _set_rlimit(resource.RLIMIT_NOFILE, 256)
        if self.limit_processes:  # NPROC counts the uid host-wide: allow what it has, plus pids_max
            _set_rlimit(resource.RLIMIT_NPROC, self.nproc_limit)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large file is an OSError, not a kill
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a normal interpreter
        os.chdir(run_dir)  # the environment was scrubbed once, in the zygote
        uid = self.solution_uid if role == "solution" else self.verifier_uid
        try:
            os.setgroups([])  # no supplementary groups, whatever the uid
        except PermissionError:
            pass  # a user namespace with setgroups denied has none to drop
        if uid != os.getuid():
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)  # drops every capability
        prctl(PR_SET_NO_NEW_PRIVS, 1)  # exec can never regain privileges
        drop_capabilities()
        prctl(PR_SET_DUMPABLE, 0)  # no ptrace, no /proc/<pid>/mem from peers
        if ruleset_fd is not None:
            landlock.restrict_with(ruleset_fd)
            os.close(ruleset_fd)
        elif ruleset is not None:
            ruleset.restrict_self()
            ruleset.close()
        if self._seccomp_filter is not None and not (role == "solution" and self._inherited_filter):
            seccomp.install(self._seccomp_filter)
        sys.setrecursionlimit(1000)
        if role == "solution":  # nor find the harness's modules already loaded
            for name in WORKER_MODULES:
                sys.modules.pop(name, None)
            sys.modules["__main__"] = types.ModuleType("__main__")  # not the launcher's

    def _set_oom_score(self) -> None:
        try:
            fd = os.open(f"{os.getpid()}/oom_score_adj", os.O_WRONLY, dir_fd=self.proc_fd)
            try:
                os.write(fd, str(OOM_SCORE_ADJ).encode())
            finally:
                os.close(fd)
        except OSError:
            pass

