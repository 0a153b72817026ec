"""leti_env/execution/sandbox/cgroups.py: a slot's cgroups are created with real limits, hold the
processes that join them, and are removed afterwards, including after a SIGKILL and by a later sweep.

Every group a test creates is removed in a ``finally`` (through the ``groups`` fixture); only
processes the test forked are ever signalled; nothing under /sys is written except inside the groups
the test created. The v2 code paths that need a delegated cgroup2 hierarchy run against a fake tree
(plain directories and files) here; on the real kernel they are exercised only where v2 is usable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "leti_env" / "execution" / "sandbox" / "cgroups.py"


def _load():
    """Load the file alone (as the worker does, a top-level module): proves it needs no siblings."""
    spec = importlib.util.spec_from_file_location("leti_sandbox_cgroups_under_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cg = _load()

if sys.platform.startswith("linux"):
    USABLE, WHY = cg.can_use()
else:
    USABLE, WHY = False, "not Linux"
real = pytest.mark.skipif(not (USABLE and os.geteuid() == 0),
                          reason=f"needs root and a usable cgroup hierarchy: {WHY}")
v2_only = pytest.mark.skipif(not (USABLE and WHY.startswith("cgroup v2")),
                             reason=f"cgroup v2 with pids+memory is not usable here ({WHY})")

MIB = 2**20


@pytest.fixture
def groups():
    """Collects created Cgroups objects; removes them (and kills our leftovers in them) at the end."""
    made: list = []
    yield made
    for obj in made:
        for pid in obj.run_pids():  # only processes this test forked can be in its groups
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        obj.remove()
        cg.remove_paths(obj.paths)
    leftover = [p for obj in made for p in obj.paths if os.path.exists(p)]
    assert not leftover, f"cgroups left behind: {leftover}"


def create(made: list, name: str, pids_max: int = 32, memory_bytes: int = 256 * MIB):
    obj = cg.Cgroups.create(name, pids_max, memory_bytes)
    made.append(obj)
    return obj


def fork(body) -> int:
    """Fork a child that runs ``body()`` and exits with its return value (70 on an exception)."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            code = body() or 0
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def dead_pid() -> int:
    pid = fork(lambda: 0)
    reap(pid)
    return pid


def slot_dirs(obj) -> list[str]:
    return [p for p in obj.paths if os.path.basename(p) != "run"]


def run_dirs(obj) -> list[str]:
    return [p for p in obj.paths if os.path.basename(p) == "run"]


def limit_files(obj) -> tuple[str, str]:
    return ("pids.max", "memory.limit_in_bytes" if obj.version == 1 else "memory.max")


def cgroup_lines(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return f.read().splitlines()


def join_and_wait(obj):
    """A child body: join the run group, say so on a pipe, then wait until told to exit."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def body():
        os.close(ready_r), os.close(go_w)
        obj.join_run()
        os.write(ready_w, b"joined")
        os.read(go_r, 1)  # EOF or a byte: exit
        return 0

    pid = fork(body)
    os.close(ready_w), os.close(go_r)
    assert os.read(ready_r, 16) == b"joined", "the child could not join the run group"
    os.close(ready_r)
    return pid, go_w


# ----------------------------------------------------------------------------------------------
# The real kernel.
# ----------------------------------------------------------------------------------------------


def test_can_use_answers_with_a_reason():
    ok, why = cg.can_use()
    assert isinstance(ok, bool) and isinstance(why, str) and why


@real
def test_create_limits_join_and_remove(groups):
    name = f"leti-{os.getpid()}"
    obj = create(groups, name, pids_max=8, memory_bytes=192 * MIB)
    assert obj.version in (1, 2)
    for path in obj.paths:
        assert os.path.isdir(path), path
    assert all(os.path.basename(os.path.dirname(r)) == name for r in run_dirs(obj))
    assert all(os.path.basename(s) == name for s in slot_dirs(obj))
    assert len(run_dirs(obj)) == (2 if obj.version == 1 else 1)  # v1: pids and memory hierarchies
    pids_file, memory_file = limit_files(obj)
    pids_run = obj.run_dirs["pids"]
    memory_run = obj.run_dirs["memory"]
    assert Path(pids_run, pids_file).read_text().strip() == "8"
    assert int(Path(memory_run, memory_file).read_text()) == 192 * MIB
    obj.set_memory(96 * MIB)
    assert int(Path(memory_run, memory_file).read_text()) == 96 * MIB
    assert obj.oom_kills() == 0
    assert obj.run_pids() == []
    my_cgroups = cgroup_lines(os.getpid())

    child, go = join_and_wait(obj)
    try:
        lines = cgroup_lines(child)
        if obj.version == 1:
            for controller in ("pids", "memory"):
                [line] = [l for l in lines if controller in l.split(":")[1].split(",")]
                assert line.endswith(f"/{name}/run"), line
        else:
            [line] = [l for l in lines if l.startswith("0::")]
            assert line.endswith(f"/{name}/run"), line
        assert obj.run_pids() == [child]
        assert cgroup_lines(os.getpid()) == my_cgroups  # the creator was not moved
    finally:
        os.close(go)
        assert reap(child) == 0
    obj.remove()
    assert [p for p in obj.paths if os.path.exists(p)] == []
    obj.remove()  # idempotent, never raises
    cg.remove_paths(obj.paths)


@real
def test_pids_limit_is_enforced(groups):
    obj = create(groups, f"leti-{os.getpid()}", pids_max=8)
    result_r, result_w = os.pipe()

    def body():
        os.close(result_r)
        obj.join_run()
        started, refused, other = [], 0, []
        for _ in range(20):
            try:
                pid = os.fork()
            except BlockingIOError:
                refused += 1
                continue
            except OSError as exc:
                other.append(repr(exc))
                continue
            if pid == 0:
                time.sleep(10)
                os._exit(0)
            started.append(pid)
        for pid in started:  # kill and reap every child this process started
            kill_and_reap(pid)
        os.write(result_w, json.dumps({"started": len(started), "refused": refused, "other": other}).encode())
        return 0

    child = fork(body)
    os.close(result_w)
    try:
        data = b""
        while chunk := os.read(result_r, 4096):
            data += chunk
    finally:
        os.close(result_r)
        assert reap(child) == 0
    result = json.loads(data)
    assert result["other"] == []
    assert result["started"] + result["refused"] == 20
    assert result["started"] <= 7, result  # the joined process itself is the 8th
    assert result["refused"] >= 13, result
    obj.remove()
    assert [p for p in obj.paths if os.path.exists(p)] == []


@real
def test_memory_limit_counts_an_oom_kill(groups):
    obj = create(groups, f"leti-{os.getpid()}", memory_bytes=48 * MIB)

    def body():
        obj.join_run()
        hog = []
        for _ in range(128):  # 1 GiB in 8 MiB pieces, every page touched
            hog.append(bytearray(8 * MIB))
        return 3  # the limit did not stop us

    child = fork(body)
    code = reap(child)
    assert code == -signal.SIGKILL, f"expected an OOM kill, the child exited with {code}"
    assert obj.oom_kills() >= 1
    obj.remove()
    assert [p for p in obj.paths if os.path.exists(p)] == []


@real
def test_remove_from_inside_the_run_group(groups):
    """The zygote joins ``run`` and later calls remove() itself: it must leave first, or its own
    membership keeps the group busy (what left ~80 groups behind)."""
    name = f"leti-{os.getpid()}"
    create(groups, name)  # the same directories the child's object names
    result_r, result_w = os.pipe()

    def body():
        os.close(result_r)
        mine = cg.Cgroups.create(name, 16, 128 * MIB)
        mine.join_run()
        ours = ("pids", "memory") if mine.version == 1 else ("",)
        inside = all(l.endswith(f"/{name}/run") for l in cgroup_lines(os.getpid())
                     if l.split(":")[1] in ours)
        mine.remove()
        left = [p for p in mine.paths if os.path.exists(p)]
        os.write(result_w, json.dumps({"inside": inside, "left": left}).encode())
        return 0

    child = fork(body)
    os.close(result_w)
    try:
        data = os.read(result_r, 65536)
    finally:
        os.close(result_r)
        assert reap(child) == 0
    result = json.loads(data)
    assert result["inside"], "join_run did not move the child"
    assert result["left"] == []


@real
def test_remove_paths_after_sigkill(groups):
    obj = create(groups, f"leti-{os.getpid()}")
    child, go = join_and_wait(obj)
    try:
        os.kill(child, signal.SIGKILL)
        cg.remove_paths(obj.paths)  # before reaping: the zombie must not keep the group busy for long
        assert [p for p in obj.paths if os.path.exists(p)] == [], "an unreaped killed process kept it busy"
    finally:
        os.close(go)
        assert reap(child) == -signal.SIGKILL
    cg.remove_paths(obj.paths)
    assert [p for p in obj.paths if os.path.exists(p)] == []


@real
def test_sweep_stale_removes_only_dead_empty_groups_with_the_prefix(groups):
    dead = dead_pid()
    stale = create(groups, f"leti-{dead}")
    live = create(groups, f"leti-{os.getpid()}")
    other_prefix = create(groups, f"letx-{dead}")
    not_a_pid = create(groups, f"leti-{dead}x")
    dead2 = dead_pid()
    busy = create(groups, f"leti-{dead2}")  # dead name, but one of our processes is inside
    sleeper, go = join_and_wait(busy)
    try:
        removed = cg.sweep_stale()
        assert [p for p in stale.paths if os.path.exists(p)] == []
        assert removed >= len(slot_dirs(stale))  # (and any stale group an earlier run left behind)
        for kept in (live, other_prefix, not_a_pid, busy):
            assert all(os.path.isdir(p) for p in kept.paths), kept.paths
        assert busy.run_pids() == [sleeper]
        assert cg.sweep_stale(prefix="letx-") >= len(slot_dirs(other_prefix))  # prefix is honoured
        assert not any(os.path.exists(p) for p in other_prefix.paths)
    finally:
        os.close(go)
        reap(sleeper)
    assert cg.sweep_stale() >= len(slot_dirs(busy))  # empty now, name dead: swept
    assert not any(os.path.exists(p) for p in busy.paths)
    assert all(os.path.isdir(p) for p in live.paths)


# ----------------------------------------------------------------------------------------------
# Logic on fake trees (no kernel): path resolution and the v2 setup and its errors.
# ----------------------------------------------------------------------------------------------


def test_own_dir_resolves_through_mount_roots():
    assert cg._own_dir("/", "/sys/fs/cgroup/pids", "/") == "/sys/fs/cgroup/pids"
    assert cg._own_dir("/", "/sys/fs/cgroup/memory", "/a/b") == "/sys/fs/cgroup/memory/a/b"
    assert cg._own_dir("/docker/x", "/sys/fs/cgroup/memory", "/docker/x/a") == "/sys/fs/cgroup/memory/a"
    assert cg._own_dir("/docker/x", "/sys/fs/cgroup/memory", "/docker/x") == "/sys/fs/cgroup/memory"
    assert cg._own_dir("/docker/x", "/sys/fs/cgroup/memory", "/other") is None
    assert cg._own_dir("/", "/sys/fs/cgroup", "/../../outside") is None


def _fake_v2(tmp_path, monkeypatch, own: str, subtree: str, procs: str, controllers="cpu io memory pids"):
    mount = tmp_path / "cg2"
    own_dir = mount / own.strip("/") if own != "/" else mount
    own_dir.mkdir(parents=True)
    (own_dir / "cgroup.controllers").write_text(controllers + "\n")
    (own_dir / "cgroup.subtree_control").write_text(subtree + "\n")
    (own_dir / "cgroup.procs").write_text(procs)
    (tmp_path / "mountinfo").write_text(
        f"30 23 0:26 / {mount} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    (tmp_path / "cgroup").write_text(f"0::{own}\n")
    monkeypatch.setattr(cg, "MOUNTINFO", str(tmp_path / "mountinfo"))
    monkeypatch.setattr(cg, "PROC_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(cg, "REMOVE_TIMEOUT_S", 0)  # plain directories with files never rmdir
    return own_dir


@pytest.mark.skipif(os.geteuid() != 0, reason="the fake tree is 'writable by us' only as root or owner")
def test_v2_layout_on_a_fake_root_cgroup(tmp_path, monkeypatch):
    own = _fake_v2(tmp_path, monkeypatch, "/", subtree="", procs="1\n2\n")
    ok, why = cg.can_use()
    assert ok and why.startswith("cgroup v2"), why
    obj = cg.Cgroups.create("leti-123", 16, 64 * MIB)
    assert obj.version == 2
    assert obj.paths == [str(own / "leti-123" / "run"), str(own / "leti-123")]
    # the root cgroup may hold processes and still delegate: we enabled both controllers
    assert set((own / "cgroup.subtree_control").read_text().split()) == {"+pids", "+memory"}
    assert set((own / "leti-123" / "cgroup.subtree_control").read_text().split()) == {"+pids", "+memory"}
    run = own / "leti-123" / "run"
    assert (run / "pids.max").read_text() == "16"
    assert (run / "memory.max").read_text() == str(64 * MIB)
    (run / "memory.swap.max").write_text("max")
    obj.set_memory(32 * MIB)
    assert (run / "memory.max").read_text() == str(32 * MIB)
    assert (run / "memory.swap.max").read_text() == "0"
    (run / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert obj.oom_kills() == 2
    (run / "cgroup.procs").write_text("41\n42\n")
    assert obj.run_pids() == [41, 42]


@pytest.mark.skipif(os.geteuid() != 0, reason="the fake tree is 'writable by us' only as root or owner")
def test_v2_delegated_cgroup_is_used(tmp_path, monkeypatch):
    own = _fake_v2(tmp_path, monkeypatch, "/user.slice/leti.scope/workers",
                   subtree="memory pids", procs="")
    obj = cg.Cgroups.create("leti-7", 16, 64 * MIB)
    assert obj.version == 2 and obj.run_dirs["pids"] == str(own / "leti-7" / "run")
    assert (own / "cgroup.subtree_control").read_text().split() == ["memory", "pids"]  # untouched


@pytest.mark.skipif(os.geteuid() != 0, reason="the fake tree is 'writable by us' only as root or owner")
def test_v2_cgroup_with_processes_and_no_delegation_is_refused_clearly(tmp_path, monkeypatch):
    own = _fake_v2(tmp_path, monkeypatch, "/user.slice/session-1.scope", subtree="", procs="1234\n")
    ok, why = cg.can_use()
    assert not ok
    assert "has processes and does not delegate pids/memory" in why and "Delegate=yes" in why
    with pytest.raises(OSError, match="has processes and does not delegate pids/memory"):
        cg.Cgroups.create("leti-1", 16, 64 * MIB)
    assert not (own / "leti-1").exists()  # nothing was created


@pytest.mark.skipif(os.geteuid() != 0, reason="the fake tree is 'writable by us' only as root or owner")
def test_v2_ebusy_from_the_kernel_is_reported_clearly(tmp_path, monkeypatch):
    own = _fake_v2(tmp_path, monkeypatch, "/", subtree="", procs="1\n")
    real_write = cg._write

    def write(path, value):
        if path == str(own / "cgroup.subtree_control"):
            raise OSError(16, "Device or resource busy", path)
        real_write(path, value)

    monkeypatch.setattr(cg, "_write", write)
    with pytest.raises(OSError, match="EBUSY.*Delegate=yes"):
        cg.Cgroups.create("leti-1", 16, 64 * MIB)


def test_v2_without_controllers_and_no_v1_raises_oserror(tmp_path, monkeypatch):
    _fake_v2(tmp_path, monkeypatch, "/", subtree="", procs="", controllers="cpu io")
    ok, why = cg.can_use()
    assert not ok and "pids, memory not available" in why and "no cgroup v1" in why
    with pytest.raises(OSError, match="no usable cgroup hierarchy"):
        cg.Cgroups.create("leti-1", 16, 64 * MIB)


def test_helpers_never_raise(tmp_path, monkeypatch):
    monkeypatch.setattr(cg, "MOUNTINFO", str(tmp_path / "missing"))
    monkeypatch.setattr(cg, "PROC_CGROUP", str(tmp_path / "missing"))
    assert cg.sweep_stale() == 0
    (tmp_path / "keep").write_text("x")
    cg.remove_paths([str(tmp_path / "nope"), str(tmp_path)], timeout=0)  # a non-empty dir stays
    assert (tmp_path / "keep").exists()
    assert cg.can_use()[0] is False
    with pytest.raises(OSError):
        cg.Cgroups.create("leti-1", 16, 64 * MIB)
    with pytest.raises(ValueError):
        cg.Cgroups.create("../x", 16, 64 * MIB)
