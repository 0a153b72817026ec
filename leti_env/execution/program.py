"""A program to execute, split into the untrusted part and the trusted tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Program:
    """What the executor runs: untrusted ``solution`` code checked by trusted ``tests``.

    The two parts run in separate processes (see ``leti_env.execution``): the tests' free names
    (``add``, ``Node``, ``math``) are looked up in the solution's globals, so the tests read exactly
    as they would in one file, but the program can never touch the code that judges it.

    Attributes:
        solution: The untrusted code, e.g. prompt + model completion.
        tests: Trusted test code (asserts, a ``check`` function, setup code). Empty: the program
            passes when it runs to the end without an exception (its own asserts count).
        prelude: Trusted code the verifier runs before ``tests``; must be a prefix of ``solution``.
            HumanEval uses the prompt here so that helpers the prompt defines (``poly``) stay the
            dataset's versions even if the completion redefines them.
        entry_points: The functions under test. They always come from the solution, even where
            ``prelude`` defines a stub of them or a builtin has the same name (MBPP task 126 tests
            a function called ``sum``); any other builtin name in the tests stays the real builtin,
            so a program cannot shadow ``set`` or ``len`` to fool them.
        modules: Trusted helper modules, ``(name, source)`` pairs, importable by the tests (a
            verifier class, say). They run in the verifier only, and their frames stay out of the
            feedback, as a library's would.
    """

    solution: str
    tests: str = ""
    prelude: str = ""
    entry_points: tuple[str, ...] = ()
    modules: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("solution", "tests", "prelude"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Program.{name} must be a str, got {type(getattr(self, name)).__name__}")
        if self.prelude and not self.solution.startswith(self.prelude):
            raise ValueError("Program.prelude must be a prefix of Program.solution (it is the trusted part of it)")

    @property
    def text(self) -> str:
        """The whole program as one file: what the line numbers in feedback refer to."""
        return self.solution + "\n" + self.tests if self.tests else self.solution

    @property
    def tests_line_offset(self) -> int:
        """Lines before the first line of ``tests`` in ``text``."""
        return self.solution.count("\n") + 1
