"""The manual is true as written: every Python block of README.md and docs/ runs, every example's docstring
gives the smoke command CI runs, and the documentation site builds (`mkdocs build --strict`).

A block is run in a fresh interpreter in an empty folder. An HTML comment on the line before its fence can
mark it (the reason is required):

- ``<!-- skip: needs a GPU -->``: compiled only (a GPU, the Hub, a running server);
- ``<!-- slow: trains a model (about 40 s) -->``: run, but as a ``slow`` test.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_examples import SMOKE

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARK = re.compile(r"^<!--\s*(skip|slow):\s*(\S.*?)\s*-->$")


def python_blocks() -> list:
    params = []
    for path in DOC_FILES:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) not in ("python", "py"):
                continue
            line = text.count("\n", 0, match.start()) + 1
            before = [l for l in text[: match.start()].splitlines() if l.strip()]
            mark = MARK.match(before[-1].strip()) if before else None
            kind = mark.group(1) if mark else "run"
            name = f"{path.relative_to(REPO)}:{line}"
            marks = [pytest.mark.slow] if kind == "slow" else []
            params.append(pytest.param(path, line, match.group(2), kind, id=name, marks=marks))
    return params


BLOCKS = python_blocks()


@pytest.fixture(scope="module")
def block_env(tmp_path_factory):
    return {**os.environ, "PYTHONPATH": str(REPO), "LETI_CACHE": str(tmp_path_factory.mktemp("cache")),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}


def test_blocks_found_and_marks_well_formed():
    assert len(BLOCKS) >= 10
    for path in DOC_FILES:  # a mark that matches no block (a typo, a blank reason) would silently run or skip
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip().startswith("<!--") and re.search(r"\b(skip|slow)\b", line):
                assert MARK.match(line.strip()), f"{path.name}:{number}: write `<!-- skip: reason -->` or `<!-- slow: reason -->`"


@pytest.mark.parametrize("path, line, code, kind", BLOCKS)
def test_python_block_runs(path, line, code, kind, tmp_path, block_env):
    compile(code, f"{path.name}:{line}", "exec")  # every block, marked or not, is valid Python
    if kind == "skip":
        return
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=block_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{path.name}:{line} failed:\n{proc.stderr[-3000:]}"


def test_readme_links_exist():
    text = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


def docstring_command(text: str) -> str:
    """The docstring's text with shell line continuations joined and whitespace collapsed."""
    return " ".join(re.sub(r"\\\n", " ", text).split())


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_example_docstring_gives_the_smoke_command_ci_runs(script):
    doc = ast.get_docstring(ast.parse((REPO / "examples" / script).read_text()))
    assert docstring_command(SMOKE[script]) in docstring_command(doc), (
        f"examples/{script}: its docstring's smoke command must be the one tests/test_examples.py runs:\n{SMOKE[script]}")


def test_every_example_has_a_smoke_command():
    assert sorted(SMOKE) == sorted(p.name for p in (REPO / "examples").glob("*.py"))


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("mkdocs", "material", "mkdocstrings_handlers.python")),
                    reason="mkdocs, mkdocs-material or mkdocstrings[python] not installed (pip install -e '.[dev]')")
def test_docs_site_builds_strict(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "leti_env" / "index.html").is_file()
