"""The zygote's removal and measuring of a run's folder (``sandbox/process.py``: ``remove_tree``,
``tree_usage``) whatever a program left in it: a tree deeper than PATH_MAX, directories of mode 000,
symlinks out of the tree (never followed)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

MODULE = REPO / "leti_env" / "execution" / "sandbox" / "process.py"
SYSTEM_PYTHON = "/usr/bin/python3"

# Builds, under `base`, a tree deeper than PATH_MAX by descriptor-relative mkdir (as a program can), with
# unreadable and unwritable directories on the way and a symlink to a canary outside it at the bottom.
BUILD = r'''
import os, sys
base, canary, depth = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
os.mkdir("run", dir_fd=fd)
top = os.open("run", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
os.close(fd)
fd = top
locked = []
for level in range(depth):
    with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
        f.write(b"x" * 64)
    os.mkdir("dd", dir_fd=fd)
    child = os.open("dd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    if level % 500 == 250:
        locked.append((fd, 0o500))    # unwritable: its entries cannot be unlinked as they are
    elif level % 500 == 499:
        locked.append((os.dup(child), 0o000))  # unreadable and unwritable (closed below as `fd`)
    else:
        os.close(fd)
    fd = child
os.symlink(canary, "link", dir_fd=fd)
with open(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
    f.write(b"y" * (1 << 20))
for locked_fd, mode in locked:
    os.fchmod(locked_fd, mode)
'''

REMOVE = r'''
import importlib.util, sys
spec = importlib.util.spec_from_file_location("process_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.remove_tree(sys.argv[2])
'''


def _module():
    spec = importlib.util.spec_from_file_location("process_under_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(base: Path, canary: Path, depth: int, python: str, prefix: list[str]) -> Path:
    subprocess.run([*prefix, python, "-c", BUILD, str(base), str(canary), str(depth)], check=True, timeout=120)
    return base / "run"


def test_a_tree_deeper_than_path_max_with_locked_directories_is_removed(tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("keep me")
    run = _tree(tmp_path, canary, 2100, os.sys.executable, [])  # 2,100 levels: over 6,000 characters of path
    subprocess.run([os.sys.executable, "-c", REMOVE, str(MODULE), str(run)], check=True, timeout=120)
    assert not run.exists() and canary.read_text() == "keep me"


def test_it_is_removed_by_its_owner_without_privileges(tmp_path):
    """As uid nobody (rootless): mode-000 and mode-500 directories need their owner to give rights back."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root, setpriv and a system python to become uid nobody")
    base = Path(tempfile.mkdtemp(prefix=".leti-tree-", dir="/tmp"))
    try:
        os.chown(base, 65534, 65534)
        shutil.copy(MODULE, base / "process.py")
        canary = base / "canary"
        canary.write_text("keep me")
        nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
        run = _tree(base, canary, 1100, SYSTEM_PYTHON, nobody)
        listing = subprocess.run([*nobody, SYSTEM_PYTHON, "-c", "import os, sys; os.listdir(sys.argv[1])",
                                  str(run) + "/dd" * 499 + "/dd"], capture_output=True, text=True)
        assert "PermissionError" in listing.stderr  # the tree really holds a directory its owner cannot read
        subprocess.run([*nobody, SYSTEM_PYTHON, "-c", REMOVE, str(base / "process.py"), str(run)], check=True, timeout=120)
        assert not run.exists() and canary.read_text() == "keep me"
    finally:  # shutil.rmtree cannot (recursion): the removal under test, as root, whatever is left
        _module().remove_tree(str(base))


def test_a_symlink_or_a_missing_folder_is_no_error(tmp_path):
    module = _module()
    target = tmp_path / "target"
    target.mkdir()
    (target / "kept").write_text("x")
    (tmp_path / "link").symlink_to(target)
    module.remove_tree(str(tmp_path / "link"))
    assert not (tmp_path / "link").exists() and (target / "kept").exists()
    module.remove_tree(str(tmp_path / "missing"))


def test_the_usage_of_a_tree_deeper_than_path_max_is_counted_without_following_links(tmp_path):
    """``tree_usage`` (the folder watch where no tmpfs holds a run): every level's file and folder, the
    bottom MiB, not the 64 MiB canary a symlink at the bottom points to; and it stops at its caps."""
    canary = tmp_path / "canary"
    canary.write_bytes(b"z" * (64 << 20))
    depth = 2100
    run = _tree(tmp_path, canary, depth, os.sys.executable, [])
    module = _module()
    try:
        used, entries = module.tree_usage(str(run), 1 << 40, 1 << 40)
        assert entries == 2 * depth + 2  # f and dd per level; link and bottom at the end
        # the bottom MiB, 2,100 small files and folders (a block or two each), and no canary
        assert (1 << 20) + depth * 64 <= used < (1 << 20) + depth * 2 * 8192
        used, entries = module.tree_usage(str(run), 1 << 40, 100)
        assert entries == 101  # stops counting once past the cap
        used, _ = module.tree_usage(str(run), 4096, 1 << 40)
        assert 4096 < used < (2 << 20)
        assert module.tree_usage(str(tmp_path / "missing"), 1, 1) == (0, 0)
    finally:
        module.remove_tree(str(run))
