"""Process helpers of the zygote: limits, waiting and reaping, tree removal, and what a run's end means.

Standard library only; imported by ``zygote`` as a top-level module.
"""

from __future__ import annotations

import errno
import os
import resource
import signal

NOBODY = 65534  # the solution process
VERIFIER_UID = 65533  # the verifier: another uid, so the program cannot signal or trace it


def classify(request, verdict, u_status, timed_out, output_exceeded, oom, disk=None) -> dict:
    """The result of one run from what the verifier said and how the solution process ended.

    ``disk``: ``(MiB, entries)`` when the run was stopped for filling its folder past them (no tmpfs
    of its own); the verdict is then the error a full tmpfs gives a program, ENOSPC.
    """
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
    if disk is not None:
        return {**base, "status": "error",
                "feedback": f"OSError: [Errno 28] No space left on device: the program's folder holds at most "
                            f"{disk[0]} MiB in {disk[1]} files\n"}
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
    """Remove a directory tree that a program wrote, whatever it made of it.

    A program may leave a tree deeper than PATH_MAX (full paths then fail with ENAMETOOLONG), 10,000
    levels deep (recursion fails), and directories it made unreadable or unwritable (mode 000). So the
    walk holds one directory descriptor at a time and opens each level relative to the one above, never
    by a full path. Going back up, ``..`` must be the directory it came down from (device and inode):
    if a process still running renamed a directory out of the tree, the walk stops with an OSError
    rather than follow it elsewhere. Modes are restored only on directories opened without following a
    symlink.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = _open_dir(path, flags, None)
    except FileNotFoundError:
        return
    except OSError as exc:  # a file, or a symlink (O_NOFOLLOW): only the name goes
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(path)
        return
    identities = [_identity(fd)]
    names: list[str] = []
    try:
        while True:
            child = _empty_or_first_subdirectory(fd)
            if child is not None:
                sub = _open_dir(child, flags, fd)
                os.close(fd)
                fd = sub
                identities.append(_identity(fd))
                names.append(child)
                continue
            if not names:
                break
            parent = os.open("..", flags & ~os.O_NOFOLLOW, dir_fd=fd)
            if _identity(parent) != identities[-2]:
                os.close(parent)
                raise OSError(f"{path}: the tree changed while it was being removed")
            os.close(fd)
            fd = parent
            identities.pop()
            _retry_writable(fd, lambda: os.rmdir(names[-1], dir_fd=fd))
            names.pop()
    finally:
        os.close(fd)
    os.rmdir(path)


def tree_usage(path: str, max_bytes: int, max_entries: int) -> tuple[int, int] | None:
    """``(bytes allocated, entries)`` of the tree at ``path``, counting stops once either passes its max.

    Where no tmpfs of its own bounds a run's folder (namespaces refused), the zygote reads this every
    tick to hold the run to the same ``tmpfs_mb`` and ``tmpfs_inodes`` as a tmpfs would. The walk is
    ``remove_tree``'s: one directory descriptor at a time, each level opened relative to the one
    above, back up by ``..`` checked against where it came from, so no depth or mode defeats it.
    Bytes are allocated blocks (a sparse file's holes cost nothing on a tmpfs either); a hard link
    counts each time it is seen, so the count errs toward stopping. Returns None when the tree
    changed under the walk (a directory renamed away mid-walk); the next tick counts again.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = _open_dir(path, flags, None)
    except FileNotFoundError:
        return 0, 0
    used, entries = 0, 0

    def scan(fd: int) -> list[str]:
        nonlocal used, entries
        subdirectories = []
        with os.scandir(fd) as listing:
            for entry in listing:
                entries += 1
                try:
                    used += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        subdirectories.append(entry.name)
                except FileNotFoundError:  # removed since it was listed
                    continue
                if used > max_bytes or entries > max_entries:
                    break
        return subdirectories

    try:
        levels = [(_identity(fd), scan(fd))]
        while levels and used <= max_bytes and entries <= max_entries:
            pending = levels[-1][1]
            if pending:
                try:
                    sub = _open_dir(pending.pop(), flags, fd)
                except OSError as exc:  # gone, or no longer a directory (ENOTDIR, ELOOP): nothing to count
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue
                    raise
                os.close(fd)
                fd = sub
                levels.append((_identity(fd), scan(fd)))
                continue
            levels.pop()
            if not levels:
                break
            parent = os.open("..", flags & ~os.O_NOFOLLOW, dir_fd=fd)
            if _identity(parent) != levels[-1][0]:
                os.close(parent)
                return None
            os.close(fd)
            fd = parent
    finally:
        os.close(fd)
    return used, entries


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _open_dir(name: str, flags: int, dir_fd: int | None) -> int:
    """Open a directory (relative to ``dir_fd``), first giving it back its owner's rights if it has none."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:
        pinned = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:  # chmod through the descriptor: never a symlink swapped in since
            os.chmod(f"/proc/self/fd/{pinned}", 0o700)
        except FileNotFoundError:  # no /proc here: by name (O_NOFOLLOW above saw a directory)
            os.chmod(name, 0o700, dir_fd=dir_fd)
        finally:
            os.close(pinned)
        return os.open(name, flags, dir_fd=dir_fd)


def _retry_writable(fd: int, action) -> None:
    try:
        action()
    except PermissionError:  # a directory the program made unwritable (its owner may restore that)
        os.fchmod(fd, 0o700)
        action()


def _empty_or_first_subdirectory(fd: int) -> str | None:
    """Unlink everything in the directory ``fd`` but subdirectories; return one of those, or None."""
    with os.scandir(fd) as entries:
        listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    child = None
    for name, is_dir in listed:
        if is_dir:
            child = child or name
        else:
            _retry_writable(fd, lambda name=name: os.unlink(name, dir_fd=fd))
    return child


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
