"""The executor on weaker hosts: no namespaces/cgroups (degraded), and as an unprivileged user."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from leti_env import ExecutorPool, Program, SandboxUnavailableError, SandboxWarning
from tests.conftest import REPO, canary_parent, leftover_processes, process_alive, python_for_degraded_mode

SOLUTION = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(10, 5) == 15\n"
ORPHAN = "import os, time\nif os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)\n"
DAEMON = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(30)\n    os._exit(0)\n"
ALWAYS_EQUAL = "class E:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E()\n"
NO_NAMESPACES = ["pidns", "netns", "mountns", "ipcns", "cgroup"]


def test_degraded_host_warns_and_still_kills_process_trees():
    with pytest.warns(SandboxWarning, match="pid_namespace.*network_namespace") as caught:
        pool = ExecutorPool(2, disable=NO_NAMESPACES, python=python_for_degraded_mode())
        report = pool.protections()
    assert caught[0].filename == __file__  # the warning names the caller's line, not leti's internals
    with pool:
        assert report["pid_namespace"] is False and report["process_tree_kill"].startswith("subreaper")
        results = pool.run([Program(ORPHAN + SOLUTION, TESTS), Program(DAEMON + SOLUTION, TESTS),
                            Program("while True:\n    pass\n", TESTS), Program(ALWAYS_EQUAL, TESTS),
                            Program("import sys\nsys.exit(0)\n", TESTS)], timeout=1.5)
        assert [r.status for r in results] == ["passed", "passed", "timeout", "failed", "exited_early"]
        time.sleep(0.3)
        for worker in pool._workers:
            assert not leftover_processes(worker.proc.pid), "an orphan or daemon survived"


def test_without_a_minimal_root_a_python_nobody_cannot_read_is_refused_in_one_line():
    """As root without namespaces, programs run as uid nobody and read Python where it lies. Where they
    cannot (a Python under /root), the pool refuses rather than leave them CAP_DAC_READ_SEARCH, and the
    error names the fixes; with a Python they can read, the same pool runs with no capability at all."""
    import sys

    good = python_for_degraded_mode()
    if good == sys.executable:
        pytest.skip("uid nobody can read this Python: nothing to refuse")
    pool = ExecutorPool(1, disable=NO_NAMESPACES)
    with pytest.raises(SandboxUnavailableError, match=r"uid nobody cannot read this Python .*python=.*chmod o\+x") as info:
        pool.run(["pass"])
    assert "\n" not in str(info.value)
    probe = ("import ctypes, os\n"  # capget(2): no /proc in this mode
             "class H(ctypes.Structure):\n    _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]\n"
             "class D(ctypes.Structure):\n    _fields_ = [(n, ctypes.c_uint32) for n in ('eff', 'prm', 'inh')]\n"
             "data = (D * 2)()\nassert ctypes.CDLL(None).capget(ctypes.byref(H(0x20080522, 0)), data) == 0\n"
             "print([sum(getattr(d, n) for d in data) for n in ('eff', 'prm')], os.getuid())\n")
    with ExecutorPool(1, disable=NO_NAMESPACES, python=good) as pool:
        result = pool.run([probe])[0]
    assert result.passed and result.output.strip() == "[0, 0] 65534", result


def test_strict_mode_refuses_missing_protections(monkeypatch):
    monkeypatch.setenv("LETI_SANDBOX", "strict")
    pool = ExecutorPool(1, disable=["netns"])
    with pytest.raises(SandboxUnavailableError, match="network_namespace"):
        pool.run(["pass"])


UNPRIVILEGED_SCRIPT = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
from execution import ExecutorPool, Program
canary = sys.argv[2]
sol, tests = "def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\nassert add(10, 5) == 15\n"
programs = [
    Program(sol, tests),
    Program(f"open({canary!r}, 'w').write('pwned')\n" + sol, tests),
    Program(%(orphan)r + sol, tests),
    Program(%(always_equal)r, tests),
    Program("import sys\nsys.exit(0)\n", tests),
    Program("while True:\n    pass\n", tests),
    Program("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n" + sol, tests),
]
with ExecutorPool(2) as pool:
    report = pool.protections()
    results = pool.run(programs, timeout=1.5)
    pids = pool.harness_pids()
    cmdline = pool.run(["print(open('/proc/self/cmdline', 'rb').read().split(b'\\0')[0])"])[0].output
print(json.dumps({"report": report, "statuses": [r.status for r in results], "feedback": [r.feedback for r in results],
                  "pids": pids, "cmdline": cmdline}))
''' % {"orphan": ORPHAN, "always_equal": ALWAYS_EQUAL}


def _can_run_as_nobody(python: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(python):
        return False
    probe = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", python, "-c", "pass"],
                           capture_output=True)
    return probe.returncode == 0


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not _can_run_as_nobody(SYSTEM_PYTHON), reason="needs root, setpriv and a system python to become uid nobody")
def test_unprivileged_user_gets_namespaces_and_a_read_only_root():
    # Put a copy of the (stdlib-only) executor where uid nobody can read it, and a world-writable
    # canary on the real filesystem, so that only the sandbox's read-only root can protect it.
    base = Path(tempfile.mkdtemp(prefix=".leti-nobody-", dir=canary_parent(for_nobody=True)))
    try:
        shutil.copytree(REPO / "leti_env" / "execution", base / "pkg" / "execution",
                        ignore=shutil.ignore_patterns("__pycache__"))
        canary = base / "canary.txt"
        canary.write_text("original")
        for path in [base, *base.rglob("*")]:
            os.chmod(path, 0o777 if path.is_dir() else 0o666)
        (base / "run.py").write_text(UNPRIVILEGED_SCRIPT)
        proc = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", SYSTEM_PYTHON,
                               str(base / "run.py"), str(base / "pkg"), str(canary)],
                              capture_output=True, text=True, timeout=120, cwd="/", env={"PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        report = out["report"]
        if not report["user_namespace"]:
            pytest.skip(f"unprivileged user namespaces are disabled here: {report['notes']}")
        assert report["pid_namespace"] and report["network_namespace"] and report["readonly_root"]
        assert out["statuses"] == ["passed", "error", "passed", "failed", "exited_early", "timeout", "error"], out
        assert re.search("Read-only file system|No such file or directory", out["feedback"][1])  # not writable, or not there
        assert re.search("Permission denied|Network is unreachable", out["feedback"][6])  # Landlock, or no route
        assert canary.read_text() == "original"
        time.sleep(0.3)
        assert out["pids"] and not [p for p in out["pids"] if process_alive(p)], "a sandboxed process outlived its pool"
        assert out["cmdline"].strip() == "b'leti-sandbox'", out["cmdline"]  # no host path (the checkout's) in argv
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_interpreter_whose_packages_live_under_tmp(tmp_path):
    """A venv under /tmp (a clone in /tmp, CI scratch space): the run's private /tmp must not hide it,
    and it stays read-only inside the sandbox."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "leti_probe_module.py").write_text("VALUE = 42\n")
    os.chmod(tmp_path, 0o755)
    with ExecutorPool(1, python=str(venv / "bin" / "python")) as pool:
        results = pool.run([
            Program("import leti_probe_module\ndef f():\n    return leti_probe_module.VALUE\n", "assert f() == 42\n"),
            f"open({str(site / 'leti_probe_module.py')!r}, 'a')\n",
            "import leti_probe_module\nopen('/tmp/run/x', 'w').write('the run folder is still writable')\n",
        ] * 2)
    assert [r.status for r in results] == ["passed", "error", "passed"] * 2, [r.feedback for r in results]
    assert re.search("Read-only file system|Permission denied", results[1].feedback)
    assert (site / "leti_probe_module.py").read_text() == "VALUE = 42\n"


def test_without_a_mount_namespace_slots_are_not_restarted_and_leave_no_folder():
    """No mount namespace means no /proc of our own, so no PID namespace either: the zygote then
    kills process trees as a subreaper, keeps its spawner, and removes its run folder and cgroups on exit."""
    before = {n for n in os.listdir("/tmp") if n.startswith("leti-sandbox-")}
    with ExecutorPool(1, disable=["mountns"], python=python_for_degraded_mode()) as pool:
        report = pool.protections()
        launcher = pool._workers[0].proc.pid
        cgroups = pool._workers[0].cgroup_paths
        results = pool.run([Program(ORPHAN + SOLUTION, TESTS)] * 5)
        assert pool._workers[0].proc.pid == launcher, "the slot was restarted"
    assert not [p for p in cgroups if os.path.exists(p)], "the slot's cgroups outlived it"
    assert [r.status for r in results] == ["passed"] * 5
    assert not report["pid_namespace"] and report["mode"] == "landlock"
    assert {n for n in os.listdir("/tmp") if n.startswith("leti-sandbox-")} == before


def test_spawner_remembers_a_bounded_number_of_exit_statuses():
    """The spawner keeps each child's exit status until the zygote asks; for judged runs it never
    asks. Those must not pile up: a slot lives for millions of runs, and every fork copies the
    spawner's memory map, so a growing table would slow every later run."""
    script = (
        "import os, signal, sys, time\n"
        f"sys.path.insert(0, {str(REPO / 'leti_env/execution/sandbox')!r})\n"
        "import spawner\n"
        "signal.signal(signal.SIGCHLD, spawner._reap)\n"
        "pids = []\n"
        "for i in range(spawner._MAX_ENDED + 60):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os._exit(i % 7)\n"
        "    pids.append(pid)\n"
        "    while pid not in spawner._ended:\n"
        "        time.sleep(0.001)\n"
        "print(len(spawner._ended), spawner._MAX_ENDED, os.WEXITSTATUS(spawner._ended[pids[-1]][0]),\n"
        "      (len(pids) - 1) % 7, pids[0] in spawner._ended)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    kept, bound, last_status, expected_status, first_kept = out.stdout.split()
    assert int(kept) <= int(bound)
    assert last_status == expected_status  # the latest child's status is there, and right
    assert first_kept == "False"  # the oldest was forgotten


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_local_ranks_get_disjoint_cores_unless_the_launcher_bound_them():
    """Under a multi-process launch each local rank pins its workers to its own block of cores; a rank
    that its launcher already bound to fewer cores than the launcher's own keeps that binding."""
    script = (
        "import json, os, sys\n"
        "from leti_env.execution.pool import local_cpu_share\n"
        "out = {}\n"
        "for rank in (0, 1):\n"
        "    os.environ.update(LOCAL_WORLD_SIZE='2', LOCAL_RANK=str(rank))\n"
        "    out[f'split{rank}'] = local_cpu_share()\n"
        "first = sorted(os.sched_getaffinity(0))[-1]\n"
        "os.sched_setaffinity(0, {first})  # as a launcher that binds its ranks would\n"
        "out['bound'] = local_cpu_share()\n"
        "os.environ.pop('LOCAL_WORLD_SIZE')\n"
        "out['alone'] = local_cpu_share()\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    shares = json.loads(out.stdout)
    cpus = sorted(os.sched_getaffinity(0))
    assert shares["split0"] and shares["split1"] and not set(shares["split0"]) & set(shares["split1"])
    assert set(shares["split0"]) | set(shares["split1"]) <= set(cpus)
    assert shares["bound"] == [cpus[-1]] and shares["alone"] is None


def test_the_worker_is_told_only_the_caller_folders_it_must_hide(monkeypatch, tmp_path):
    """Programs are forked from the worker and can read its memory: the pool sends the caller's working
    directory and home only where the sandbox shows a tree around them (Docker's /usr/src/app), never
    otherwise; for another interpreter, whose trees the pool cannot know, both."""
    import sys

    from leti_env.execution import pool as pool_module

    import ast

    source = (REPO / "leti_env/execution/sandbox/filesystem.py").read_text()  # a worker module: not importable here
    line = next(l for l in source.splitlines() if l.startswith("SYSTEM_DIRS = "))
    assert ast.literal_eval(line.split("=", 1)[1].strip()) == pool_module._SHOWN_SYSTEM_TREES
    hide = pool_module._folders_to_hide
    assert hide([str(tmp_path), "/root"], sys.executable) == []
    assert hide(["/usr/src/app", "/root"], sys.executable) == ["/usr/src/app"]
    assert hide([sys.prefix + "/project", "/home/user"], sys.executable) == [sys.prefix + "/project"]
    assert hide([str(tmp_path), "/home/user"], "/usr/bin/python3.99") == sorted([str(tmp_path), "/home/user"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    pool = ExecutorPool(1)
    assert pool.config["hide"] == [] and str(tmp_path) not in json.dumps(pool.config)
    with pool:
        assert pool.run(["pass"])[0].passed
