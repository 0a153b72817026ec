"""A Landlock ruleset through ctypes: filesystem, TCP and IPC-scope confinement without privileges.

Why Landlock: it works unprivileged, stacks under namespaces and seccomp, and restricts even root
in the sandbox to the paths we grant. The ruleset is built once in the long-lived parent and each
forked child calls ``restrict_self()`` on the inherited descriptor, so per-run cost is two
syscalls. Standard library only, no sibling imports: the worker imports this as a top-level module.
Every right is limited to what the running kernel's ABI knows, so older kernels still get the
best confinement they can enforce.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct

__all__ = ["abi_version", "Ruleset"]

# Syscall numbers are the same on every architecture (unified table, >= 424).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# include/uapi/linux/landlock.h
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

# Rights that may be granted on a non-directory (anything else there is EINVAL).
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _sys(nr: int, *args: object) -> int:
    """Raw syscall returning the result, or -errno."""
    ret = _syscall(ctypes.c_long(nr), *args)
    return -ctypes.get_errno() if ret < 0 else ret


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable (not built, disabled at boot,
    or the call is blocked, e.g. by a container's seccomp profile)."""
    ret = _sys(_SYS_CREATE_RULESET, ctypes.c_void_p(None), ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(ret, 0)


def _fs_rights(abi: int) -> int:
    """Every filesystem right this ABI knows."""
    rights = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def _raise(err: int, what: str) -> None:
    raise OSError(err, f"landlock {what}: {os.strerror(err)}")


class Ruleset:
    """Built once in a long-lived parent, applied in each forked child with restrict_self()."""

    abi: int
    handles_network: bool  # TCP bind/connect is restricted (no port is granted: all are denied)
    scopes_signals: bool  # signals to processes outside the domain are refused

    def __init__(self, *, filesystem: bool = True, network: bool = True, scope: bool = True) -> None:
        """Create the ruleset; OSError if Landlock is unavailable or nothing would be restricted."""
        self._fd: int | None = None
        self.abi = abi_version()
        if self.abi < 1:
            raise OSError(38, "Landlock is not available on this kernel")
        self.handled_fs = _fs_rights(self.abi) if filesystem else 0
        self.handles_network = network and self.abi >= 4
        self.scopes_signals = scope and self.abi >= 6
        handled_net = NET_BIND_TCP | NET_CONNECT_TCP if self.handles_network else 0
        scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.scopes_signals else 0
        # Pass only the struct prefix this ABI knows, so older kernels accept it.
        size = 8 if self.abi < 4 else 16 if self.abi < 6 else 24
        attr = ctypes.create_string_buffer(struct.pack("=QQQ", self.handled_fs, handled_net, scoped)[:size], size)
        fd = _sys(_SYS_CREATE_RULESET, attr, ctypes.c_size_t(size), ctypes.c_uint32(0))
        if fd < 0:
            _raise(-fd, "create_ruleset")
        self._fd = fd  # the kernel returns it O_CLOEXEC; it is inherited across fork()

    def _rights(self, access: str, is_dir: bool) -> int:
        if access == "read":
            rights = FS_READ_FILE | FS_READ_DIR | FS_EXECUTE
        elif access == "write":
            rights = _fs_rights(self.abi) if is_dir else FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE
        elif access == "device":
            rights = FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV
        else:
            raise ValueError(f"unknown access {access!r} (expected 'read', 'write' or 'device')")
        if not is_dir:
            rights &= _FILE_RIGHTS
        return rights & self.handled_fs  # rights the ruleset does not handle are EINVAL in a rule

    def allow(self, path: str, access: str) -> bool:
        """Grant ``access`` ("read", "write" or "device") on ``path`` and everything beneath it.

        Returns False if the path does not exist (so callers can list optional paths).
        """
        if self._fd is None:
            raise ValueError("ruleset is closed")
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            rights = self._rights(access, stat.S_ISDIR(os.fstat(pfd).st_mode))
            if not rights:  # the filesystem is not restricted at all: nothing to grant
                return True
            attr = ctypes.create_string_buffer(struct.pack("=Qi", rights, pfd), 12)  # packed struct
            ret = _sys(_SYS_ADD_RULE, ctypes.c_int(self._fd), ctypes.c_int(_RULE_PATH_BENEATH), attr, ctypes.c_uint32(0))
            if ret < 0:
                _raise(-ret, f"add_rule({path!r}, {access})")
            return True
        finally:
            os.close(pfd)

    @property
    def fd(self) -> int | None:
        """The ruleset's descriptor (a sandbox that closes inherited fds must keep this one)."""
        return self._fd

    def restrict_self(self) -> None:
        """Set no_new_privs and enforce the ruleset on the calling thread (irrevocable)."""
        if self._fd is None:
            raise ValueError("ruleset is closed")
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)):
            _raise(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        ret = _sys(_SYS_RESTRICT_SELF, ctypes.c_int(self._fd), ctypes.c_uint32(0))
        if ret < 0:
            _raise(-ret, "restrict_self")

    def close(self) -> None:
        """Release the descriptor (an enforced domain stays); a child may call it after restrict_self."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> Ruleset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def restrict_with(fd: int) -> None:
    """Enforce a ruleset built by another process (received as a descriptor) on the calling thread."""
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)):
        _raise(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    ret = _sys(_SYS_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0))
    if ret < 0:
        _raise(-ret, "restrict_self")
