"""Section F of the hostile catalogue: least privilege, in every mode the executor claims.

Each mode runs the built-in safe self-test (``leti_env.execution.selftest``: one probe per attack
class 1-10) in a process of its own, with a key in a keyring that process created, then exits;
this test then checks that nothing outlived it (class 12: processes, cgroups, temp dirs, System V
IPC objects, mounts). Modes:

- root: namespaces, a minimal root, two unprivileged uids, seccomp, Landlock, cgroups;
- rootless: uid 65534 through a user namespace (a system Python that uid can read);
- landlock: namespaces switched off (``disable=``): Landlock + seccomp;
- docker-seccomp: nothing switched off, but the calling process runs under a seccomp filter that
  refuses namespaces, mounts and keyrings, as Docker's default profile does: the executor must
  find that out by itself and fall back to Landlock + seccomp.

Probes aim only at canaries they create; sensitive paths are opened, never written; device nodes
are listed, never opened; signals go only to the executor's own processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from leti_env import ExecutorPool, Program, SandboxUnavailableError, SandboxWarning
from tests.conftest import REPO, canary_parent, process_alive, process_name, python_for_degraded_mode

NAMESPACES = ["pidns", "netns", "mountns", "ipcns", "userns"]
SYSTEM_PYTHON = "/usr/bin/python3"

SCRIPT = r'''
import ctypes, json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from execution import ExecutorPool
from execution.selftest import run_self_test
disable, kill_self, refuse_namespaces = json.loads(sys.argv[2]), sys.argv[3] == "kill", sys.argv[4] == "seccomp"
libc = ctypes.CDLL(None, use_errno=True)
keyctl, add_key = {"x86_64": (250, 248), "aarch64": (219, 217)}[os.uname().machine]
libc.syscall(keyctl, 1, b"leti-test-keyring")  # a new session keyring of this process only
key = libc.syscall(add_key, b"user", b"leti-canary", b"leti-canary-secret", 18, -3)
if refuse_namespaces:  # like Docker's default profile: no unshare, setns, mount or keyctl from here on
    sys.path.insert(0, os.path.join(sys.argv[1], "execution", "sandbox"))
    import seccomp
    sys.path.pop(0)
    del sys.modules["seccomp"]
    seccomp.install(seccomp.build_filter())
pool = ExecutorPool(2, disable=disable)
report = pool.protections()
pids = pool.harness_pids()
paths = [p for w in pool._workers for p in w.cgroup_paths]
if kill_self:
    print(json.dumps({"pids": pids, "cgroups": paths, "status": pool.run(["pass"])[0].status}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
checks = run_self_test(pool, key_id=key if key > 0 else None, harness_pids=pids)
pool.close()
print(json.dumps({"report": report, "checks": checks, "pids": pids, "cgroups": paths, "key": key}))
'''


def _host_state() -> dict:
    """What a sandbox could leave on the host: IPC objects, mounts, temp dirs."""
    state = {}
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                state[kind] = sorted(line.split()[1] for line in f.readlines()[1:] if line.split())
        except OSError:
            state[kind] = []
    with open("/proc/self/mountinfo") as f:
        state["mounts"] = sorted(line.split()[4] for line in f)
    state["tmp"] = sorted(n for n in os.listdir("/tmp") if n.startswith("leti"))
    return state


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def _assert_nothing_left(out: dict, before: dict) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (any(map(process_alive, out["pids"])) or any(map(os.path.exists, out["cgroups"]))):
        time.sleep(0.05)
    assert not [p for p in out["pids"] if process_alive(p)], "a sandbox process outlived the process that used it"
    assert not [p for p in out["cgroups"] if os.path.exists(p)], "a cgroup outlived the process that used it"
    assert _host_state() == before, "an IPC object, mount or temp dir outlived the process that used it"


def _copy_package(for_nobody: bool, parent: Path | None = None) -> Path:
    """The stdlib-only executor package, copied where the mode's user can read it (the caller's
    working directory too: the self-test leaves its 0600 canary there, which uid nobody must own)."""
    base = Path(tempfile.mkdtemp(prefix=".leti-lp-", dir=parent or canary_parent(for_nobody=for_nobody)))
    shutil.copytree(REPO / "leti_env" / "execution", base / "execution", ignore=shutil.ignore_patterns("__pycache__"))
    (base / "run.py").write_text(SCRIPT)
    for path in [base, *base.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    if for_nobody:
        os.chown(base, 65534, 65534)
    return base


def _run_mode(mode: str, kill_self: bool = False, parent: Path | None = None) -> tuple[dict, dict]:
    disable = {"root": [], "rootless": [], "landlock": NAMESPACES + ["cgroup"], "docker-seccomp": []}[mode]
    command = [python_for_degraded_mode() if mode in ("landlock", "docker-seccomp") else sys.executable]
    if mode == "rootless":
        if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
            pytest.skip("needs root, setpriv and a system python to become uid 65534")
        command = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", SYSTEM_PYTHON]
    base = _copy_package(for_nobody=mode == "rootless", parent=parent)
    before = _host_state()
    try:
        proc = subprocess.run(command + [str(base / "run.py"), str(base), json.dumps(disable), "kill" if kill_self else "",
                                         "seccomp" if mode == "docker-seccomp" else ""],
                              capture_output=True, text=True, timeout=300, cwd=str(base),
                              env={"PATH": "/usr/bin:/bin", "HOME": str(base)})
        if not kill_self:
            assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if mode == "rootless" and not out.get("report", {"user_namespace": True})["user_namespace"]:
            pytest.skip(f"unprivileged user namespaces are disabled here: {out['report']['notes']}")
        return out, before
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", params=["root", "rootless", "landlock", "docker-seccomp"])
def mode_run(request):
    out, before = _run_mode(request.param)
    return request.param, out, before


CLASSES = ["1 host files", "2 kernel settings", "3 devices", "4 namespaces, io_uring, perf, bpf, userfaultfd, ptrace",
           "5 keyrings", "6 signals to the judges", "7 SysV IPC between runs", "8 forged verdict",
           "8b tests and other runs' programs out of reach",
           "9 cleanup of a huge tree", "10 free names in the tests", "13 a run ends whole",
           "14 wall time limit from outside", "15 one core per slot", "16 abstract unix sockets",
           "17 no host path in the command line", "18 watching the caller's folders",
           "19 the run's memory as a whole", "20 disk use of a run"]


@pytest.mark.parametrize("attack", CLASSES)
def test_attack_class_is_contained(mode_run, attack):
    mode, out, _ = mode_run
    checks = {c["class"]: c for c in out["checks"]}
    assert checks[attack]["ok"], f"{mode}: {attack}: {checks[attack]['detail']}"


def test_mode_is_what_it_claims(mode_run):
    mode, out, _ = mode_run
    report = out["report"]
    assert report["mode"] == ("landlock" if mode in ("landlock", "docker-seccomp") else "namespaces"), report
    assert report["seccomp"] and report["signal_isolation"] and report["unprivileged_uid"]
    assert out["key"] > 0, "the test could not create its own key"
    if mode == "root":
        assert report["separate_verifier_uid"] and report["minimal_root"] and report["cgroup_pids"]
        assert report["per_run_ipc_namespace"] and report["session_keyring"]
    if mode == "rootless":
        assert report["user_namespace"] and report["minimal_root"] and report["signal_isolation"] == "landlock"
    if mode in ("landlock", "docker-seccomp"):
        assert not report["minimal_root"] and report["landlock_filesystem"] and report["landlock_network"]
        assert report["separate_verifier_uid"]
    if mode == "docker-seccomp":  # found out, not told: the launcher's unshare was refused
        assert not report["pid_namespace"] and not report["user_namespace"] and not report["session_keyring"]
        assert any("unshare refused" in note for note in report["notes"]), report["notes"]


def test_nothing_outlives_the_process(mode_run):
    _, out, before = mode_run
    _assert_nothing_left(out, before)


@pytest.mark.parametrize("mode", ["root", "rootless", "landlock"])
def test_a_working_directory_under_usr_stays_hidden(mode):
    """Docker images work in /usr/src/app, under the /usr that Python needs: the caller's working
    directory there (with the self-test's 0600 canary in it) is masked in the view and left out of
    Landlock's rules, and the rest of /usr still serves Python."""
    if os.geteuid() != 0 or not os.access("/usr/src", os.W_OK):
        pytest.skip("needs root to make a working directory under /usr/src")
    out, _ = _run_mode(mode, parent=Path("/usr/src"))
    host = {c["class"]: c for c in out["checks"]}["1 host files"]
    assert host["ok"], host["detail"]
    assert "/usr/src/.leti-lp-" in host["detail"], "the canary in the working directory was not probed"
    assert all(c["ok"] for c in out["checks"]), [c for c in out["checks"] if not c["ok"]]


@pytest.mark.parametrize("mode", ["root", "landlock"])
def test_nothing_outlives_a_killed_process(mode):
    """The caller dies by SIGKILL mid-use: its workers see their pipe close and clean up."""
    out, before = _run_mode(mode, kill_self=True)
    assert out["status"] == "passed"
    _assert_nothing_left(out, before)


def test_no_isolation_is_refused_unless_explicitly_allowed(monkeypatch):
    """Class 11: where neither namespaces nor Landlock work, refuse; running anyway is loud."""
    monkeypatch.delenv("LETI_SANDBOX", raising=False)
    everything = NAMESPACES + ["cgroup", "landlock"]
    pool = ExecutorPool(1, disable=everything)
    with pytest.raises(SandboxUnavailableError, match="cannot isolate generated programs.*allow_unconfined"):
        pool.run(["pass"])
    monkeypatch.setenv("LETI_SANDBOX", "unconfined")
    with pytest.warns(SandboxWarning, match="UNCONFINED"):
        with ExecutorPool(1, disable=everything) as pool:
            assert pool.run(["assert 1 + 1 == 2"])[0].passed
            assert pool.protections()["mode"] == "unconfined"


def test_bad_sandbox_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LETI_SANDBOX", "off")
    with pytest.raises(ValueError, match="LETI_SANDBOX='off'.*strict.*unconfined"):
        ExecutorPool(1)


def test_a_stopped_verifier_is_replaced(pool):
    """Class 6, from the outside: even if something stopped a verifier, the next run is judged."""
    pool.run(["pass"] * 4)
    verifiers = [p for p in pool.harness_pids() if process_name(p) == "leti-verifier"]
    assert verifiers
    for pid in verifiers:  # our own pool's processes
        os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5  # a signal takes effect when its target next runs: wait until stopped
    while time.monotonic() < deadline and not all(_state(pid) == "T" for pid in verifiers):
        time.sleep(0.01)
    assert all(_state(pid) == "T" for pid in verifiers)
    results = pool.run([Program("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\n")] * 4, timeout=3)
    assert all(r.passed for r in results), [r.status for r in results]
    for pid in verifiers:
        if process_alive(pid):
            os.kill(pid, signal.SIGCONT)
