"""A code-generation task: the prompt the model sees and the tests that judge its completion."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..execution.program import Program


def cut_at_stop_words(completion: str, stop_words: Sequence[str]) -> str:
    """``completion`` up to the first occurrence of any of ``stop_words`` (plain substrings), or whole.

    Unlike the LeTI authors' code, the words are matched as plain substrings (their MBPP pattern held an
    unescaped ``|`` and so also cut at every ``/``), and a completion without a stop word is kept whole
    (their HumanEval version returned ``""``).
    """
    cut = len(completion)
    for word in stop_words:
        index = completion.find(word)
        if index != -1:
            cut = min(cut, index)
    return completion[:cut]


_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_PYTHON_FENCES = {"python", "py", "python3", "py3"}


def extract_code(text: str) -> str:
    """The code of a chat model's answer: its first fenced Python block (```` ```python ````, ```` ```py ````),
    else its first unlabelled fenced block, else the text as it is (a base model's plain completion).

    Instruct models wrap code in Markdown fences and add prose around it; executed as it is, such an
    answer is a syntax error whatever the code inside. A block labelled with another language
    (```` ```bash ````) is never taken for Python.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    for wanted in (_PYTHON_FENCES, {""}):
        for lang, body in blocks:
            if lang in wanted:
                return textwrap.dedent(body)  # a fence inside a list item is indented with its code
    return text


class DatasetFormatError(ValueError):
    """A dataset file or row does not have the expected layout."""


@dataclass(frozen=True)
class CodeTask:
    """One execution-checked task.

    The executed program is ``prompt + completion`` (untrusted) followed by ``setup_code`` and
    ``tests`` (trusted, run in a separate verifier process; see ``leti_env.execution``).

    Attributes:
        task_id: Stable identifier, e.g. ``"MBPP/11"`` or ``"HumanEval/0"``.
        prompt: What the model is given. The completion is appended to it verbatim.
        tests: Test code (asserts or a ``check`` function call).
        setup_code: Test setup run after the solution and before the tests (MBPP's
            ``test_setup_code``, which builds objects from classes the solution defines).
        reference_solution: A completion that passes, when the dataset has one.
        entry_point: The function under test, when the dataset names it.
        prelude: Trusted prefix of ``prompt`` that the verifier runs itself (HumanEval's prompt,
            whose helper functions the tests call).
        metadata: Anything else from the dataset row (``text``, ``challenge_test_list``...).
        test_modules: Trusted helper modules the tests import, ``(name, source)`` pairs (see ``Program``).
        stop_words: Where ``postprocess`` cuts a sampled completion: at the first of these plain
            substrings (MBPP's and HumanEval's lists, as the LeTI authors evaluate them).
        stop_regex: Or at the first match of this pattern (EAE, Arith); it wins over ``stop_words``.
    """

    task_id: str
    prompt: str
    tests: str
    setup_code: str = ""
    reference_solution: str = ""
    entry_point: str | None = None
    prelude: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    test_modules: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    stop_words: tuple[str, ...] = field(default=(), compare=False, repr=False)
    stop_regex: str | None = field(default=None, compare=False, repr=False)

    def postprocess(self, completion: str) -> str:
        """``completion`` cut where this task's dataset says a program ends (its stop regex or words).

        Sampled completions often run on past the function (another ``def``, a ``print``, a test). A
        completion with no stop word is kept whole.
        """
        regex = self.stop_regex or self.metadata.get("stop_regex")  # (metadata: tasks made before these fields)
        if regex:
            return re.split(regex, completion, maxsplit=1)[0]
        return cut_at_stop_words(completion, self.stop_words or tuple(self.metadata.get("stop_words", ())))

    def program(self, completion: str) -> Program:
        """The program that checks ``completion``, split into untrusted and trusted parts."""
        if not isinstance(completion, str):
            raise TypeError(f"a completion must be a str, got {type(completion).__name__}")
        tests = f"{self.setup_code}\n{self.tests}" if self.setup_code else self.tests
        entry_points = (self.entry_point,) if self.entry_point else ()
        return Program(self.prompt + completion, tests, prelude=self.prelude, entry_points=entry_points,
                       modules=self.test_modules)

    def full_program(self, completion: str) -> str:
        """Exactly the text that is executed, as one file (feedback line numbers refer to it)."""
        return self.program(completion).text


def data_dir() -> Path | None:
    """The ``LETI_DATA_DIR`` folder (laid out like ``shared/data``), if set."""
    value = os.environ.get("LETI_DATA_DIR")
    return Path(value).expanduser() if value else None


def require_keys(row: Any, keys: tuple[str, ...], source: str, where: str) -> dict:
    """Check one dataset row; the error names the file, the row, what is wrong and the fix."""
    if not isinstance(row, dict):
        raise DatasetFormatError(f"{source}, {where}: expected a JSON object, got {type(row).__name__}. "
                                 "Check that the file is the dataset's original JSON Lines file.")
    missing = [k for k in keys if k not in row]
    if missing:
        raise DatasetFormatError(
            f"{source}, {where}: missing field(s) {missing}; the row has {sorted(row)}. "
            "Check that the file is the right dataset (and, for MBPP, the right variant: full or sanitized)."
        )
    return row
