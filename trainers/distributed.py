"""Data-parallel runs (``accelerate launch``/``torchrun``): which process does what, and the sandbox
workers of each process on its own cores."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable


def shared_execution(distributed: Processes, run_many: Callable[[list], list], pairs: list) -> list:
    """``run_many(pairs)``, split across the processes of a data-parallel run: each runs every
    ``world``-th pair, and every process gets all results, in order. A collective call: every process
    must make it, with the same ``pairs``."""
    mine = distributed.share(range(len(pairs)))
    local = list(zip(mine, run_many([pairs[i] for i in mine]) if mine else []))
    return [result for _, result in sorted(distributed.gather(local), key=lambda x: x[0])]


class Processes:
    """The processes of a data-parallel run (``accelerate launch``/``torchrun``); one process otherwise.

    Sampling, execution and evaluation are split across processes by prompt and gathered, so every
    process trains on the same rows (``SFTTrainer`` shards them); only the main process writes files.
    """

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.state = None
        if self.world > 1:
            from accelerate import PartialState

            from .leti_config import _has_accelerator

            # Joins the process group the launcher set up. Without an accelerator, say so (gloo on the
            # CPU): else a process not set up by TrainingArguments first would think it is alone.
            self.state = PartialState(cpu=not _has_accelerator())

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def share(self, indices: range) -> list[int]:
        """This process's indices: every ``world``-th one, so lengths differ by at most one."""
        return list(indices) if self.state is None else list(indices)[self.state.process_index::self.world]

    def gather(self, items: list) -> list:
        if self.state is None:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    @contextlib.contextmanager
    def main_first(self):
        """Run the block on the main process first, then on the others (e.g. building a cached model once)."""
        if self.state is None:
            yield
        else:
            with self.state.main_process_first():
                yield

