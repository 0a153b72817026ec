"""Dataset loaders: splits, exact prompts and programs, and errors that name the file, row and fix."""

from __future__ import annotations

import json
import os

import pytest

from leti_env import DatasetFormatError, load_humaneval, load_mbpp
from leti_env.tasks import mbpp_prompt
from tests.conftest import HUMANEVAL_FILE, HUMANEVAL_SIZE, MBPP_SIZES, full_data

DATA = os.environ["LETI_DATA_DIR"]


@pytest.mark.parametrize("split", ["prompt", "test", "validation", "train", "all"])
def test_mbpp_split_sizes(split):
    full, sanitized = MBPP_SIZES[split]
    assert len(load_mbpp(split)) == full
    assert len(load_mbpp(split, sanitized=True)) == sanitized
    ids = [int(t.task_id.split("/")[1]) for t in load_mbpp(split)]
    assert ids == sorted(ids) and all(i in {"prompt": range(1, 11), "test": range(11, 511),
                                            "validation": range(511, 601), "train": range(601, 975),
                                            "all": range(1, 975)}[split] for i in ids)


@full_data
def test_mbpp_prompt_is_the_authors_text():
    task = next(t for t in load_mbpp("test") if t.task_id == "MBPP/11")
    first = 'assert remove_Occ("hello","l") == "heo"'
    assert task.prompt == f'"""\nWrite a python function to remove first and last occurrence of a given character from the string.\n{first}\n"""'
    assert task.entry_point == "remove_Occ"


def test_mbpp_prompt_and_program_are_exact():
    task = load_mbpp("test")[0]
    first = task.metadata["test_list"][0]
    assert task.prompt == f'"""\n{task.metadata["text"]}\n{first}\n"""'
    assert task.prompt == mbpp_prompt(task.metadata["text"], first)
    assert first.startswith(f"assert {task.entry_point}(")
    completion = f"\ndef {task.entry_point}(s, ch):\n    return s"
    assert task.full_program(completion) == task.prompt + completion + "\n" + "\n".join(task.metadata["test_list"])


def test_mbpp_setup_code_runs_after_the_solution_and_before_the_asserts():
    task = next(t for t in load_mbpp("test") if t.setup_code)  # MBPP/367 upstream: builds a tree of the solution's class
    program = task.full_program(task.reference_solution)
    solution_end = program.index(task.reference_solution) + len(task.reference_solution)
    setup_at = program.index(task.setup_code)
    assert solution_end < setup_at < program.index("assert ", solution_end)  # (the prompt shows one assert)


def test_humaneval_program_is_human_evals():
    tasks = load_humaneval()
    assert len(tasks) == HUMANEVAL_SIZE and tasks[0].task_id == "HumanEval/0"
    t = tasks[0]
    assert t.full_program(t.reference_solution) == t.prompt + t.reference_solution + "\n" + t.tests
    assert t.tests.endswith(f"\ncheck({t.entry_point})")


@full_data
def test_sanitized_mbpp_runs_its_test_imports():
    task = next(t for t in load_mbpp("all", sanitized=True) if "import math" in t.tests)
    assert task.tests.startswith("import math")


def test_data_path_can_be_a_file_or_a_folder():
    train = MBPP_SIZES["train"][0]
    assert len(load_mbpp("train", data_path=os.path.join(DATA, "mbpp", "mbpp.jsonl"))) == train
    assert len(load_mbpp("train", data_path=os.path.join(DATA, "mbpp"))) == train
    assert len(load_humaneval(data_path=HUMANEVAL_FILE)) == HUMANEVAL_SIZE
    assert len(load_humaneval(data_path=HUMANEVAL_FILE.parent)) == HUMANEVAL_SIZE


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown MBPP split 'dev'; choose one of"):
        load_mbpp("dev")


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MBPP file not found: .*nope.jsonl. Pass data_path="):
        load_mbpp(data_path=tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=r"no mbpp.jsonl in"):
        load_mbpp(data_path=tmp_path)


def test_bad_leti_data_dir_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LETI_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="LETI_DATA_DIR is set to .* Fix the variable, or unset it"):
        load_mbpp()
    with pytest.raises(FileNotFoundError, match="LETI_DATA_DIR is set to"):
        load_humaneval()


def test_malformed_rows_name_file_line_and_field(tmp_path):
    good = {"task_id": 11, "text": "t", "code": "x = 1", "test_list": ["assert x == 1"], "test_setup_code": "",
            "challenge_test_list": []}
    bad = dict(good, task_id=12)
    del bad["test_list"]
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DatasetFormatError, match=r"mbpp.jsonl, line 2: missing field\(s\) \['test_list'\]"):
        load_mbpp(data_path=path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DatasetFormatError, match=r"mbpp.jsonl, line 2: not valid JSON .* Re-download"):
        load_mbpp(data_path=path)
    path.write_text(json.dumps(dict(good, test_list=[])) + "\n")
    with pytest.raises(DatasetFormatError, match="`test_list` must be a non-empty list"):
        load_mbpp(data_path=path)
    he = tmp_path / "HumanEval.jsonl"
    he.write_text(json.dumps({"task_id": "HumanEval/0", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(DatasetFormatError, match=r"HumanEval.jsonl, line 1: missing field\(s\)"):
        load_humaneval(data_path=he)


def test_hub_path_when_no_local_copy(monkeypatch):
    """Without data_path or LETI_DATA_DIR the loaders read the Hub's datasets (faked offline here)."""
    import datasets

    rows = [json.loads(line) for line in open(os.path.join(DATA, "mbpp", "mbpp.jsonl"))]
    by_split = {"train": range(601, 975), "test": range(11, 511), "validation": range(511, 601), "prompt": range(1, 11)}
    hub = datasets.DatasetDict({name: datasets.Dataset.from_list([r for r in rows if r["task_id"] in ids])
                                for name, ids in by_split.items()})
    calls = []
    monkeypatch.delenv("LETI_DATA_DIR")
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append(args) or hub)
    tasks = load_mbpp("test")
    assert calls == [("google-research-datasets/mbpp", "full")]
    assert len(tasks) == MBPP_SIZES["test"][0] and tasks[0].task_id == "MBPP/11"
    assert tasks[0].full_program(tasks[0].reference_solution) == next(
        t for t in load_mbpp("test", data_path=DATA) if t.task_id == "MBPP/11").full_program(tasks[0].reference_solution)


def test_each_task_carries_where_a_completion_ends():
    """Post-processing is the task's: MBPP's and HumanEval's stop words (plain substrings), Arith's and
    EAE's stop regex; tasks that put them in metadata (before the fields existed) still work."""
    from leti_env import CodeTask, load_arith

    mbpp = load_mbpp("test")[0]
    assert mbpp.postprocess("\ndef f(a):\n    return a // 2\nprint(f(3))\nassert f(4) == 2") == "\ndef f(a):\n    return a // 2"
    assert mbpp.postprocess("\ndef f(a):\n    return a") == "\ndef f(a):\n    return a"  # no stop word: kept whole
    humaneval = load_humaneval()[0]
    assert humaneval.postprocess("    return 1\n\ndef other():\n    pass\n") == "    return 1\n"
    arith = load_arith("train")[0]
    assert arith.postprocess("def f(x):\n    return x + 2\nf(3)\n") == "def f(x):\n    return x + 2"
    legacy = CodeTask("T/1", "p", "assert True", metadata={"stop_words": ["\nSTOP"]})
    assert legacy.postprocess("a\nb\nSTOP\nc") == "a\nb"
    assert CodeTask("T/2", "p", "assert True").postprocess("anything\nprint(1)") == "anything\nprint(1)"


def test_extract_code_takes_the_first_python_block():
    from leti_env import extract_code

    assert extract_code("Sure:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    assert extract_code("```bash\nrm -rf x\n```\n```\nx = 1\n```") == "x = 1\n"  # never another language
    assert extract_code("```sh\nls\n```\n```py\na = 2\n```\n```python\nb = 3\n```") == "a = 2\n"
    assert extract_code("- step:\n  ```Python\n  y = 2\n  ```") == "y = 2\n"  # dedented
    assert extract_code("def g():\n    pass\n") == "def g():\n    pass\n"  # no fence: as it is
    assert extract_code("```python\nunterminated") == "```python\nunterminated"
