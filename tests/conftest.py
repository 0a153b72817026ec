"""Shared fixtures. Datasets: the full public MBPP and HumanEval from ../shared/data when it is beside
the clone, else leti's own small task files in the same formats (tests/data); nothing touches the network.

Tests of facts about the full datasets (sizes, every reference solution, specific upstream tasks) are
marked ``full_data`` and skip on the small files; every other test runs on either.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURE_DATA = REPO / "tests" / "data"
os.environ.setdefault("LETI_DATA_DIR", str(SHARED_DATA if (SHARED_DATA / "mbpp" / "mbpp.jsonl").is_file()
                                          else FIXTURE_DATA))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
DATA_DIR = Path(os.environ["LETI_DATA_DIR"])
FULL_DATA = DATA_DIR.resolve() != FIXTURE_DATA.resolve()
# (full, sanitized) MBPP tasks per split, and HumanEval's size, in the data the tests read
MBPP_SIZES = ({"prompt": (10, 7), "test": (500, 257), "validation": (90, 43), "train": (374, 120), "all": (974, 427)}
              if FULL_DATA else
              {"prompt": (3, 1), "test": (6, 3), "validation": (2, 1), "train": (8, 2), "all": (19, 7)})
HUMANEVAL_SIZE = 164 if FULL_DATA else 5
HUMANEVAL_FILE = DATA_DIR / "humaneval" / ("HumanEval.jsonl.gz" if FULL_DATA else "HumanEval.jsonl")
full_data = pytest.mark.full_data


def pytest_collection_modifyitems(config, items):
    if FULL_DATA:
        return
    skip = pytest.mark.skip(reason=f"needs the full MBPP/HumanEval (../shared/data); LETI_DATA_DIR={DATA_DIR} "
                                   "holds leti's small test files")
    for item in items:
        if "full_data" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "full_data: asserts facts of the full MBPP/HumanEval (skips without ../shared/data)")


@pytest.fixture(scope="session")
def pool():
    """One 2-worker sandbox pool shared by the tests (as a trainer would keep one)."""
    from leti_env import ExecutorPool

    with ExecutorPool(2) as p:
        yield p


def descendants(pid: int) -> set[int]:
    """All live descendants of ``pid`` on the host (by walking /proc parent links)."""
    from leti_env.execution.pool import _descendants

    return set(_descendants(pid))


HARNESS_NAMES = {"leti-zygote", "leti-verifier", "leti-spawner"}


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_alive(pid: int) -> bool:
    """Running (a zombie is dead: it only waits for its parent to read its status)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def leftover_processes(launcher_pid: int) -> set[int]:
    """Processes under a worker other than its zygote, spawner and (at most one) verifier: leaks."""
    found = descendants(launcher_pid)
    harness = {p for p in found if process_name(p) in HARNESS_NAMES}
    assert sum(process_name(p) == "leti-verifier" for p in harness) <= 1
    return found - harness


# The sandbox hides these host directories behind its own tmpfs: a canary there proves nothing.
SANDBOX_PRIVATE = ("/tmp", "/var/tmp", "/dev/shm")


def nobody_can_traverse(path: Path) -> bool:
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    return subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                           "test", "-x", str(path)]).returncode == 0


def python_for_degraded_mode() -> str:
    """An interpreter uid nobody can read, for pools without a minimal root (Landlock-only mode).

    As root, such a pool refuses a Python that uid nobody cannot read (one under /root), rather than
    leave programs a capability to read it: then the system's Python serves (the worker and the
    programs need nothing but the standard library)."""
    import subprocess
    import sys

    if os.geteuid() != 0:
        return sys.executable
    sandbox = str(REPO / "leti_env" / "execution" / "sandbox")
    check = (f"import sys; sys.path.insert(0, {sandbox!r}); from process import _nobody_can_run_python as ok; "
             "sys.exit(0 if ok() else 1)")
    for python in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):  # the executor's own criterion
        if os.path.exists(python) and subprocess.run([python, "-I", "-c", check], capture_output=True).returncode == 0:
            return python
    pytest.skip("no Python here that uid nobody can read (a Landlock-only pool refuses to run as root otherwise)")


def canary_parent(for_nobody: bool = False) -> Path:
    """A writable folder on the real filesystem (visible, read-only, inside the sandbox)."""
    for candidate in (REPO, Path.home(), Path("/var/lib")):
        resolved = str(candidate.resolve())
        if resolved.startswith(SANDBOX_PRIVATE) or not os.access(candidate, os.W_OK):
            continue
        if for_nobody and not nobody_can_traverse(candidate):
            continue
        return candidate
    pytest.skip("no writable folder outside /tmp, /var/tmp and /dev/shm for the canaries")
