"""MBPP (Austin et al., 2021) as ``CodeTask``s, in LeTI's prompt format.

Sources, in order: ``data_path=`` (a ``mbpp.jsonl`` / ``sanitized-mbpp.json`` file or a folder
holding it), the ``LETI_DATA_DIR`` folder (``$LETI_DATA_DIR/mbpp/...``), the Hugging Face Hub.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path
from typing import Literal

from .base import CodeTask, DatasetFormatError, data_dir, require_keys

MBPPSplit = Literal["prompt", "test", "validation", "train", "all"]
# The standard splits, by task id (from the dataset's README).
SPLITS: dict[str, range] = {
    "prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975),
    "all": range(1, 975),
}
_FILES = {False: "mbpp.jsonl", True: "sanitized-mbpp.json"}
# Where the LeTI authors cut an MBPP completion when post-processing (their list, matched as plain substrings)
STOP_WORDS = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/")
_HUB_ID = "google-research-datasets/mbpp"


def mbpp_prompt(text: str, first_test: str) -> str:
    """LeTI's MBPP prompt: the task and its first assert in a docstring, no trailing newline."""
    return f'"""\n{text}\n{first_test}\n"""'


def load_mbpp(split: MBPPSplit = "test", *, sanitized: bool = False, data_path: str | Path | None = None,
              include_challenge_tests: bool = False) -> list[CodeTask]:
    """Load MBPP tasks of one standard split.

    Args:
        split: ``prompt`` (1-10), ``test`` (11-510), ``validation`` (511-600), ``train`` (601-974),
            or ``all``. Sanitized MBPP uses the same id ranges (7/257/43/120 tasks).
        sanitized: The hand-verified subset (427 tasks, edited prompts, its own test imports).
        data_path: A local file or folder; otherwise ``LETI_DATA_DIR``, otherwise the Hub.
        include_challenge_tests: Append the full set's ``challenge_test_list`` asserts (11 tasks).

    Each task's completion is appended to a docstring prompt; the reference solution is given as
    ``"\\n" + code`` so that ``prompt + reference_solution`` is a program. ``test_setup_code`` runs
    after the solution and before the asserts (tasks 367 and 927 need it).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown MBPP split {split!r}; choose one of {sorted(SPLITS)}")
    rows, source = _read_rows(sanitized, data_path)
    wanted = SPLITS[split]
    tasks = []
    for where, row in rows:
        if sanitized:
            row = require_keys(row, ("task_id", "prompt", "code", "test_list", "test_imports"), source, where)
        else:
            row = require_keys(row, ("task_id", "text", "code", "test_list", "test_setup_code"), source, where)
        if not isinstance(row["test_list"], list) or not row["test_list"]:
            raise DatasetFormatError(f"{source}, {where}: `test_list` must be a non-empty list of asserts")
        task_id = int(row["task_id"])
        if task_id not in wanted:
            continue
        tests = list(row["test_list"])
        if include_challenge_tests and not sanitized:
            tests += list(row.get("challenge_test_list") or [])
        imports = list(row.get("test_imports") or []) if sanitized else []
        text = row["prompt"] if sanitized else row["text"]
        entry_point = _entry_point(row["code"], row["test_list"])
        tasks.append(CodeTask(
            task_id=f"MBPP/{task_id}",
            prompt=mbpp_prompt(text, row["test_list"][0]),
            tests="\n".join(imports + tests),
            setup_code="" if sanitized else (row.get("test_setup_code") or ""),
            reference_solution="\n" + row["code"],
            entry_point=entry_point,
            metadata={"text": text, "test_list": list(row["test_list"]), "sanitized": sanitized,
                      "challenge_test_list": list(row.get("challenge_test_list") or [])},
            stop_words=STOP_WORDS,
        ))
    tasks.sort(key=lambda t: int(t.task_id.split("/")[1]))
    return tasks


def _entry_point(code: str, tests: list[str]) -> str | None:
    """The reference solution's top-level function that the asserts call (MBPP names none)."""
    try:
        with warnings.catch_warnings():  # some references have invalid escapes such as "\d"
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        called = {n.func.id for t in tests for n in ast.walk(ast.parse(t))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    except SyntaxError:
        return None
    return next((name for name in defined if name in called), None)


def _read_rows(sanitized: bool, data_path: str | Path | None) -> tuple[list[tuple[str, dict]], str]:
    path = _local_file(sanitized, data_path)
    if path is not None:
        return _read_file(path), str(path)
    return _read_hub(sanitized), f"the Hugging Face Hub dataset {_HUB_ID}"


def _local_file(sanitized: bool, data_path: str | Path | None) -> Path | None:
    name = _FILES[sanitized]
    if data_path is not None:
        path = Path(data_path).expanduser()
        if path.is_dir():
            for candidate in (path / name, path / "mbpp" / name):
                if candidate.is_file():
                    return candidate
            raise FileNotFoundError(f"no {name} in {path} (nor in {path / 'mbpp'}). Pass the file itself as "
                                    "data_path=, or a folder that holds it.")
        if not path.is_file():
            raise FileNotFoundError(f"MBPP file not found: {path}. Pass data_path= pointing at {name}.")
        return path
    root = data_dir()
    if root is not None:
        candidate = root / "mbpp" / name
        if not candidate.is_file():
            raise FileNotFoundError(f"LETI_DATA_DIR is set to {root}, but {candidate} does not exist. "
                                    "Fix the variable, or unset it to load from the Hugging Face Hub.")
        return candidate
    return None


def _read_file(path: Path) -> list[tuple[str, dict]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise DatasetFormatError(f"{path}: expected a JSON array of task objects")
            return [(f"item {i}", row) for i, row in enumerate(data)]
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"line {lineno}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DatasetFormatError(f"{path}, line {lineno}: not valid JSON ({exc.msg}). "
                                             "Re-download the file; it may be truncated.") from None
        return rows
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}). "
                                 "Re-download the file; it may be truncated.") from None


def _read_hub(sanitized: bool) -> list[tuple[str, dict]]:
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(
            "MBPP needs a local copy or the `datasets` package: pass data_path=/path/to/mbpp.jsonl, set "
            "LETI_DATA_DIR, or `pip install datasets` to load it from the Hugging Face Hub."
        ) from None
    loaded = datasets.load_dataset(_HUB_ID, "sanitized" if sanitized else "full")
    return [(f"{split} row {i}", dict(row)) for split in loaded for i, row in enumerate(loaded[split])]
