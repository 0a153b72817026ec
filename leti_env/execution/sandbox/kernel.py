"""Thin ctypes wrappers for the Linux calls Python 3.11's ``os`` lacks (mount, unshare, prctl, ...)."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_BIND, MS_REC, MS_PRIVATE = 32, 1024, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NAME = 1, 4, 15
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38
SYS_PIDFD_OPEN, SYS_PIVOT_ROOT_X86_64, SYS_PIVOT_ROOT_GENERIC = 434, 155, 41
KEYCTL_JOIN_SESSION_KEYRING = 1
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}

_libc_handle = None


def libc():
    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(None, use_errno=True)
    return _libc_handle


def check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _enc(s):
    return s.encode() if isinstance(s, str) else s


def mount(source, target, fstype, flags: int, data=None) -> None:
    check(libc().mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data)),
          f"mount {target}")


def umount(target: str, flags: int = MNT_DETACH) -> None:
    check(libc().umount2(_enc(target), flags), f"umount {target}")


def unshare(flags: int) -> None:
    check(libc().unshare(flags), "unshare")


def pivot_root(new_root: str, put_old: str) -> None:
    number = SYS_PIVOT_ROOT_X86_64 if os.uname().machine == "x86_64" else SYS_PIVOT_ROOT_GENERIC
    check(libc().syscall(number, _enc(new_root), _enc(put_old)), "pivot_root")


def set_command_line(title: bytes) -> bool:
    """Overwrite this process's argument area, which ``/proc/<pid>/cmdline`` shows, with ``title``.

    Every process forked from the worker (programs included) shows, and can read, the worker's command
    line: the interpreter's path and the sandbox folder's, i.e. where the caller's checkout is. The
    area's bounds are ``arg_start`` and ``arg_end`` of ``/proc/self/stat`` (fields 48 and 49); Python
    keeps its own copy of ``sys.argv``. Returns False where the bounds cannot be read.
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return False
    if not start or end <= start:
        return False
    ctypes.memset(start, 0, end - start)
    ctypes.memmove(start, title, min(len(title), end - start - 1))
    return True


def prctl(option: int, arg: int = 0) -> int:
    return libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0)


def set_process_name(name: str) -> None:
    """Name this process (``ps``, ``/proc/<pid>/comm``): leti-zygote, leti-verifier, leti-solution."""
    libc().prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()), 0, 0, 0)


def pidfd_open(pid: int) -> int | None:
    fd = libc().syscall(SYS_PIDFD_OPEN, pid, 0)
    return fd if fd >= 0 else None


def join_new_session_keyring() -> bool:
    """Leave the caller's session keyring for a new, empty one (as runc does per container)."""
    number = SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        return False
    return libc().syscall(number, KEYCTL_JOIN_SESSION_KEYRING, None) >= 0


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_ARGS = (_CapHeader(0x20080522, 0), (_CapData * 2)())  # built once, before forking


def drop_capabilities() -> None:
    """Empty every capability set (uid 0 and user-namespace 'root' keep none of their powers)."""
    header, data = _CAP_ARGS
    data[0].effective = data[0].permitted = data[0].inheritable = 0
    check(libc().capset(ctypes.byref(header), ctypes.byref(data)), "capset")


def resolve_symbols() -> None:
    """Look the ctypes symbols up once, before forking, so each child does not pay for it."""
    lib = libc()
    for name in ("prctl", "capset", "mount", "umount2", "unshare", "syscall"):
        getattr(lib, name)
