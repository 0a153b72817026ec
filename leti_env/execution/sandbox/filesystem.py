"""The program's view of the filesystem: a new, minimal root, and a fresh ``/tmp`` for every run.

Built once per worker slot by the zygote, in a mount namespace of its own (as bubblewrap and nsjail
do): a tmpfs root holding read-only binds of what Python needs (``/usr``, ``/lib*``, ``/bin``, the
interpreter's prefixes and ``sys.path`` entries), a few ``/etc`` files, a ``/dev`` with only
``null zero full random urandom tty`` and a new devpts, a fresh ``/proc`` of the slot's PID namespace
with the kernel's knobs read-only or masked (Docker's lists), and an empty ``/tmp`` mount point. The
zygote then ``pivot_root``s into it and detaches the old root: ``/home``, ``/root``, the caller's
working directory, ``/sys`` and every other mount are simply not there.

Each run gets a new tmpfs on ``/tmp`` (with an inode cap), and cleanup is one unmount, whatever the
program left there.
"""

from __future__ import annotations

import os
import stat
import sys
import sysconfig

from kernel import (
    MNT_DETACH, MS_BIND, MS_NOATIME, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT,
    mount, pivot_root, umount,
)

SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_FILES = ("ld.so.cache", "localtime", "timezone", "nsswitch.conf", "hosts", "os-release", "mime.types")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("kcore", "keys", "kmsg", "timer_list", "timer_stats", "sched_debug", "latency_stats",
               "interrupts", "kallsyms", "kpagecount", "kpageflags", "kpagecgroup", "pagetypeinfo",
               "vmallocinfo", "slabinfo", "config.gz", "buddyinfo", "mtrr")
PROC_MASKED_DIRS = ("acpi", "scsi", "asound", "driver", "tty", "dynamic_debug")
PACKAGE_DIRS = ("site-packages", "dist-packages")
RUN_TMP = "/tmp"
STAGING = "/.leti-staging"  # in the new root, mode 0700: programs (another uid) cannot look in
RUN_DIR = "/tmp/run"
_PRIVATE = ("/tmp",)  # per-run: a bound path under here is bound again inside each run's tmpfs


def _flags_of(path: str) -> int:
    """A mount's flags that a user namespace locks (a read-only remount must keep them)."""
    return os.statvfs(path).f_flag & (MS_NODEV | MS_NOEXEC | MS_NOSUID)


def _bind_read_only(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | _flags_of(target))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def python_paths(exclude: list[str]) -> list[str]:
    """What the interpreter needs: its prefixes and ``sys.path``, minus anything that would show more.

    A path is left out if it is ``/``, an ancestor of (or equal to) one of ``exclude`` (the caller's
    working directory and home), or outside the interpreter's prefixes and not a site-packages
    folder (an editable install's project folder, with its ``.git`` and secrets, is never shown).
    """
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
                  *[p for p in sys.path if p]]
    prefixes = [os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)]
    keep: list[str] = []
    for path in candidates:
        path = os.path.abspath(path)
        if not os.path.exists(path) or path == "/":
            continue
        if not any(_under(path, p) for p in prefixes) and os.path.basename(path) not in PACKAGE_DIRS:
            continue  # e.g. a project folder an editable install put on sys.path: not shown whole
        if any(_under(e, path) for e in exclude if e):
            continue
        if any(_under(path, k) for k in keep):
            continue
        keep = [k for k in keep if not _under(k, path)] + [path]
    return sorted(keep)


def hidden_paths(config: dict) -> list[str]:
    """The caller's folders no program may see, though a broad system tree above them is shown.

    ``/root`` and ``/home``, and the caller's working directory and home (with the project, its ``.env``
    and its run folders) where the pool sent them in ``hide``: only when they lie inside a tree the
    programs are shown (``pool._folders_to_hide``), so that the worker, whose memory every program
    inherits, holds no other caller path. A Docker image usually works in ``/usr/src/app``, under the
    ``/usr`` that Python needs: that folder is masked in the view (an empty read-only tmpfs) and left out
    of Landlock's read rules (``readable_around``).
    """
    out = []
    for path in ["/root", "/home", *config.get("hide", ())]:
        if path and os.path.isabs(path) and os.path.normpath(path) != "/":
            out.append(os.path.normpath(path))
    return sorted(set(out))


def readable_around(path: str, hidden: list[str]) -> list[str]:
    """``path`` as Landlock read rules that leave out every ``hidden`` folder beneath it.

    Landlock only adds rights, and a rule covers a whole tree: so a tree with a hidden folder inside is
    granted entry by entry, down the way to that folder and never into it. The folders on the way can
    then not be listed (their entries are still read by name), which Python does not need.
    """
    inner = [h for h in hidden if _under(h, path)]
    if not inner:
        return [path]
    if path in inner:
        return []
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return []
    out: list[str] = []
    for name in names:
        child = os.path.join(path, name)
        if any(_under(h, child) for h in inner) and not os.path.islink(child):
            out += readable_around(child, inner)
        elif child not in inner:
            out.append(child)
    return out


def _mkdirs(root: str, path: str) -> str:
    target = root + path
    os.makedirs(target, mode=0o755, exist_ok=True)
    return target


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _place(root: str, path: str, source_fd: int) -> None:
    """Bind ``path`` (a directory or a file, opened as ``source_fd``) read-only at ``root + path``."""
    target = root + path
    if stat.S_ISDIR(os.fstat(source_fd).st_mode):
        _mkdirs(root, path)
    else:
        _mkdirs(root, os.path.dirname(path))
        _touch(target)
    _bind_read_only(f"/proc/self/fd/{source_fd}", target)


class RootView:
    """The slot's minimal root (see the module docstring). ``build`` pivots the calling process into it."""

    def __init__(self, config: dict, notes: list[str], pid_namespace: bool, run_uid: int):
        self.config, self.notes = config, notes
        self.pid_namespace = pid_namespace
        self.run_uid = run_uid
        # (path, staged copy): what lives under /tmp is bound at a staging point of the new root
        # (root-only, read-only) and from there into each run's own /tmp.
        self.private_binds: list[tuple[str, str]] = []
        self.proc = False
        # The zygote's own procfs of the slot's PID namespace (no hidepid; mounted, opened and detached
        # before the programs' /proc is mounted over the same place): see ``_proc``.
        self.harness_proc_fd: int | None = None
        self.bound: list[str] = []
        self.masked: list[str] = []  # the caller's folders hidden under an empty tmpfs
        self.tmp_generation = 0  # how many tmpfs this slot has mounted on /tmp (a new one: new rules)
        self._pristine: tuple | None = None

    def build(self) -> None:
        hidden = hidden_paths(self.config)
        python = python_paths(hidden)
        here = os.path.dirname(os.path.abspath(__file__))
        python = [p for p in python if p != here]  # the harness is loaded already; programs need not see it
        # Open every source first: the new root is built on /tmp, which hides what was there.
        sources: dict[str, int] = {}
        for path in [f"/{d}" for d in SYSTEM_DIRS] + [f"/etc/{f}" for f in ETC_FILES] + python:
            if os.path.islink(path) and (path.startswith("/etc/") or path.count("/") == 1):
                continue  # recreated as the same symlink below
            try:
                sources[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
        devices = {d: os.open(f"/dev/{d}", os.O_PATH | os.O_CLOEXEC) for d in DEVICES if os.path.exists(f"/dev/{d}")}
        links = {p: os.readlink(p) for p in [f"/{d}" for d in SYSTEM_DIRS] + [f"/etc/{f}" for f in ETC_FILES]
                 if os.path.islink(p)}
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below may ever propagate to the host
        root = "/tmp"
        mount("leti-root", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,nr_inodes=4096,mode=0755")
        masked: list[str] | None = None  # the caller's folders, masked once the system trees are bound
        try:
            for path, target in links.items():
                _mkdirs(root, os.path.dirname(path))
                os.symlink(target, root + path)
            for path, fd in sources.items():
                if path in python and masked is None:  # the system trees are bound: mask the caller's folders
                    masked = self._mask(root, hidden)
                if any(_under(path, p) for p in _PRIVATE):
                    staged = f"{STAGING}/{len(self.private_binds)}"
                    if not os.path.isdir(root + STAGING):
                        os.mkdir(root + STAGING, 0o700)
                    _place(root, staged, fd)
                    os.close(fd)
                    self.private_binds.append((path, staged))
                    continue
                _place(root, path, fd)
                os.close(fd)
                self.bound.append(path)
            for path in masked if masked is not None else self._mask(root, hidden):
                # read-only once Python's own folders inside (a venv in the project) are bound
                mount(None, root + path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
            self._etc(root)
            self._dev(root, devices)
            _mkdirs(root, RUN_TMP)
            os.chmod(root + RUN_TMP, 0o1777)
            _mkdirs(root, "/var/tmp")
            if self.pid_namespace:
                self.proc = self._proc(root)
            else:
                _mkdirs(root, "/proc")
                self.notes.append("no /proc for programs (no PID namespace to give them their own)")
            os.mkdir(root + "/.old")
            os.chdir(root)
            pivot_root(".", ".old")
        finally:
            for fd in devices.values():
                os.close(fd)
        os.chdir("/")
        umount("/.old", MNT_DETACH)
        os.rmdir("/.old")
        mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | _flags_of("/"))

    def _mask(self, root: str, hidden: list[str]) -> list[str]:
        """An empty tmpfs over every hidden folder that a bound system tree shows (writable until the
        interpreter's own folders beneath it, if any, are bound; ``build`` then makes it read-only)."""
        masked = []
        for path in hidden:
            if not any(_under(path, b) and path != b for b in self.bound) or not os.path.isdir(root + path):
                continue
            try:
                mount("leti-masked", root + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k,mode=0755")
                masked.append(path)
            except OSError as exc:
                self.notes.append(f"could not mask {path}: {exc}")
        self.masked = masked
        return masked

    def _etc(self, root: str) -> None:
        """A passwd and group naming only the sandbox's users (the host's list them all)."""
        _mkdirs(root, "/etc")
        with open(root + "/etc/passwd", "w") as f:
            f.write("root:x:0:0:root:/tmp/run:/bin/sh\n"
                    "leti-verifier:x:65533:65533:leti verifier:/:/usr/sbin/nologin\n"
                    "nobody:x:65534:65534:nobody:/tmp/run:/usr/sbin/nologin\n")
        with open(root + "/etc/group", "w") as f:
            f.write("root:x:0:\nleti-verifier:x:65533:\nnogroup:x:65534:\n")

    def _dev(self, root: str, devices: dict[str, int]) -> None:
        dev = _mkdirs(root, "/dev")
        mount("leti-dev", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755")
        for name, fd in devices.items():
            _touch(f"{dev}/{name}")
            mount(f"/proc/self/fd/{fd}", f"{dev}/{name}", None, MS_BIND)
        os.mkdir(f"{dev}/pts", 0o755)
        try:
            mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
            os.symlink("pts/ptmx", f"{dev}/ptmx")
        except OSError as exc:
            self.notes.append(f"no pseudo-terminals: {exc}")
        os.symlink("../tmp", f"{dev}/shm")  # POSIX shared memory lands in the run's own tmpfs
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, f"{dev}/{name}")
        mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC | _flags_of(dev))

    def _proc(self, root: str) -> bool:
        """A procfs of the slot's PID namespace, with the host's knobs read-only and its secrets masked."""
        proc = _mkdirs(root, "/proc")
        # hidepid=2 hides a process from those who may not ptrace it, and a non-dumpable program forked
        # (not exec'd) from a rootless launcher has its memory owned by the host's user namespace, where
        # the zygote has no capability: through the programs' /proc the zygote would not see them, and
        # could neither kill what a run left alive nor read its CPU time. So the zygote keeps a procfs
        # instance of its own, without hidepid, that no path leads to (each mount is its own instance).
        try:
            mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            self.harness_proc_fd = os.open(proc, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            umount(proc, MNT_DETACH)
        except OSError as exc:
            self.notes.append(f"no procfs of the zygote's own: {exc}")
        try:
            mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        except OSError as exc:
            self.notes.append(f"no /proc for programs: {exc}")
            return False
        for name in PROC_READ_ONLY:
            path = f"{proc}/{name}"
            if os.path.exists(path):
                mount(path, path, None, MS_BIND | MS_REC)
                mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for name in PROC_MASKED:
            path = f"{proc}/{name}"
            if os.path.exists(path):
                mount(root + "/dev/null", path, None, MS_BIND)
        for name in PROC_MASKED_DIRS:
            path = f"{proc}/{name}"
            if os.path.isdir(path):
                mount("leti-masked", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
        return True

    # -- one run ------------------------------------------------------------------------------

    def fresh_tmp(self, uid: int, gid: int) -> str:
        """A new tmpfs on /tmp with the run directory in it (or the last one, if no run touched it)."""
        if self.tmp_generation and self._pristine is not None:
            return RUN_DIR
        size = int(self.config.get("tmpfs_mb", 256))
        inodes = int(self.config.get("tmpfs_inodes", 16384))
        mount("leti-run", RUN_TMP, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME,
              f"size={size}m,nr_inodes={inodes},mode=1777")
        os.mkdir(RUN_DIR, 0o700)
        if uid != os.geteuid():
            os.chown(RUN_DIR, uid, gid)
        for path, staged in self.private_binds:
            target = path
            if os.path.isdir(staged):
                os.makedirs(target, mode=0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                _touch(target)
            _bind_read_only(staged, target)
        self.tmp_generation += 1
        self._pristine = self._fingerprint()
        return RUN_DIR

    def clear_tmp(self) -> None:
        """Throw the run's tmpfs away: one unmount, however many files the program left.

        A run that left no trace at all (two inodes, and neither /tmp nor the run directory
        modified, re-moded or re-owned: their change times would show it) hands its tmpfs to the
        next run as it is, which saves a mount and an unmount per run.
        """
        if self._pristine is not None and self._fingerprint() == self._pristine:
            return
        self._pristine = None
        umount(RUN_TMP, MNT_DETACH)

    def _fingerprint(self) -> tuple | None:
        try:
            fs = os.statvfs(RUN_TMP)
            top, run = os.lstat(RUN_TMP), os.lstat(RUN_DIR)
        except OSError:
            return None
        return (fs.f_files - fs.f_ffree, fs.f_blocks - fs.f_bfree,
                *[(st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns) for st in (top, run)])
