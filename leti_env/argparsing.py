"""The argparse behaviour of every ``leti`` command (``python -m leti_env`` and ``leti train/eval/...``): no
abbreviated flags, and an error as one line that names the fix.

argparse's defaults guess: ``--num_iteration 2`` is silently taken as ``--num_iterations``, and an error
prints the whole usage first (``leti train``'s is 200 lines) and the error last. Kept in ``leti_env`` (which
imports nothing heavy), so that ``trainers`` and ``leti_env`` share one copy.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable
from typing import Any


def nearest(name: str, known: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest of ``known`` to a mistyped ``name``, or ``""``."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def long_options(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--flag`` of a parser and of its subcommands."""
    out = []
    for action in parser._actions:
        out += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            out += [o for sub in action.choices.values() for o in long_options(sub)]
    return out


class StrictErrors:
    """An argparse parser mixin: no abbreviations (``allow_abbrev=False``), and an error in one line, with the
    nearest valid flag for an unknown one, instead of the usage first and the error last."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        if message.startswith("unrecognized arguments: "):
            flags = [a for a in message.removeprefix("unrecognized arguments: ").split() if a.startswith("--")]
            message += nearest(flags[0].split("=")[0], long_options(self)) if flags else ""
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")


class StrictArgumentParser(StrictErrors, argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``StrictErrors``: what every ``leti`` command parses with."""


def strict_argument_parser(**kwargs: Any) -> argparse.ArgumentParser:
    """``argparse.ArgumentParser(**kwargs)`` with ``StrictErrors``."""
    return StrictArgumentParser(**kwargs)
