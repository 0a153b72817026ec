"""What a run prints: one transient progress bar per phase, one table row per iteration, and nothing
from the libraries underneath unless asked (``leti ... --verbose``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

# Deprecation notices that transformers raises inside peft's and TRL's own calls (the names of gradient
# checkpointing in transformers 5): nothing a leti user can change.
THIRD_PARTY_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated", r"`gradient_checkpointing_enable` is deprecated",
                            r"`gradient_checkpointing_disable` is deprecated", r"`gradient_checkpointing` is deprecated")


# Raised by a command's set-up (bad values, missing files or packages) with a message that names the fix
SETUP_ERRORS = (ValueError, TypeError, ImportError, RuntimeError, OSError)


def setup_failed(command: str, exc: Exception) -> int:
    """One line instead of a traceback for a set-up error of ``leti <command>``, and its exit status (2):
    the message already names the fix. ``LETI_TRACEBACK=1`` re-raises it."""
    if os.environ.get("LETI_TRACEBACK"):
        raise exc
    print(f"leti {command}: error: {exc}\n(LETI_TRACEBACK=1 shows the traceback)", file=sys.stderr)
    return 2


def quiet_unless(verbose: bool) -> None:
    """``quiet_libraries()`` unless ``verbose`` (a command's ``--verbose``). Call it before the libraries
    are imported: bitsandbytes logs at import."""
    if not verbose:
        quiet_libraries()


def quiet_libraries() -> None:
    """Silence transformers', datasets', bitsandbytes', kernels' and TRL's logging and progress bars below errors,
    and the third-party deprecation notices above, for this process.

    The ``leti`` command calls this unless ``--verbose``; a script that uses ``LetiTrainer`` decides for
    itself (its own logging configuration is left alone).
    """
    # first: importing transformers may import bitsandbytes, which on CPUs with AVX512-BF16 asks kernels for a
    # Hub kernel, and offline kernels warns that it skips the publisher trust check (bitsandbytes 0.50.2,
    # kernels 0.19), and bitsandbytes that the kernel is not cached
    for name in ("bitsandbytes", "trl", "peft", "accelerate", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    _ignore_third_party_deprecations()


def _ignore_third_party_deprecations() -> None:
    for pattern in THIRD_PARTY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)


@contextlib.contextmanager
def third_party_deprecations_ignored():
    """Within: the deprecation notices of ``THIRD_PARTY_DEPRECATIONS`` are not shown (leti's calls into peft
    and TRL trigger them; only those libraries can change the calls inside)."""
    with warnings.catch_warnings():
        _ignore_third_party_deprecations()
        yield


def console():
    from rich.console import Console

    return Console(stderr=True)


def progress(show: bool = True):
    """A rich progress display whose bars vanish when done: the iteration's table row stays."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = console()
    # not to a file or pipe: a log gets the table rows, not bar redraws (nor the blank lines they leave)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=out, transient=True, disable=not show or not (out.is_terminal or out.is_jupyter))


class IterationTable:
    """One line per iteration: the sampled pass rate, held-out pass@k, rows, loss and seconds per phase."""

    def __init__(self, eval_k: int):
        self.key = f"eval/pass@{eval_k}"
        self.columns = [("iter", "iteration", "{:d}"), ("sampled pass", "rollout/pass_rate", "{:.3f}"),
                        (f"held-out pass@{eval_k}", self.key, "{:.3f}"), ("rows", "train/rows", "{:d}"),
                        ("loss", "train/loss", "{:.3f}"), ("sample s", "time/sampling", "{:.0f}"),
                        ("exec s", "time/execution", "{:.0f}"), ("train s", "time/training", "{:.0f}"),
                        ("eval s", "time/evaluation", "{:.0f}")]
        self._header_shown = False

    def header(self) -> str:
        return "  ".join(f"{title:>{max(len(title), 6)}}" for title, _, _ in self.columns)

    def row(self, metrics: Mapping[str, Any]) -> str:
        cells = []
        for title, key, fmt in self.columns:
            value = metrics.get(key)
            text = "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)
            cells.append(f"{text:>{max(len(title), 6)}}")
        return "  ".join(cells)

    def print(self, metrics: Mapping[str, Any]) -> None:
        out = console()
        if not self._header_shown:
            out.print(self.header(), style="bold", highlight=False, soft_wrap=True)
            self._header_shown = True
        out.print(self.row(metrics), highlight=False, soft_wrap=True)


def training_progress(progress_display, description: str):
    """A TrainerCallback that advances one bar of ``progress_display`` per optimizer step."""
    from transformers import TrainerCallback

    class _Steps(TrainerCallback):
        def __init__(self):
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.task = progress_display.add_task(description, total=state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            progress_display.update(self.task, completed=state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            progress_display.remove_task(self.task)

    return _Steps()
