"""Real-kernel tests of the sandbox's seccomp filter and Landlock ruleset.

Each live test forks a child that applies the restriction, tries real operations and reports
what happened as JSON on a pipe; the parent asserts. The targets are canaries the tests create
(temp dirs, loopback listeners): nothing outside them is touched. A small classic-BPF interpreter
also checks the filter logic for both x86_64 and aarch64 without needing an aarch64 machine.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import struct
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "leti_env/execution/sandbox"))
import landlock  # noqa: E402
import seccomp  # noqa: E402

sys.path.remove(str(REPO / "leti_env/execution/sandbox"))

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux-only kernel features")

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
EPERM, ENOSYS = seccomp.RET_EPERM, seccomp.RET_ENOSYS


def raw(name: str, *args: int) -> int:
    """Raw syscall by name; returns 0/result on success or -errno."""
    ret = libc.syscall(ctypes.c_long(seccomp.SYSCALLS[name]), *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if ret < 0 else ret


def errno_of(fn: Callable[[], Any]) -> int:
    """0 if ``fn()`` succeeds, else the OSError's errno."""
    try:
        fn()
    except OSError as e:
        return e.errno or -1
    return 0


def in_child(body: Callable[[], dict]) -> dict:
    """Run ``body`` in a forked child and return the dict it produced (or raise its error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            signal.alarm(30)  # a hung child dies instead of hanging the test run
            try:
                out = {"ok": body()}
            except BaseException as e:  # noqa: BLE001
                out = {"error": repr(e)}
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child died: status {status:#x}"
    result = json.loads(b"".join(chunks) or b"{}")
    assert "ok" in result, result.get("error", "child reported nothing")
    return result["ok"]


# ---------------------------------------------------------------- seccomp: filter logic (BPF interpreter)

def run_bpf(prog: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Evaluate a classic BPF seccomp program on one seccomp_data (only the opcodes we emit)."""
    a6 = (tuple(args) + (0,) * 6)[:6]
    data = struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *(x & (2**64 - 1) for x in a6))
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x54:
            acc &= k
        elif code == 0x06:
            return k
        else:
            cond = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if cond else jf
        pc += 1


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_filter_logic(arch: str) -> None:
    nr = seccomp._TABLES[arch]
    audit = seccomp._AUDIT_ARCH[arch]
    read_nr = {"x86_64": 0, "aarch64": 63}[arch]
    for ipc in (False, True):
        for sockets in (False, True):
            prog = seccomp._build(arch, ipc, sockets)
            ev = lambda n, *a: run_bpf(prog, nr[n] if isinstance(n, str) else n, audit, a)  # noqa: E731
            assert ev(read_nr) == seccomp.RET_ALLOW
            for name in seccomp._DENY:
                if name in nr:
                    assert ev(name) == EPERM, name
            # another arch's ABI (i386 int 0x80, arm32 compat) is refused outright
            assert run_bpf(prog, read_nr, 0x40000003, ()) == EPERM
            other = "aarch64" if arch == "x86_64" else "x86_64"
            assert run_bpf(prog, read_nr, seccomp._AUDIT_ARCH[other]) == EPERM
            if arch == "x86_64":
                assert ev(0x40000000 | read_nr) == EPERM  # x32 ABI
            assert ev("clone3") == ENOSYS
            assert ev("clone", 0x003D0F00 | SIGCHLD) == seccomp.RET_ALLOW  # pthread_create's flags
            assert ev("clone", SIGCHLD) == seccomp.RET_ALLOW  # fork
            assert ev("clone", 0x80) == seccomp.RET_ALLOW  # CSIGNAL bits are not a namespace
            for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
                assert ev("clone", flag | SIGCHLD) == EPERM, hex(flag)
            assert ev("personality", 0) == ev("personality", 0xFFFFFFFF) == seccomp.RET_ALLOW
            assert ev("personality", 0x0040000) == ev("personality", 8) == EPERM
            for name in seccomp._SYSV_IPC:
                assert ev(name) == (EPERM if ipc else seccomp.RET_ALLOW), name
            assert ev("socketpair", 1, 1) == ev("socketpair", 1, 5 | 0o2000000) == seccomp.RET_ALLOW
            if sockets:
                assert ev("socketpair", 1, 2) == EPERM  # a datagram pair could sendto() a named socket
                assert ev("connect") == EPERM
                assert ev("socket", 1, 1) == ev("socket", 1, 1 | 0o4000 | 0o2000000) == seccomp.RET_ALLOW
                assert ev("socket", 2, 1) == ev("socket", 10, 1) == ev("socket", 1, 2) == ev("socket", 16, 3) == EPERM
            else:
                assert ev("connect") == ev("socket", 2, 1) == ev("socketpair", 1, 2) == seccomp.RET_ALLOW
                assert ev("socket", 10, 2) == ev("socket", 16, 3) == ev("socket", 1, 5) == seccomp.RET_ALLOW
                assert ev("socket", 40, 1) == ev("socket", 17, 3) == ev("socket", 38, 5) == EPERM  # vsock, packet, alg
            # resource and scheduling calls only on the caller itself (pid / who 0)
            for name, index in seccomp._SELF_ONLY.items():
                args = [7, 7, 7]
                args[index] = 0
                assert ev(name, *args) == seccomp.RET_ALLOW, name
                args[index] = 1234
                assert ev(name, *args) == EPERM, name
            for name in ("migrate_pages", "move_pages", "process_mrelease"):
                assert ev(name) == EPERM, name
    for attrs in (False, True):
        prog = seccomp._build(arch, False, False, attrs)
        for name in seccomp._FILE_ATTRS:
            if name in nr:
                assert run_bpf(prog, nr[name], audit, ()) == (EPERM if attrs else seccomp.RET_ALLOW), name


def test_ipc_unshare_allows_exactly_a_new_ipc_namespace() -> None:
    """The spawner's filter (inherited by every program) lets unshare(CLONE_NEWIPC) through and
    nothing else of unshare; without the option unshare is refused outright."""
    for arch, nr in seccomp._TABLES.items():
        audit = seccomp._AUDIT_ARCH[arch]
        plain, spawner = seccomp._build(arch, False, False), seccomp._build(arch, False, False, False, True)
        ipc = seccomp.CLONE_NEWIPC
        assert run_bpf(plain, nr["unshare"], audit, (ipc,)) == seccomp.RET_EPERM
        assert run_bpf(spawner, nr["unshare"], audit, (ipc,)) == seccomp.RET_ALLOW
        for flags in (CLONE_NEWUSER, ipc | CLONE_NEWUSER, 0x00020000, 0x20000000, 0x00000200, 0):
            assert run_bpf(spawner, nr["unshare"], audit, (flags,)) == seccomp.RET_EPERM, hex(flags)
        assert run_bpf(spawner, nr["setns"], audit, (3, ipc)) == seccomp.RET_EPERM


def test_tables_are_consistent() -> None:
    for arch, table in seccomp._TABLES.items():
        assert len(set(table.values())) == len(table), f"{arch}: duplicate syscall numbers"
    assert not {"uselib", "iopl", "ioperm", "_sysctl", "create_module", "ustat"} & set(seccomp._TABLES["aarch64"])
    if seccomp.SUPPORTED:
        assert set(seccomp.DENIED) <= set(seccomp.SYSCALLS) and "unshare" in seccomp.DENIED


# ---------------------------------------------------------------- seccomp: live

def need_seccomp() -> None:
    ok, why = seccomp.available()
    if not ok:
        pytest.skip(f"seccomp filters unavailable: {why}")


def test_seccomp_denies_escape_syscalls() -> None:
    need_seccomp()
    prog = seccomp.build_filter()

    def body() -> dict:
        seccomp.install(prog)
        out = {
            "unshare": raw("unshare", CLONE_NEWUSER),
            "keyctl": raw("keyctl", 0, -3, 0),
            "mount": raw("mount", 0, 0, 0, 0, 0),
            "io_uring_setup": raw("io_uring_setup", 1, 0),
            "ptrace": raw("ptrace", 0, 0, 0, 0),
            "bpf": raw("bpf", 0, 0, 0),
            "personality_set": raw("personality", 0x0040000),
            "personality_query": raw("personality", 0xFFFFFFFF),
        }
        if "iopl" in seccomp.SYSCALLS:
            out["iopl"] = raw("iopl", 0)
        pid = raw("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
        if pid == 0:  # the clone succeeded and this is the new process: leave at once
            os._exit(0)
        if pid > 0:
            os.waitpid(pid, 0)
        out["clone_newuser"] = pid
        with open("/proc/self/status") as f:
            out["mode"] = next(line.split()[1] for line in f if line.startswith("Seccomp:"))
        return out

    out = in_child(body)
    assert out.pop("mode") == "2"
    assert out.pop("personality_query") >= 0
    assert out == {k: -errno.EPERM for k in out}, out


def test_inherited_ipc_unshare_filter_still_refuses_an_unprivileged_program() -> None:
    """Installed once in a parent: the child makes its IPC namespace while it holds its
    capabilities; once they are dropped, the same call fails (the kernel wants CAP_SYS_ADMIN),
    and every other namespace stays refused by the filter itself."""
    need_seccomp()
    if os.geteuid() != 0:
        pytest.skip("needs root to create an IPC namespace")
    prog = seccomp.build_filter(ipc_unshare=True)

    def body() -> dict:
        seccomp.install(prog)
        out: dict = {}
        pid = os.fork()  # the filter is inherited
        if pid == 0:
            code = 1 if raw("unshare", seccomp.CLONE_NEWIPC) == 0 else 2
            os._exit(code)
        out["child_with_caps"] = os.WEXITSTATUS(os.waitpid(pid, 0)[1])
        out["newuser"] = raw("unshare", CLONE_NEWUSER)
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)  # drops every capability
        out["newipc_unprivileged"] = raw("unshare", seccomp.CLONE_NEWIPC)
        return out

    assert in_child(body) == {"child_with_caps": 1, "newuser": -errno.EPERM, "newipc_unprivileged": -errno.EPERM}


def test_seccomp_control_without_filter() -> None:
    """The same probes fail differently (or succeed) without the filter, so the EPERMs above are its doing."""
    need_seccomp()
    out = in_child(lambda: {"mount": raw("mount", 0, 0, 0, 0, 0), "personality": raw("personality", 0x0040000)})
    assert out["personality"] >= 0
    if os.geteuid() == 0:  # unprivileged, mount is EPERM anyway; as root a NULL target is EFAULT
        assert out["mount"] == -errno.EFAULT


def test_seccomp_keeps_fork_threads_and_spawn_working() -> None:
    need_seccomp()
    prog = seccomp.build_filter(deny_sysv_ipc=True, restrict_sockets=True)

    def body() -> dict:
        seccomp.install(prog)
        out: dict = {"clone3": raw("clone3", 0, 0)}
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        out["fork"] = os.WEXITSTATUS(os.waitpid(pid, 0)[1])
        box: list = []
        t = threading.Thread(target=lambda: box.append(threading.get_native_id()))
        t.start()
        t.join(10)
        out["thread"] = bool(box) and box[0] != threading.get_native_id()
        spawned = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", "raise SystemExit(5)"], {})
        out["spawn"] = os.WEXITSTATUS(os.waitpid(spawned, 0)[1])
        return out

    assert in_child(body) == {"clone3": -errno.ENOSYS, "fork": 7, "thread": True, "spawn": 5}


def test_seccomp_deny_sysv_ipc() -> None:
    need_seccomp()
    prog = seccomp.build_filter(deny_sysv_ipc=True)
    # only the denied path is exercised: a segment must never be created
    out = in_child(lambda: (seccomp.install(prog), {"shmget": raw("shmget", 0, 4096, 0o600),
                                                    "semget": raw("semget", 0, 1, 0o600)})[1])
    assert out == {"shmget": -errno.EPERM, "semget": -errno.EPERM}


def test_seccomp_restrict_sockets() -> None:
    need_seccomp()
    prog = seccomp.build_filter(restrict_sockets=True)
    tmp = tempfile.mkdtemp(prefix="leti-seccomp-")
    path = os.path.join(tmp, "canary.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(1)

        def body() -> dict:
            seccomp.install(prog)
            out = {
                "inet": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
                "inet6_udp": errno_of(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)),
                "unix_dgram": errno_of(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)),
            }
            a, b = socket.socketpair()
            a.sendall(b"ping")
            out["socketpair"] = b.recv(4).decode()
            out["socketpair_dgram"] = errno_of(lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # allowed, but it can reach nothing
            out["unix_connect"] = errno_of(lambda: s.connect(path))
            return out

        out = in_child(body)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
        shutil.rmtree(tmp)
    assert out == {"inet": errno.EPERM, "inet6_udp": errno.EPERM, "unix_dgram": errno.EPERM,
                   "socketpair": "ping", "socketpair_dgram": errno.EPERM, "unix_connect": errno.EPERM}


# ---------------------------------------------------------------- landlock

def need_landlock(min_abi: int = 1) -> int:
    abi = landlock.abi_version()
    if abi < min_abi:
        pytest.skip(f"Landlock ABI {abi} < {min_abi} on this kernel" if abi else "Landlock unavailable on this kernel")
    return abi


@pytest.fixture
def tree() -> Any:
    root = Path(tempfile.mkdtemp(prefix="leti-landlock-"))
    for d in ("allowed", "canary", "readonly"):
        (root / d).mkdir()
    (root / "canary/file").write_text("secret")
    (root / "readonly/file").write_text("original")
    yield root
    shutil.rmtree(root)


def python_paths() -> set[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return {os.path.realpath(p) for p in paths}


def test_landlock_filesystem(tree: Path) -> None:
    need_landlock()
    real = os.path.realpath(tree)
    assert not any(real == p or real.startswith(p + os.sep) for p in python_paths()), "temp dir under a granted prefix"
    rs = landlock.Ruleset(network=False, scope=False)
    try:
        assert rs.allow(str(tree / "allowed"), "write")
        assert rs.allow(str(tree / "readonly"), "read")
        assert not rs.allow(str(tree / "missing"), "read")
        for p in python_paths():
            rs.allow(p, "read")
        with pytest.raises(ValueError):
            rs.allow(str(tree), "everything")

        def body() -> dict:
            rs.restrict_self()
            rs.close()
            with open(tree / "allowed/new.txt", "w") as f:
                f.write("written")
            os.mkdir(tree / "allowed/sub")
            return {
                "canary_read": errno_of(lambda: open(tree / "canary/file", "rb").close()),
                "canary_list": errno_of(lambda: os.listdir(tree / "canary")),
                "readonly_read": (tree / "readonly/file").read_text(),
                "readonly_create": errno_of(lambda: os.close(os.open(tree / "readonly/new", os.O_WRONLY | os.O_CREAT, 0o600))),
                "import_stdlib": errno_of(lambda: __import__("colorsys")),
            }

        out = in_child(body)
    finally:
        rs.close()
    assert out == {"canary_read": errno.EACCES, "canary_list": errno.EACCES, "readonly_read": "original",
                   "readonly_create": errno.EACCES, "import_stdlib": 0}
    assert (tree / "allowed/new.txt").read_text() == "written" and (tree / "allowed/sub").is_dir()
    assert not (tree / "readonly/new").exists()


def test_landlock_rules_on_files(tree: Path) -> None:
    """Rules on non-directories carry only file rights (directory rights there are EINVAL)."""
    need_landlock()
    with landlock.Ruleset(network=False, scope=False) as rs:
        for access in ("read", "write"):
            assert rs.allow(str(tree / "readonly/file"), access)
        assert rs.allow(str(tree / "canary"), "read")
        if os.path.exists("/dev/null"):
            assert rs.allow("/dev/null", "device")

        def body() -> dict:
            rs.restrict_self()
            return {"file": (tree / "readonly/file").read_text(), "dir": sorted(os.listdir(tree / "canary")),
                    "sibling": errno_of(lambda: os.listdir(tree / "allowed")),
                    "null": errno_of(lambda: os.close(os.open("/dev/null", os.O_RDONLY)))}

        out = in_child(body)
    assert out == {"file": "original", "dir": ["file"], "sibling": errno.EACCES, "null": 0}


def test_landlock_read_grant_refuses_write_open(tree: Path) -> None:
    need_landlock()
    rs = landlock.Ruleset(network=False, scope=False)
    try:
        rs.allow(str(tree / "readonly"), "read")

        def body() -> dict:
            rs.restrict_self()
            return {"open_write": errno_of(lambda: os.close(os.open(tree / "readonly/file", os.O_WRONLY))),
                    "read": (tree / "readonly/file").read_text()}

        out = in_child(body)
    finally:
        rs.close()
    assert out == {"open_write": errno.EACCES, "read": "original"}
    assert (tree / "readonly/file").read_text() == "original"


def test_landlock_tcp_connect_denied() -> None:
    need_landlock(4)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with landlock.Ruleset(filesystem=False, scope=False) as rs:
            assert rs.handles_network

            def body() -> dict:
                rs.restrict_self()
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(5)
                b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                return {"connect": errno_of(lambda: s.connect(("127.0.0.1", port))),
                        "bind": errno_of(lambda: b.bind(("127.0.0.1", 0)))}

            out = in_child(body)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert out == {"connect": errno.EACCES, "bind": errno.EACCES}


def test_landlock_signal_and_abstract_socket_scope() -> None:
    need_landlock(6)
    name = f"\0leti-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(name)
        listener.listen(1)
        with landlock.Ruleset(filesystem=False, network=False) as rs:
            assert rs.scopes_signals

            def body() -> dict:
                rs.restrict_self()
                out = {"kill_parent": errno_of(lambda: os.kill(os.getppid(), 0))}
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                out["abstract_connect"] = errno_of(lambda: s.connect(name))
                gc = os.fork()
                if gc == 0:
                    time.sleep(30)
                    os._exit(0)
                try:
                    out["kill_grandchild"] = errno_of(lambda: os.kill(gc, 0))
                finally:
                    os.kill(gc, signal.SIGKILL)
                    out["grandchild_killed"] = os.waitpid(gc, 0)[1] & 0x7F == signal.SIGKILL
                return out

            out = in_child(body)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert out == {"kill_parent": errno.EPERM, "abstract_connect": errno.EPERM,
                   "kill_grandchild": 0, "grandchild_killed": True}


def test_seccomp_and_landlock_together(tree: Path) -> None:
    need_seccomp()
    need_landlock()
    prog = seccomp.build_filter(deny_sysv_ipc=True, restrict_sockets=True)
    with landlock.Ruleset() as rs:
        rs.allow(str(tree / "allowed"), "write")

        def body() -> dict:
            rs.restrict_self()
            seccomp.install(prog)
            box: list = []
            t = threading.Thread(target=lambda: box.append((tree / "allowed/t.txt").write_text("t")))
            t.start()
            t.join(10)
            return {"thread": len(box), "unshare": raw("unshare", CLONE_NEWUSER),
                    "canary": errno_of(lambda: open(tree / "canary/file", "rb").close())}

        out = in_child(body)
    assert out == {"thread": 1, "unshare": -errno.EPERM, "canary": errno.EACCES}
    assert (tree / "allowed/t.txt").read_text() == "t"


def test_landlock_unavailable_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landlock, "abi_version", lambda: 0)
    with pytest.raises(OSError):
        landlock.Ruleset()


def test_seccomp_self_only_calls_and_socket_families() -> None:
    """prlimit and friends reach only the caller; AF_VSOCK (not namespaced) cannot even be created."""
    need_seccomp()
    prog = seccomp.build_filter()
    parent = os.getpid()

    def body() -> dict:
        seccomp.install(prog)
        return {"prlimit_self": errno_of(lambda: __import__("resource").prlimit(0, __import__("resource").RLIMIT_NOFILE)),
                "prlimit_parent": errno_of(lambda: __import__("resource").prlimit(parent, __import__("resource").RLIMIT_NOFILE)),
                "affinity_self": errno_of(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
                "affinity_parent": errno_of(lambda: os.sched_setaffinity(parent, os.sched_getaffinity(parent))),
                "priority_parent": errno_of(lambda: os.setpriority(os.PRIO_PROCESS, parent, os.getpriority(os.PRIO_PROCESS, parent))),
                "vsock": errno_of(lambda: socket.socket(40, socket.SOCK_STREAM)),
                "inet": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())}

    assert in_child(body) == {"prlimit_self": 0, "prlimit_parent": errno.EPERM, "affinity_self": errno.EPERM,
                              "affinity_parent": errno.EPERM, "priority_parent": errno.EPERM,
                              "vsock": errno.EPERM, "inet": 0}
    assert in_child(lambda: {"affinity_self": errno_of(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)))}) \
        == {"affinity_self": 0}  # control: without the filter the same call works


def test_seccomp_without_a_network_namespace_nothing_listens_on_an_abstract_name() -> None:
    """Where abstract unix socket names are the host's, a program may neither bind nor listen (it could
    pose as a local service), while stream socketpairs still work."""
    need_seccomp()
    prog = seccomp.build_filter(restrict_sockets=True)
    name = f"\0leti-test-{os.getpid()}-{time.monotonic_ns()}"

    def body() -> dict:
        seccomp.install(prog)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            out = {"bind": errno_of(lambda: sock.bind(name)), "listen": errno_of(lambda: sock.listen(1))}
        finally:
            sock.close()
        a, b = socket.socketpair()
        a.sendall(b"x")
        out["pair"] = b.recv(1) == b"x"
        a.close(), b.close()
        return out

    assert in_child(body) == {"bind": errno.EPERM, "listen": errno.EPERM, "pair": True}

    def control() -> dict:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            return {"bind": errno_of(lambda: sock.bind(name))}
        finally:
            sock.close()

    assert in_child(control) == {"bind": 0}


def test_seccomp_file_attribute_and_message_queue_options() -> None:
    """Without a minimal root: no chmod/chown/utime/xattr changes; without an IPC namespace: no mq_*."""
    need_seccomp()
    tmp = Path(tempfile.mkdtemp(prefix="leti-seccomp-"))
    target = tmp / "own.txt"
    target.write_text("x")
    try:
        prog = seccomp.build_filter(deny_sysv_ipc=True, deny_file_attrs=True)

        def body() -> dict:
            seccomp.install(prog)
            return {"chmod": errno_of(lambda: os.chmod(target, 0o644)),
                    "utime": errno_of(lambda: os.utime(target, (0, 0))),
                    "chown": errno_of(lambda: os.chown(target, os.getuid(), os.getgid())),
                    "setxattr": errno_of(lambda: os.setxattr(target, "user.leti", b"1")),
                    "mq_open": -raw("mq_open", 0, 0, 0, 0),
                    "inotify": -raw("inotify_init1", 0),
                    "write": errno_of(lambda: target.write_text("still writable"))}

        assert in_child(body) == {"chmod": errno.EPERM, "utime": errno.EPERM, "chown": errno.EPERM,
                                  "setxattr": errno.EPERM, "mq_open": errno.EPERM, "inotify": errno.EPERM, "write": 0}
        assert in_child(lambda: {"inotify": raw("inotify_init1", 0) >= 0}) == {"inotify": True}  # control
        assert in_child(lambda: {"chmod": errno_of(lambda: os.chmod(target, 0o600))}) == {"chmod": 0}  # control
    finally:
        shutil.rmtree(tmp)

