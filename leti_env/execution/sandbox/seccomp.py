"""A Docker-default-style seccomp deny-list, assembled as classic BPF with ctypes.

Why a deny-list: the sandboxed program runs under whatever interpreter the user picked, so an
allow-list would break on the first unexpected syscall. Instead we refuse the calls that reach
kernel attack surface or escape the other sandbox layers (namespaces, mounts, keyrings, bpf,
io_uring, ptrace, modules ...) and allow everything else. Standard library only (ctypes), no
sibling imports: this file is imported as a top-level module by a worker run with ``python -I``.

Usage: ``prog = build_filter(...)`` once in the long-lived parent, ``install(prog)`` in each
forked child. Numbers come from the kernel's ``arch/x86/entry/syscalls/syscall_64.tbl`` and
``include/uapi/asm-generic/unistd.h`` (aarch64).
"""

from __future__ import annotations

import ctypes
import os
import struct

__all__ = ["SUPPORTED", "SYSCALLS", "DENIED", "available", "build_filter", "install"]

# Syscalls refused with EPERM on every host; x86_64-only entries are absent from the aarch64 table.
_DENY = (
    "unshare setns mount umount2 pivot_root chroot move_mount open_tree open_tree_attr fsopen "
    "fsconfig fsmount fspick mount_setattr add_key request_key keyctl bpf perf_event_open "
    "userfaultfd io_uring_setup io_uring_enter io_uring_register ptrace process_vm_readv "
    "process_vm_writev pidfd_getfd init_module finit_module delete_module kexec_load "
    "kexec_file_load reboot swapon swapoff acct open_by_handle_at name_to_handle_at settimeofday "
    "clock_settime clock_adjtime syslog vhangup quotactl quotactl_fd lookup_dcookie kcmp "
    "process_madvise process_mrelease migrate_pages move_pages uselib iopl ioperm create_module "
    "get_kernel_syms query_module nfsservctl _sysctl sysfs ustat"
).split()
# Without an IPC namespace, System V IPC and POSIX message queues would be host-global.
_SYSV_IPC = ("shmget shmat shmctl shmdt semget semop semctl semtimedop msgget msgsnd msgrcv msgctl "
             "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr").split()
# Without a minimal root, Landlock does not cover changing the mode, owner, times or extended
# attributes of a host file the program can open: refused outright.
_FILE_ATTRS = ("chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat utime utimes futimesat utimensat "
               "setxattr lsetxattr fsetxattr removexattr lremovexattr fremovexattr setxattrat removexattrat "
               "file_setattr").split()
# Without a minimal root, the host's folders are where the program can name them: inotify and fanotify
# would report what the caller creates in a folder Landlock does not let the program open.
_WATCHES = ("inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init", "fanotify_mark")
# Allowed only on the calling process itself (argument index that must be 0): the verifier and the
# zygote may share the program's uid, and these calls need no signal permission.
_SELF_ONLY = {"prlimit64": 0, "sched_setscheduler": 0, "sched_setparam": 0,
              "sched_setattr": 0, "setpriority": 1, "ioprio_set": 1}
# Refused outright: each slot is pinned to one core, and a program that widened its own affinity
# would take its neighbour slot's core (an honest program there would then time out).
_PINNING = ("sched_setaffinity",)
# Socket families a program may create where it has its own network namespace (AF_VSOCK and the
# like are not namespaced: they would reach the hypervisor or the host).
_FAMILIES = (1, 2, 10, 16)  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK

# Numbers >= 424 are shared by every architecture (the unified syscall table).
_COMMON = {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442,
    "quotactl_fd": 443, "process_mrelease": 448, "fchmodat2": 452, "setxattrat": 463,
    "removexattrat": 466, "open_tree_attr": 467, "file_setattr": 469,
}
_TABLES: dict[str, dict[str, int]] = {
    "x86_64": {
        **_COMMON, "shmget": 29, "shmat": 30, "shmctl": 31, "socket": 41, "connect": 42,
        "socketpair": 53, "bind": 49, "listen": 50, "clone": 56, "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67,
        "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "ptrace": 101, "syslog": 103,
        "uselib": 134, "personality": 135, "ustat": 136, "sysfs": 139, "vhangup": 153,
        "pivot_root": 155, "_sysctl": 156, "chroot": 161, "acct": 163, "settimeofday": 164,
        "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172,
        "ioperm": 173, "create_module": 174, "init_module": 175, "delete_module": 176,
        "get_kernel_syms": 177, "query_module": 178, "quotactl": 179, "nfsservctl": 180,
        "lookup_dcookie": 212, "semtimedop": 220, "clock_settime": 227, "kexec_load": 246,
        "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
        "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
        "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
        "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
        "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "utime": 132,
        "setpriority": 141, "sched_setparam": 142, "sched_setscheduler": 144, "setxattr": 188,
        "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
        "fremovexattr": 199, "sched_setaffinity": 203, "utimes": 235, "mq_open": 240, "mq_unlink": 241,
        "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245,
        "ioprio_set": 251, "migrate_pages": 256, "fchownat": 260, "futimesat": 261, "fchmodat": 268,
        "move_pages": 279, "utimensat": 280, "prlimit64": 302, "sched_setattr": 314,
        "inotify_init": 253, "inotify_add_watch": 254, "inotify_init1": 294, "fanotify_init": 300,
        "fanotify_mark": 301,
    },
    "aarch64": {
        **_COMMON, "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41,
        "nfsservctl": 42, "chroot": 51, "vhangup": 58, "quotactl": 60, "acct": 89,
        "personality": 92, "unshare": 97, "kexec_load": 104, "init_module": 105,
        "delete_module": 106, "clock_settime": 112, "syslog": 116, "ptrace": 117, "reboot": 142,
        "settimeofday": 170, "msgget": 186, "msgctl": 187, "msgrcv": 188, "msgsnd": 189,
        "semget": 190, "semctl": 191, "semtimedop": 192, "semop": 193, "shmget": 194,
        "shmctl": 195, "shmat": 196, "shmdt": 197, "socket": 198, "socketpair": 199,
        "bind": 200, "listen": 201, "connect": 203, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220,
        "swapon": 224, "swapoff": 225, "perf_event_open": 241, "name_to_handle_at": 264,
        "open_by_handle_at": 265, "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "kcmp": 272, "finit_module": 273, "bpf": 280,
        "userfaultfd": 282, "kexec_file_load": 294,
        "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15,
        "fremovexattr": 16, "ioprio_set": 30, "fchmod": 52, "fchmodat": 53, "fchownat": 54, "fchown": 55,
        "utimensat": 88, "sched_setparam": 118, "sched_setscheduler": 119, "sched_setaffinity": 122,
        "setpriority": 140, "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183,
        "mq_notify": 184, "mq_getsetattr": 185, "migrate_pages": 238, "move_pages": 239, "prlimit64": 261,
        "sched_setattr": 274, "inotify_init1": 26, "inotify_add_watch": 27, "fanotify_init": 262,
        "fanotify_mark": 263,
    },
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# seccomp return values and the bits of clone() flags that create namespaces.
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_EPERM = RET_ERRNO | 1
RET_ENOSYS = RET_ERRNO | 38
X32_SYSCALL_BIT = 0x40000000
CLONE_NEWIPC = 0x08000000
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Classic BPF opcodes (linux/bpf_common.h).
_LD_W_ABS, _ALU_AND_K, _RET_K = 0x20, 0x54, 0x06
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45  # BPF_JMP | BPF_{JEQ,JGE,JSET} | BPF_K
_OFF_NR, _OFF_ARCH = 0, 4


def _arg(i: int) -> int:
    """seccomp_data offset of the low 32 bits of args[i] (both supported arches are little-endian)."""
    return 16 + 8 * i


def _machine() -> str | None:
    """This process's arch; None for a 32-bit (or x32) interpreter on a 64-bit kernel."""
    m = os.uname().machine
    m = "aarch64" if m == "arm64" else m
    return m if m in _TABLES and ctypes.sizeof(ctypes.c_void_p) == 8 else None


_ARCH = _machine()
SUPPORTED: bool = _ARCH is not None
SYSCALLS: dict[str, int] = dict(_TABLES[_ARCH]) if _ARCH else {}
DENIED: tuple[str, ...] = tuple(n for n in _DENY if n in SYSCALLS)

_libc = ctypes.CDLL(None, use_errno=True)
_PR_GET_SECCOMP, _PR_SET_SECCOMP, _PR_SET_NO_NEW_PRIVS, _SECCOMP_MODE_FILTER = 21, 22, 38, 2


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _assemble(lines: list) -> bytes:
    """Two-pass assembler: ``str`` items are labels; ``(code, k, jt, jf)`` may name labels in jt/jf."""
    labels: dict[str, int] = {}
    pc = 0
    for item in lines:
        if isinstance(item, str):
            if item in labels:
                raise ValueError(f"duplicate BPF label {item}")
            labels[item] = pc
        else:
            pc += 1
    out, pc = [], 0
    for item in lines:
        if isinstance(item, str):
            continue
        code, k, jt, jf = item
        offs = [labels[j] - pc - 1 if isinstance(j, str) else j for j in (jt, jf)]
        if not all(0 <= o <= 255 for o in offs):  # classic BPF jumps are 8-bit, forward only
            raise ValueError(f"BPF jump out of range at {pc}: {offs}")
        out.append(struct.pack("=HBBI", code, offs[0], offs[1], k & 0xFFFFFFFF))
        pc += 1
    if not 0 < pc <= 4096:  # BPF_MAXINSNS
        raise ValueError(f"BPF program of {pc} instructions")
    return b"".join(out)


def _build(arch: str, deny_sysv_ipc: bool, restrict_sockets: bool, deny_file_attrs: bool = False,
           ipc_unshare: bool = False) -> bytes:
    """The filter program for ``arch`` (separate from build_filter so tests can build both arches)."""
    nr = _TABLES[arch]
    deny = [n for n in _DENY if n in nr and not (ipc_unshare and n == "unshare")] + list(_PINNING)
    deny += _SYSV_IPC if deny_sysv_ipc else []
    deny += [n for n in [*_FILE_ATTRS, *_WATCHES] if n in nr] if deny_file_attrs else []
    p: list = [(_LD_W_ABS, _OFF_ARCH, 0, 0), (_JEQ, _AUDIT_ARCH[arch], 0, "deny"), (_LD_W_ABS, _OFF_NR, 0, 0)]
    if arch == "x86_64":
        p.append((_JGE, X32_SYSCALL_BIT, "deny", 0))
    p += [(_JEQ, nr[n], "deny", 0) for n in deny]
    if ipc_unshare:
        p.append((_JEQ, nr["unshare"], "unshare", 0))
    p += [(_JEQ, nr["clone3"], "enosys", 0), (_JEQ, nr["clone"], "clone", 0),
          (_JEQ, nr["personality"], "personality", 0)]
    if restrict_sockets:
        # bind and listen too: abstract unix socket names are shared with the host where there is no
        # network namespace, and a program listening on one could pose as a local service.
        p += [(_JEQ, nr["connect"], "deny", 0), (_JEQ, nr["bind"], "deny", 0), (_JEQ, nr["listen"], "deny", 0),
              (_JEQ, nr["socket"], "socket", 0),
              (_JEQ, nr["socketpair"], "socketpair", 0)]
    else:
        p += [(_JEQ, nr["socket"], "families", 0)]
    p += [(_JEQ, nr[name], f"self{index}", 0) for name, index in _SELF_ONLY.items()]
    p += [(_RET_K, RET_ALLOW, 0, 0),
          "clone", (_LD_W_ABS, _arg(0), 0, 0), (_JSET, CLONE_NS_FLAGS, "deny", "allow"),
          *(["unshare", (_LD_W_ABS, _arg(0), 0, 0), (_JEQ, CLONE_NEWIPC, "allow", "deny")] if ipc_unshare else []),
          "personality", (_LD_W_ABS, _arg(0), 0, 0), (_JEQ, 0, "allow", 0),
          (_JEQ, 0xFFFFFFFF, "allow", "deny")]
    if restrict_sockets:  # only AF_UNIX + SOCK_STREAM (flags SOCK_NONBLOCK/SOCK_CLOEXEC masked off)
        p += ["socket", (_LD_W_ABS, _arg(0), 0, 0), (_JEQ, 1, 0, "deny"),
              (_LD_W_ABS, _arg(1), 0, 0), (_ALU_AND_K, 0xF, 0, 0), (_JEQ, 1, "allow", "deny")]
        # A SOCK_DGRAM pair could sendto() a named datagram socket (/dev/log, journald): stream
        # and seqpacket pairs ignore a destination address, so only those are allowed.
        p += ["socketpair", (_LD_W_ABS, _arg(1), 0, 0), (_ALU_AND_K, 0xF, 0, 0), (_JEQ, 1, "allow", 0),
              (_JEQ, 5, "allow", "deny")]
    else:
        p += ["families", (_LD_W_ABS, _arg(0), 0, 0)]
        p += [(_JEQ, family, "allow", 0) for family in _FAMILIES] + [(_RET_K, RET_EPERM, 0, 0)]
    for index in sorted(set(_SELF_ONLY.values())):  # pid 0 / who 0: the caller itself
        p += [f"self{index}", (_LD_W_ABS, _arg(index), 0, 0), (_JEQ, 0, "allow", "deny")]
    p += ["allow", (_RET_K, RET_ALLOW, 0, 0), "deny", (_RET_K, RET_EPERM, 0, 0),
          "enosys", (_RET_K, RET_ENOSYS, 0, 0)]
    return _assemble(p)


# Ready-made sock_fprog per built program, so that install() in a forked child does no work but
# the prctl calls (children inherit this cache from the parent that called build_filter).
_PREPARED: dict[bytes, tuple[_SockFprog, ctypes.Array]] = {}


def _prepare(program: bytes) -> _SockFprog:
    """Wrap ``program`` in a sock_fprog whose backing buffer lives as long as the cache entry."""
    hit = _PREPARED.get(program)
    if hit is None:
        if not program or len(program) % 8:
            raise ValueError("not a packed sock_filter array")
        buf = (_SockFilter * (len(program) // 8)).from_buffer_copy(program)
        hit = _PREPARED[program] = (_SockFprog(len(buf), buf), buf)
    return hit[0]


def build_filter(*, deny_sysv_ipc: bool = False, restrict_sockets: bool = False,
                 deny_file_attrs: bool = False, ipc_unshare: bool = False) -> bytes:
    """The packed sock_filter array for this arch.

    ``deny_sysv_ipc``: for hosts without an IPC namespace (System V IPC would be host-global).
    ``restrict_sockets``: for hosts without a network namespace: AF_UNIX stream sockets and
    stream/seqpacket socketpairs only, no connect(), bind() or listen() at all (so named sockets such
    as docker.sock stay unreachable, and no program serves on an abstract name the host shares).
    ``deny_file_attrs``: for hosts without a minimal root: no chmod, chown, utime or xattr changes
    (Landlock does not cover them, and the program may be able to open host files for reading), and no
    inotify or fanotify watches (they would report what happens in host folders it cannot open).
    ``ipc_unshare``: allow ``unshare(CLONE_NEWIPC)`` and nothing else of ``unshare``, so that a
    filter installed once in a parent can be inherited by children that still make their own IPC
    namespace (installing a filter costs a BPF compilation each time). The call needs
    CAP_SYS_ADMIN, which a confined program never has, so for the program it fails all the same.
    Always: socket families other than AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK are refused,
    sched_setaffinity is refused (a slot's core is fixed), and prlimit, the other sched_set* calls,
    setpriority and ioprio_set work only on the calling process.
    """
    if _ARCH is None:
        raise OSError(f"seccomp filter: unsupported architecture {os.uname().machine}")
    program = _build(_ARCH, deny_sysv_ipc, restrict_sockets, deny_file_attrs, ipc_unshare)
    _prepare(program)
    return program


def _prctl(option: int, arg2: int = 0, arg3: object = 0) -> int:
    """prctl(option, arg2, arg3, 0, 0) with every argument passed as a full unsigned long."""
    a3 = ctypes.c_ulong(arg3) if isinstance(arg3, int) else arg3
    return _libc.prctl(option, ctypes.c_ulong(arg2), a3, ctypes.c_ulong(0), ctypes.c_ulong(0))


def install(program: bytes) -> None:
    """Set no_new_privs and load ``program`` into the calling thread (irrevocable); OSError on failure."""
    fprog = _prepare(program)
    err = 0
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1) != 0:
        err = ctypes.get_errno()
    elif _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog)) != 0:
        err = ctypes.get_errno()
    if err:
        raise OSError(err, f"seccomp install failed: {os.strerror(err)}")


def available() -> tuple[bool, str]:
    """Whether a filter can be installed here, and why not if it cannot."""
    if not SUPPORTED:
        return False, f"unsupported architecture {os.uname().machine} ({8 * ctypes.sizeof(ctypes.c_void_p)}-bit)"
    mode = _prctl(_PR_GET_SECCOMP)
    if mode < 0:
        return False, f"kernel has no seccomp support (prctl: {os.strerror(ctypes.get_errno())})"
    if mode not in (0, 2):  # 2: already filtered; filters stack, which is fine
        return False, f"unexpected seccomp mode {mode}"
    if os.path.isdir("/proc/self"):
        try:
            with open("/proc/self/status", encoding="ascii", errors="replace") as f:
                if not any(line.startswith("Seccomp:") for line in f):
                    return False, "kernel built without CONFIG_SECCOMP (no Seccomp: line in /proc/self/status)"
        except OSError as e:
            return False, f"cannot read /proc/self/status: {e}"
    return True, ""
