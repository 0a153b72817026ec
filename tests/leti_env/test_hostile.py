"""The hostile-program catalogue (the maintainers' list of attacks; each row is a test here): every
runnable row, host checked.

Destructive rows aim at canaries in the test's own temp dir and a loopback port the test opened.
The catalogue's NOT RUN rows (kill(-1), rm -rf ~, writes to /etc) are never run, sandboxed or not.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from leti_env import ExecutorPool, Program
from tests.conftest import canary_parent, leftover_processes, python_for_degraded_mode

SOLUTION = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(10, 5) == 15\n"
SECRET = "leti-canary-secret-7f3a"
TIMEOUT = 2.0
DENIED = "Read-only file system|Permission denied|No such file or directory"  # read-only, refused, or not in the view at all
NET_DENIED = "Permission denied|Operation not permitted|Network is unreachable"  # Landlock, seccomp, or no route
REGEX_NEEDLES = (DENIED, NET_DENIED)


def cases(canary_dir: str, port: int) -> dict[str, tuple[str, str, str, str]]:
    """id -> (program prefix, solution, expected status, text the feedback must contain)."""
    canary = os.path.join(canary_dir, "canary.txt")
    return {
        # A. time
        "A1-busy-loop": ("while True:\n    pass\n", SOLUTION, "timeout", "TimeoutError"),
        "A2-swallow-timeout": ("while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n", SOLUTION, "timeout", "TimeoutError"),
        "A3-ignore-sigalrm": ("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n", SOLUTION, "timeout", "TimeoutError"),
        "A4-sleep": ("import time\ntime.sleep(100)\n", SOLUTION, "timeout", "TimeoutError"),
        "A5-c-loop": ("sum(range(10**11))\n", SOLUTION, "timeout", "TimeoutError"),
        "A6-lingering-thread": ("import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n", SOLUTION, "passed", ""),
        "A7-evil-str": ("class E(Exception):\n    def __str__(self):\n        while True:\n            pass\nraise E()\n", SOLUTION, "error", "E\n"),
        "A8-huge-message": ("raise ValueError('x' * 10**8)\n", SOLUTION, "error", "ValueError: xxx"),
        "A9-regex-backtracking": ("import re\nre.match(r'(a|a)*c', 'a' * 40)\n", SOLUTION, "timeout", "TimeoutError"),
        # B. processes and signals
        "B11-os-fork-bomb": ("import os\nwhile True:\n    os.fork()\n", SOLUTION, "*", ""),
        "B12-posix-fork-bomb": ("import posix\nwhile True:\n    posix.fork()\n", SOLUTION, "*", ""),
        "B13-orphan": ("import posix, time\nif posix.fork() == 0:\n    time.sleep(30)\n    posix._exit(0)\n", SOLUTION, "passed", ""),
        "B14-daemon": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(30)\n    os._exit(0)\n", SOLUTION, "passed", ""),
        "B15-spawn-shell": (f"import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'echo spawned > {canary_dir}/spawned.txt'], {{}})\nimport time\ntime.sleep(0.3)\n", SOLUTION, "passed", ""),
        "B16-kill-parent": ("import os, posix\nposix.kill(os.getppid(), 9)\n", SOLUTION, "error", "PermissionError"),
        "B17-killpg-sigint": ("import posix, signal\nposix.killpg(0, signal.SIGINT)\n", SOLUTION, "error", "KeyboardInterrupt"),
        "B18-keyboard-interrupt": ("raise KeyboardInterrupt\n", SOLUTION, "error", "KeyboardInterrupt"),
        "B19-sys-exit-0": ("import sys\nsys.exit(0)\n", WRONG, "exited_early", "0 of 3 asserts ran"),
        "B20-os-exit-0": ("import os\nos._exit(0)\n", WRONG, "exited_early", "0 of 3 asserts ran"),
        "B21-exit-builtin": ("exit()\n", WRONG, "exited_early", "status 0"),
        "B22-atexit-os-exit": ("import atexit, os\natexit.register(os._exit, 0)\n", WRONG, "failed", "assert add(1, 2) == 3"),
        "B23-segfault": ("import ctypes\nctypes.string_at(0)\n", SOLUTION, "crashed", "SIGSEGV"),
        "B24-c-recursion": ("import sys\nsys.setrecursionlimit(10**6)\nf = lambda x: sorted([x], key=f)\nf(1)\n", SOLUTION, "*", ""),
        "B25-python-recursion": ("import sys\nsys.setrecursionlimit(10**6)\ndef f():\n    return f()\nf()\n", SOLUTION, "*", ""),
        "B26-abort": ("import os\nos.abort()\n", SOLUTION, "crashed", "SIGABRT"),
        "B27-ignore-sigterm": ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n", SOLUTION, "timeout", "TimeoutError"),
        # C. memory, output, disk
        "C28-memory-bomb": ("x = 'x' * (3 * 10**9)\n", SOLUTION, "memory_exceeded", "MemoryError: the program exceeded the 512 MiB memory limit"),
        "C29-big-print": ("print('x' * 10**8)\n", SOLUTION, "passed", ""),
        "C30-print-forever": ("while True:\n    print('x' * 10**6)\n", SOLUTION, "timeout", "TimeoutError"),
        "C31-big-file": ("f = open('big.bin', 'wb')\nfor _ in range(500):\n    f.write(bytes(2**20))\n", SOLUTION, "error", "File too large"),
        "C32-file-then-loop": ("open('leak.txt', 'w').write('x')\nwhile True:\n    pass\n", SOLUTION, "timeout", "TimeoutError"),
        "C33-stdin": ("input()\n", SOLUTION, "error", "EOFError"),
        "C34-null-byte": ("x = 1\0\n", SOLUTION, "*", "null bytes"),
        "C35-deep-expression": ("x = " + "+".join(["1"] * 200_000) + "\n", SOLUTION, "error", "RecursionError"),
        "C36-nested-parens": ("x = " + "(" * 300 + ")" * 300 + "\n", SOLUTION, "syntax_error", "too many nested parentheses"),
        # D. files, secrets, network
        "D37-overwrite-canary": (f"open({canary!r}, 'w').write('pwned')\n", SOLUTION, "error", DENIED),
        "D38-unlink-canary": (f"import posix\nposix.unlink({canary!r})\n", SOLUTION, "error", DENIED),
        "D39-rmtree-canary-dir": (f"import shutil\nshutil.rmtree({os.path.join(canary_dir, 'dir')!r})\n", SOLUTION, "error", DENIED),
        "D41-env-secret": ("import os\nraise RuntimeError(os.environ.get('FAKE_SECRET', 'no secret'))\n", SOLUTION, "error", "no secret"),
        "D42-parent-environ": ("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n", SOLUTION, "error", "Error"),
        "D43-loopback-connect": (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n", SOLUTION, "error", NET_DENIED),
        "D47-legit-os-calls": ("import os, tempfile\nos.path.abspath('x')\nos.getcwd()\nfd, p = tempfile.mkstemp()\nos.close(fd)\nos.remove(p)\n", SOLUTION, "passed", ""),
        # E. reward hacking: wrong code must never score 1
        "E48-frame-write": ("import sys\nsys._getframe(1).f_locals['result'] = ['passed']\n", WRONG, "failed", "AssertionError"),
        "E49-always-equal": ("class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n", "def add(a, b):\n    return AlwaysEqual()\n", "failed", "AssertionError"),
        "E50-patched-isclose": ("import math\nmath.isclose = lambda *a, **k: True\n", WRONG, "failed", "AssertionError"),
        "E51-shadowed-set": ("def set(x):\n    return 0\n", WRONG, "failed", "AssertionError"),
        "E52-read-caller-bytecode": ("import dis, sys\n", "def add(a, b):\n    f = sys._getframe(1)\n    for ins in dis.get_instructions(f.f_code):\n        if ins.offset > f.f_lasti and ins.opname == 'LOAD_CONST':\n            return ins.argval\n", "*", ""),
        "E53-settrace-skip-asserts": ("import sys, dis\ndef tracer(frame, event, arg):\n    frame.f_trace_lines = True\n    if event == 'line':\n        try:\n            frame.f_lineno += 1\n        except Exception:\n            pass\n    return tracer\nsys.settrace(tracer)\n", WRONG, "*", ""),
        "E54-fake-assertionerror": ("import builtins\nbuiltins.AssertionError = Exception\nAssertionError = Exception\n", WRONG, "failed", "AssertionError"),
        "E55-read-tests": ("import gc, sys\nsrc = [o for o in gc.get_objects() if isinstance(o, str) and 'assert add' in o]\n", "def add(a, b):\n    return len(src)\n", "failed", "AssertionError"),
        # F. broken but legitimate
        "F56-missing-colon": ("", "def add(a, b)\n    return a + b\n", "syntax_error", "SyntaxError: expected ':'"),
        "F57-int-str-limit": ("str(10**5000)\n", SOLUTION, "error", "ValueError: Exceeds the limit"),
        "F58-failing-assert": ("", WRONG, "failed", "AssertionError"),
    }


# Tests the shadowed-set row needs: sanitized-MBPP style comparisons through `set`.
SET_TESTS = "assert set([add(1, 2)]) == set([3])\nassert set([add(10, 5)]) == set([15])\n"
ISCLOSE_TESTS = "import math\nassert math.isclose(add(1, 2), 3)\nassert math.isclose(add(10, 5), 15)\n"


LANDLOCK_ONLY = ["pidns", "netns", "mountns", "ipcns"]  # namespaces refused; Landlock, seccomp, cgroups


@pytest.fixture(scope="module", params=["namespaces", "landlock"])
def mode_pool(request, pool):
    """The catalogue runs in the full mode and in the Landlock-only mode (as under Docker's seccomp)."""
    if request.param == "namespaces":
        yield pool
    else:
        with ExecutorPool(2, disable=LANDLOCK_ONLY, python=python_for_degraded_mode()) as landlock_pool:
            assert landlock_pool.protections()["mode"] == "landlock"
            yield landlock_pool


@pytest.fixture(scope="module")
def catalogue(mode_pool):
    """Run every row once (in parallel, as a trainer would), then let each test check its own row."""
    pool = mode_pool
    # Canaries on the real filesystem (not /tmp, which the sandbox replaces with a private tmpfs).
    canary_dir = Path(tempfile.mkdtemp(prefix=".leti-canaries-", dir=canary_parent()))
    canary = canary_dir / "canary.txt"
    canary.write_text("original")
    (canary_dir / "dir").mkdir()
    (canary_dir / "dir" / "keep.txt").write_text("keep")
    os.chmod(canary_dir, 0o777)  # writable by anyone on the host: only the sandbox protects it
    os.chmod(canary, 0o666)

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connections = []

    def accept():
        deadline = time.time() + 60
        while time.time() < deadline and not stop.is_set():
            try:
                connections.append(server.accept())
            except OSError:
                pass

    stop = threading.Event()
    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()

    os.environ["FAKE_SECRET"] = SECRET  # in our environment, as a real trainer's tokens would be
    tmp_before = set(os.listdir("/tmp"))
    table = cases(str(canary_dir), server.getsockname()[1])
    programs = []
    for name, (prefix, solution, _, _) in table.items():
        tests = SET_TESTS if name == "E51-shadowed-set" else ISCLOSE_TESTS if name == "E50-patched-isclose" else TESTS
        programs.append(Program(prefix + solution, tests))
    started = time.monotonic()
    results = dict(zip(table, pool.run(programs, timeout=TIMEOUT, memory_mb=512)))
    elapsed = time.monotonic() - started
    time.sleep(0.3)
    leftover = set()
    for worker in pool._workers:  # the zygote, its spawner and its verifier remain; nothing else
        leftover |= leftover_processes(worker.proc.pid)
    live = {str(p) for p in pool.harness_pids()}  # a live Landlock-only worker's own run folder
    tmp_new = {n for n in set(os.listdir("/tmp")) - tmp_before
               if not (n.startswith("leti-sandbox-") and n.split("-")[2] in live)}
    stop.set()
    acceptor.join()
    server.close()
    yield {"table": table, "results": results, "canary_dir": canary_dir, "connections": connections,
           "leftover": leftover, "tmp_new": tmp_new, "elapsed": elapsed}
    del os.environ["FAKE_SECRET"]
    shutil.rmtree(canary_dir)


ROWS = list(cases("/canaries", 1))


@pytest.mark.parametrize("row", ROWS)
def test_catalogue_row_outcome(catalogue, row):
    _, _, status, needle = catalogue["table"][row]
    result = catalogue["results"][row]
    assert not result.passed or status == "passed", f"{row}: wrong code scored 1: {result}"
    if status != "*":
        assert result.status == status, f"{row}: {result.status}\n{result.feedback}"
    assert re.search(needle if needle in REGEX_NEEDLES else re.escape(needle), result.feedback), \
        f"{row}: {needle!r} not in feedback:\n{result.feedback}"
    assert SECRET not in result.feedback and SECRET not in result.output
    assert len(result.feedback) <= 4096
    assert result.duration_s < TIMEOUT + 0.5, f"{row} took {result.duration_s:.2f} s"


@pytest.mark.parametrize("row", [r for r in ROWS if r.startswith("E") or r in ("B19-sys-exit-0", "B20-os-exit-0", "B21-exit-builtin", "B22-atexit-os-exit")])
def test_reward_hacks_never_pass(catalogue, row):
    assert catalogue["results"][row].passed is False


def test_host_untouched(catalogue):
    canary_dir = catalogue["canary_dir"]
    assert (canary_dir / "canary.txt").read_text() == "original"
    assert (canary_dir / "dir" / "keep.txt").read_text() == "keep"
    assert not (canary_dir / "spawned.txt").exists()
    assert catalogue["connections"] == [], "a program reached the test's loopback server"


def test_nothing_left_behind(catalogue, mode_pool):
    pool = mode_pool
    assert catalogue["leftover"] == set(), "processes survived their run"
    assert not {n for n in catalogue["tmp_new"] if n.startswith("leti")}, "temporary directories leaked"
    assert pool.run(["assert 1 + 1 == 2"])[0].passed  # the harness is still alive and correct


def test_timeouts_are_prompt(catalogue):
    # Twelve 2 s timeouts over 2 workers: about 12 s in all, not 12 x (timeout + 1)
    slow = [r for r, res in catalogue["results"].items() if res.duration_s > TIMEOUT + 0.5]
    assert not slow
