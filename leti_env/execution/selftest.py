"""A safe self-test of the sandbox's least-privilege promises, one probe per attack class.

Each probe is an ordinary program run through the executor, which reports what it could reach as
JSON on stdout; the caller judges. The probes are safe to run on any machine: the only files
touched are canaries this module creates in its own folder, sensitive paths are only *opened*
(and closed at once, never written), device nodes are listed and never opened, signals go only to
the executor's own processes, and a System V segment a probe manages to create is removed.

Used by ``python -m leti_env sandbox``, ``sandbox_report(self_test=True)`` and the test suite
(in each mode: root, rootless, Landlock-only). Standard library only.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from .program import Program
from .sandbox import seccomp

ALLOWED_DEVICES = {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
                   "stdin", "stdout", "stderr"}
KERNEL_KNOBS = ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/randomize_va_space",
                "/proc/1/oom_score_adj", "/proc/sysrq-trigger")
_REPORT = "import json as _j\nprint('LETI-PROBE ' + _j.dumps(found))\n"
_ADD = "def add(a, b):\n    return a + b\n"
_TESTS = "assert add(1, 2) == 3\nassert add(10, 5) == 15\n"


# Looks through the program's own memory (every readable mapping where /proc/self/maps is
# readable, else every string reachable from its frames and the garbage collector) for the tests it
# is judged by and for other runs' tests and programs. The markers are split in this source.
_MEMORY_SCAN = (
    "import re, sys, gc\n"
    "found, scanned = set(), []\n"
    "pattern = re.compile(rb'LETI-' + rb'(TEST|SOL)NONCE-[0-9a-f]{16}')\n"
    "try:\n"
    "    import ctypes\n"
    "    for line in open('/proc/self/maps').read().splitlines():\n"
    "        span, perms = line.split()[:2]\n"
    "        if not perms.startswith('r') or line.endswith(('[vvar]', '[vsyscall]', '[vvar_vclock]')):\n"
    "            continue\n"
    "        lo, hi = (int(x, 16) for x in span.split('-'))\n"
    "        try:\n"
    "            found.update(m.group(0).decode() for m in pattern.finditer(ctypes.string_at(lo, hi - lo)))\n"
    "        except Exception:\n"
    "            pass\n"
    "    scanned.append('maps')\n"
    "except OSError:\n"
    "    pass\n"
    "todo = [(o, 0) for o in gc.get_objects() if isinstance(o, (dict, list, tuple))]\n"
    "frame = sys._getframe()\n"
    "while frame is not None:\n"
    "    todo += [(frame.f_locals, 0), (frame.f_globals, 0)]\n"
    "    frame = frame.f_back\n"
    "seen = set()\n"
    "while todo:\n"
    "    container, depth = todo.pop()\n"
    "    if id(container) in seen or depth > 4:\n"
    "        continue\n"
    "    seen.add(id(container))\n"
    "    for value in list(container.values() if isinstance(container, dict) else container):\n"
    "        if isinstance(value, (str, bytes)):\n"
    "            raw = value.encode('utf-8', 'replace') if isinstance(value, str) else value\n"
    "            found.update(m.group(0).decode() for m in pattern.finditer(raw))\n"
    "        elif isinstance(value, (dict, list, tuple)):\n"
    "            todo.append((value, depth + 1))\n"
    "scanned.append('objects')\n"
    "found = {'found': sorted(found), 'scanned': '+'.join(scanned)}\n" + _REPORT
)


def _outcome(result) -> dict | None:
    for line in result.output.splitlines():
        if line.startswith("LETI-PROBE "):
            return json.loads(line[len("LETI-PROBE "):])
    return None


def _check(name: str, ok: bool, detail: str) -> dict:
    return {"class": name, "ok": bool(ok), "detail": detail}


def _no_report(result) -> str:
    """Why a probe printed nothing: its status and the last line of its feedback."""
    last = result.feedback.strip().splitlines()[-1] if result.feedback.strip() else ""
    return f"no report: {result.status} {last}"


def canary_folder() -> Path:
    """A folder outside /tmp (which the sandbox replaces), for the host-file canaries."""
    for base in (Path.home() / ".cache", Path.cwd(), Path("/var/tmp")):
        try:
            base.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="leti-selftest-", dir=base))
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="leti-selftest-"))


def _cwd_canaries() -> list[str]:
    """Two canaries in the caller's working directory (a project folder with its secrets): a 0600
    ``.env`` and a world-readable token (mode 0644: only the view or Landlock can keep that one)."""
    made = []
    for mode in (0o600, 0o644):
        try:
            fd, path = tempfile.mkstemp(prefix=".leti-selftest-", dir=os.getcwd())
            os.write(fd, b"leti canary")
            os.fchmod(fd, mode)
            os.close(fd)
            made.append(path)
        except OSError:
            continue
    return made


def _syscall_probe() -> str:
    numbers = {k: seccomp.SYSCALLS.get(k) for k in ("unshare", "io_uring_setup", "perf_event_open", "bpf",
                                                  "userfaultfd", "keyctl", "add_key", "ptrace", "mount")}
    return (
        "import ctypes, os\n"
        f"N = {numbers!r}\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "found = {}\n"
        "def call(name, *args):\n"
        "    if N.get(name) is None:\n"
        "        return 'unknown-arch'\n"
        "    ret = libc.syscall(N[name], *args)\n"
        "    if ret >= 0:\n"
        "        if name == 'userfaultfd':\n"
        "            os.close(ret)\n"
        "        return 'allowed'\n"
        "    return os.strerror(ctypes.get_errno())\n"
        "found['unshare(CLONE_NEWUSER)'] = call('unshare', 0x10000000)\n"
        "found['unshare(CLONE_NEWIPC)'] = call('unshare', 0x08000000)\n"
        "found['io_uring_setup'] = call('io_uring_setup', 1, None)\n"
        "found['perf_event_open'] = call('perf_event_open', None, 0, -1, -1, 0)\n"
        "found['bpf'] = call('bpf', 0, None, 0)\n"
        "found['userfaultfd'] = call('userfaultfd', 0o2000000)\n"
        "found['ptrace(TRACEME)'] = call('ptrace', 0, 0, None, None)\n"
        "found['mount'] = call('mount', None, None, None, 0, None)\n"
    )


def run_self_test(pool, *, key_id: int | None = None, harness_pids: list[int] = ()) -> list[dict]:
    """Run every probe through ``pool``; return one ``{"class", "ok", "detail"}`` per attack class.

    ``key_id``: a key the caller put in a keyring it created (the program must not read it).
    ``harness_pids``: pids of the pool's own zygote and verifier processes, as the program would see
    them in a shared PID namespace (the program must not be able to signal them).
    """
    folder = canary_folder()
    cwd_canaries: list[str] = []
    shm_key = random.randrange(0x1E000000, 0x1EFFFFFF)
    nonce, nonce2 = (f"{random.getrandbits(64):016x}" for _ in range(2))
    try:
        canary = folder / "canary.txt"
        canary.write_text("leti canary")
        os.chmod(canary, 0o600)
        cwd_canaries = _cwd_canaries()
        targets = [str(canary), "/etc/shadow"] + cwd_canaries
        probes = {**_host_probes(targets), **_isolation_probes(key_id, harness_pids, shm_key),
                  **_verdict_probes(nonce, nonce2)}
        names = list(probes)
        later = ["ipc_lookup", "cleanup_next", "after_signals", "memory_scan"]
        ordered = [n for n in names if n not in later]
        first = dict(zip(ordered, pool.run([probes[n] for n in ordered], timeout=10.0, max_output_bytes=65536)))
        # The second halves run after the first (the lookup must come after the create; the correct
        # program after the signals and the deep tree): each slot has served its hostile run by then.
        later = later * max(1, pool.num_workers)
        second_results = pool.run([probes[n] for n in later], timeout=10.0, max_output_bytes=65536)
        second: dict[str, list] = {}
        for name, result in zip(later, second_results):
            second.setdefault(name, []).append(result)
        return _judge(first, second, str(canary), shm_key) + _run_ends_and_neighbours(pool, nonce)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for path in cwd_canaries:
            Path(path).unlink(missing_ok=True)
        _remove_segment(shm_key)


def _host_probes(targets: list[str]) -> dict[str, Program | str]:
    """Files, kernel settings, devices and nested namespaces: what the program can reach on the host."""
    return {
        "host_files": (
            "import os\nfound = {}\n"
            f"for p in {targets!r}:\n"
            "    try:\n"
            "        open(p, 'rb').close()\n"
            "        found[p] = 'readable'\n"
            "    except OSError as e:\n"
            "        found[p] = e.strerror\n" + _REPORT),
        "kernel_settings": (
            "import os\nfound = {}\n"
            f"for p in {list(KERNEL_KNOBS)!r}:\n"
            "    try:\n"
            "        os.close(os.open(p, os.O_WRONLY | os.O_CLOEXEC))  # opened, never written\n"
            "        found[p] = 'writable'\n"
            "    except OSError as e:\n"
            "        found[p] = e.strerror\n" + _REPORT),
        "devices": (
            "import os\ntry:\n    found = sorted(os.listdir('/dev'))\nexcept OSError as e:\n"
            "    found = ['<' + e.strerror + '>']\n" + _REPORT),
        "nested_namespaces": _syscall_probe() + _REPORT,
    }


def _isolation_probes(key_id: int | None, harness_pids: list[int], shm_key: int) -> dict[str, Program | str]:
    """Keyrings, signals and SysV IPC: what the program can reach of other processes."""
    return {
        "keyrings": (
            "import ctypes, os\n"
            f"N = {seccomp.SYSCALLS.get('keyctl')!r}\nKEY = {key_id!r}\n"
            "libc = ctypes.CDLL(None, use_errno=True)\nfound = {}\n"
            "def keyctl(*a):\n"
            "    if N is None:\n        return 'unknown-arch'\n"
            "    r = libc.syscall(N, *a)\n"
            "    return 'allowed' if r >= 0 else os.strerror(ctypes.get_errno())\n"
            "found['session keyring'] = keyctl(0, -3, 0)\n"
            "found['user keyring'] = keyctl(0, -4, 0)\n"
            "if KEY is not None:\n"
            "    buf = ctypes.create_string_buffer(256)\n"
            "    found['caller key'] = keyctl(11, KEY, buf, 256)\n" + _REPORT),
        "signals": (
            "import os, signal\nfound = {}\n"
            "targets = {os.getppid()} | set(" + repr(sorted(set(harness_pids))) + ")\n"
            "try:\n"
            "    for p in os.listdir('/proc'):\n"
            "        if p.isdigit():\n"
            "            try:\n"
            "                name = open(f'/proc/{p}/comm').read().strip()\n"
            "            except OSError:\n"
            "                continue\n"
            "            if name in ('leti-verifier', 'leti-zygote'):\n"
            "                targets.add(int(p))\n"
            "except OSError:\n    pass\n"
            "targets.discard(os.getpid())\n"
            "for pid in sorted(targets):\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGSTOP)\n"
            "        found[str(pid)] = 'stopped'\n"
            "    except OSError as e:\n"
            "        found[str(pid)] = e.strerror\n" + _REPORT),
        "ipc_create": (
            "import ctypes, os\n"
            f"N = {seccomp.SYSCALLS.get('shmget')!r}\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"r = libc.syscall(N, {shm_key}, 4096, 0o1600) if N else -1\n"
            "found = {'created': r >= 0, 'error': os.strerror(ctypes.get_errno()) if r < 0 else ''}\n" + _REPORT),
        "ipc_lookup": (
            "import ctypes, os\n"
            f"N = {seccomp.SYSCALLS.get('shmget')!r}\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"r = libc.syscall(N, {shm_key}, 0, 0) if N else -1\n"
            "found = {'visible': r >= 0}\n" + _REPORT),
    }


def _verdict_probes(nonce: str, nonce2: str) -> dict[str, Program | str]:
    """Forged verdicts, leftovers between runs, memory of earlier runs, shadowed names."""
    return {
        "verdict": Program(
            "import sys\n"
            "g = sys._getframe(1).f_globals\n"
            "real = g.get('encode')\n"
            "def forged(value, register, depth=0):\n"
            "    return ['mod', 'this'] if value == -1 else ['ty', 'builtins', 'eval']\n"
            "if real is not None:\n"
            "    g['encode'] = forged\n"
            "def add(a, b):\n    return -1 if a == 1 else a - b\n",
            "try:\n    r = add(1, 2)\nexcept BaseException:\n    r = 3\nassert r == 3\nassert add(10, 5) == 15\n"),
        "cleanup_tree": (
            "import os\nfound = {'depth': 0, 'files': 0}\n"
            "try:\n"
            "    for i in range(1100):\n"
            "        os.mkdir('d')\n        os.chdir('d')\n        found['depth'] += 1\n"
            "    for i in range(20000):\n"
            "        open(f'f{i}', 'w').close()\n        found['files'] += 1\n"
            "except OSError as e:\n    found['stopped'] = e.strerror\n" + _REPORT),
        "cleanup_next": Program(_ADD, _TESTS),
        "memory_earlier": Program(_ADD + f"# LETI-SOLNONCE-{nonce}\n", f"assert add(1, 2) == 3  # LETI-TESTNONCE-{nonce}\n"),
        "memory_scan": Program(_MEMORY_SCAN + _ADD, f"assert add(1, 2) == 3  # LETI-TESTNONCE-{nonce2}\n"),
        "free_names": Program(
            "class math:\n    @staticmethod\n    def isclose(*a, **k):\n        return True\n"
            "def add(a, b):\n    return a - b\n",
            "assert math.isclose(add(1, 2), 3)\nassert math.isclose(add(10, 5), 15)\n"),
        "after_signals": Program(_ADD, _TESTS),
    }


def _judge(first: dict, second: dict, canary: str, shm_key: int) -> list[dict]:
    checks = []
    found = _outcome(first["host_files"]) or {}
    checks.append(_check("1 host files", found and all(v != "readable" for v in found.values()),
                         json.dumps(found) if found else _no_report(first["host_files"])))
    found = _outcome(first["kernel_settings"]) or {}
    checks.append(_check("2 kernel settings", found and all(v != "writable" for v in found.values()),
                         json.dumps(found) if found else _no_report(first["kernel_settings"])))
    found = _outcome(first["devices"]) or ["<no report>"]
    extra = [d for d in found if d not in ALLOWED_DEVICES and not d.startswith("<")]
    checks.append(_check("3 devices", found != ["<no report>"] and not extra,
                         f"/dev holds {', '.join(found)}" if not extra else f"extra nodes: {', '.join(extra)}"))
    found = _outcome(first["nested_namespaces"]) or {}
    checks.append(_check("4 namespaces, io_uring, perf, bpf, userfaultfd, ptrace",
                         found and all(v not in ("allowed",) and "Bad address" not in v for v in found.values()),
                         json.dumps(found)))
    found = _outcome(first["keyrings"]) or {}
    checks.append(_check("5 keyrings", found and all(v != "allowed" for v in found.values()), json.dumps(found)))
    found = _outcome(first["signals"]) or {}
    after = second["after_signals"]
    checks.append(_check("6 signals to the judges",
                         bool(found) and all(v != "stopped" for v in found.values()) and all(r.passed for r in after),
                         json.dumps(found) + f"; next correct programs: {[r.status for r in after]}"))
    created = _outcome(first["ipc_create"]) or {}
    visible = [_outcome(r) or {} for r in second["ipc_lookup"]]
    checks.append(_check("7 SysV IPC between runs", bool(created) and all("visible" in v for v in visible)
                         and not any(v.get("visible") for v in visible),
                         (f"created in run 1: {created.get('created')} ({created.get('error') or 'ok'}); "
                          if created else _no_report(first["ipc_create"]) + "; ")
                         + f"visible later: {[v.get('visible') for v in visible]}"))
    result = first["verdict"]
    checks.append(_check("8 forged verdict", not result.passed and result.status != "sandbox_error",
                         f"{result.status}: {result.feedback.strip().splitlines()[-1] if result.feedback else ''}"))
    found = _outcome(first["cleanup_tree"]) or {}
    nxt = second["cleanup_next"]
    checks.append(_check("9 cleanup of a huge tree", first["cleanup_tree"].status != "sandbox_error"
                         and all(r.passed for r in nxt),
                         f"left {json.dumps(found)}; next correct programs: {[r.status for r in nxt]}"))
    scans = [_outcome(r) or {} for r in second["memory_scan"]]
    checks.append(_check("8b tests and other runs' programs out of reach",
                         bool(scans) and all(s.get("scanned") for s in scans)
                         and not any(s.get("found") for s in scans),
                         "; ".join(f"scanned {s.get('scanned')}: found {s.get('found')}" for s in scans)))
    result = first["free_names"]
    checks.append(_check("10 free names in the tests", not result.passed, result.status))
    return checks


def _run_ends_and_neighbours(pool, nonce: str) -> list[dict]:
    """A run ends whole at its verdict (daemons, sleepers, busy children), its wall time limit holds
    from outside, a program keeps to its slot's core, and no program listens on an abstract unix
    socket name the caller can reach (nor reaches one of the caller's)."""
    import socket
    import threading
    import time

    tag = "leti-" + nonce[:10]  # a process name (15 characters at most) no other process has
    daemon = (
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None)\n"
        "def child(detach):\n"
        "    if os.fork() == 0:\n"
        "        if detach:\n"
        "            os.setsid()\n"
        "            if os.fork():\n"
        "                os._exit(0)\n"
        f"        libc.prctl(15, {tag.encode()!r}, 0, 0, 0)\n"
        "        end = time.monotonic() + 15\n"
        "        while time.monotonic() < end:\n"
        "            time.sleep(0.05) if detach else sum(range(1000))\n"
        "        os._exit(0)\n"
        "child(True)\nchild(False)\ntime.sleep(0.2)\n"
        "found = {'started': True}\n" + _REPORT)
    affinity = (
        "import os\nbefore = sorted(os.sched_getaffinity(0))\n"
        "try:\n    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))\n    how = 'widened'\n"
        "except OSError as e:\n    how = e.strerror\n"
        "found = {'before': before, 'after': sorted(os.sched_getaffinity(0)), 'call': how}\n" + _REPORT)
    caller_name, program_name = f"\0leti-selftest-{nonce}", f"\0leti-selftest-{nonce}-program"
    sockets = (
        "import socket, time\nfound = {}\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"try:\n    s.connect({caller_name!r})\n    found['connect'] = 'connected'\n"
        "except OSError as e:\n    found['connect'] = e.strerror\n"
        "s.close()\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"try:\n    s.bind({program_name!r})\n    s.listen(1)\n    found['listen'] = 'listening'\n"
        "except OSError as e:\n    found['listen'] = e.strerror\n"
        "print('LETI-PROBE-EARLY', flush=True)\n"
        "if found['listen'] == 'listening':\n    time.sleep(1.0)\n" + _REPORT)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    reached: list[str] = []
    stop = threading.Event()

    def knock() -> None:  # the caller's side: can it connect to what the program listens on?
        while not stop.is_set():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(program_name)
                reached.append("connected")
                return
            except OSError:
                pass
            finally:
                probe.close()
            stop.wait(0.02)

    try:
        listener.bind(caller_name)
        listener.listen(1)
        knocker = threading.Thread(target=knock, daemon=True)
        knocker.start()
        cmdline = ("import sys\n"
                   "try:\n    found = {'cmdline': open('/proc/self/cmdline', 'rb').read().decode('utf-8', 'replace')}\n"
                   "except OSError as e:\n    found = {'cmdline': '<' + e.strerror + '>'}\n"
                   "found['argv'] = ' '.join(sys.argv + getattr(sys, 'orig_argv', []))\n"
                   "found['harness'] = ' '.join([str(getattr(m, '__file__', '') or '') for m in list(sys.modules.values())]\n"
                   "    + [str(k) for k in sys.path_importer_cache] + sys.path)\n" + _REPORT)
        watch = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.inotify_init1(0)\n"
                 "if fd < 0:\n    found = {'inotify': os.strerror(ctypes.get_errno())}\nelse:\n"
                 f"    w = libc.inotify_add_watch(fd, {os.getcwd().encode()!r}, 0x100)\n"
                 "    found = {'inotify': 'watching' if w >= 0 else os.strerror(ctypes.get_errno())}\n" + _REPORT)
        runs = pool.run([daemon, affinity, sockets, cmdline, watch], timeout=10.0, max_output_bytes=65536)
        stop.set()
        knocker.join(5)
    finally:
        stop.set()
        listener.close()
    time.sleep(0.1)  # 100 ms after the last verdict
    alive = _processes_named(tag)
    hog = ("import os, time\nkids = []\nfor _ in range(6):\n    pid = os.fork()\n    if pid == 0:\n"
           "        block = bytearray(150 * 2**20)  # zero pages: written below, so they are resident\n"
           "        for i in range(0, len(block), 4096):\n            block[i] = 1\n"
           "        time.sleep(3)\n        os._exit(0)\n    kids.append(pid)\n"
           "held = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in kids)\n"
           "found = {'children that held 150 MiB to the end': held}\n" + _REPORT)
    # 4 MiB files of real bytes, then empty files, past a 16 MiB, 64-file folder; all in its own folder
    fill = ("import os, time\nfound = {'MiB written': 0, 'files made': 0}\n"
            "try:\n    for i in range(12):\n        with open(f'fill-{i}', 'wb') as f:\n"
            "            f.write(b'x' * (4 * 2**20))\n        found['MiB written'] += 4\n        time.sleep(0.03)\n"
            "except OSError as e:\n    found['write'] = e.strerror\n"
            "for i in range(12):\n    os.remove(f'fill-{i}') if os.path.exists(f'fill-{i}') else None\n"
            "try:\n    for i in range(400):\n        open(f'empty-{i}', 'wb').close()\n        found['files made'] += 1\n"
            "        time.sleep(0.001)\nexcept OSError as e:\n    found['create'] = e.strerror\n" + _REPORT)
    # A pool of its own, in the same mode, whose slot cap (2 x 256 + 64 MiB) the 900 MiB exceed,
    # and whose runs' folders hold 16 MiB in 64 files.
    from .pool import ExecutorPool

    with ExecutorPool(1, memory_mb=256, tmpfs_mb=16, tmpfs_inodes=64, disable=pool.config["disable"],
                      python=pool.python, allow_unconfined=pool.allow_unconfined) as small:
        memory, disk = small.run([hog, fill], timeout=8.0, memory_mb=256)
    started = time.monotonic()
    sleeper = pool.run(["import time\ntime.sleep(30)"], timeout=1.0)[0]
    wall = time.monotonic() - started
    checks = [_check("13 a run ends whole", bool(_outcome(runs[0])) and not alive,
                     f"{len(alive)} of the run's processes alive 100 ms after its verdict" if alive
                     else (_no_report(runs[0]) if not _outcome(runs[0]) else "none alive 100 ms after the verdict")),
              _check("14 wall time limit from outside", sleeper.status == "timeout" and wall < 1.6,
                     f"a sleeping program with a 1 s limit: {sleeper.status} after {wall:.2f} s")]
    found = _outcome(runs[1]) or {}
    checks.append(_check("15 one core per slot", bool(found) and found.get("after") == found.get("before"),
                         json.dumps(found) if found else _no_report(runs[1])))
    found = _outcome(runs[2]) or {}
    checks.append(_check("16 abstract unix sockets", bool(found) and found.get("connect") != "connected" and not reached,
                         (json.dumps(found) if found else _no_report(runs[2]))
                         + ("; the caller connected to the program's socket" if reached else "")))
    found = _outcome(runs[3]) or {}
    here = os.path.dirname(os.path.abspath(__file__))
    # the command line and sys.argv name neither the caller's folders nor leti's; nor do the modules
    # and import caches programs inherit name leti's sandbox folder (the interpreter's own paths may)
    shown = sorted({f"{where} names {p}" for where in ("cmdline", "argv") for p in (os.getcwd(), os.path.expanduser("~"), here)
                    if p not in ("/", "") and p in found.get(where, "")}
                   | ({f"modules name {here}"} if here in found.get("harness", "") else set()))
    checks.append(_check("17 no host path in the command line", bool(found) and not shown,
                         ("; ".join(shown) if shown
                          else f"/proc/self/cmdline: {found.get('cmdline', '').rstrip(chr(0))[:60]!r}, "
                               f"sys.argv: {found.get('argv', '')[:60]!r}")
                         if found else _no_report(runs[3])))
    held = (_outcome(memory) or {}).get("children that held 150 MiB to the end")
    checks.append(_check("19 the run's memory as a whole", memory.status == "memory_exceeded" or (held is not None and held < 6),
                         f"6 children of 150 MiB each under a 576 MiB cap: {memory.status}"
                         + (f", {held} of them held it to the end" if held is not None else "")))
    found = _outcome(disk)
    stopped = disk.status == "error" and "No space left" in disk.feedback  # ended by the folder watch
    checks.append(_check("20 disk use of a run", stopped or (
        found is not None and found["MiB written"] <= 16 and found["files made"] <= 64),
        f"12 files of 4 MiB, then 400 empty files, into a 16 MiB, 64-file folder: "
        + (json.dumps(found) if found else f"{disk.status}: {disk.feedback.strip()[:90]}")))
    found = _outcome(runs[4]) or {}
    own_view = bool(pool.protections().get("minimal_root"))  # then that path is the view's (masked), not the host's
    checks.append(_check("18 watching the caller's folders", bool(found) and (found.get("inotify") != "watching" or own_view),
                         (json.dumps(found) + (" (in the sandbox's own view)" if own_view and found.get("inotify") == "watching" else ""))
                         if found else _no_report(runs[4])))
    return checks


def _processes_named(name: str) -> list[int]:
    """Live (not zombie) processes whose name is ``name``, as the host's /proc shows them."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    head, _, rest = f.read().rpartition(")")
                if head.split("(", 1)[1] == name and rest.split()[0] not in ("Z", "X"):
                    out.append(int(entry))
            except (OSError, IndexError):
                continue
    return out


def _remove_segment(key: int) -> None:
    """If a probe's segment leaked into our IPC namespace, remove it (never leave one behind)."""
    try:
        with open("/proc/sysvipc/shm") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for row in rows:
        if row and int(row[0]) == key:
            libc.shmctl(int(row[1]), 0, None)  # IPC_RMID
