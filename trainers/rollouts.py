"""Rollouts on disk: one 🤗 dataset per iteration, written atomically (a crash leaves the previous
folder or none, never half of one)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .sequences import Rollout


def save_rollouts(rollouts: Sequence[Rollout], path: str | Path) -> None:
    import datasets

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_list([dataclasses.asdict(r) for r in rollouts]).save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def load_rollouts(path: str | Path) -> list[Rollout]:
    import datasets

    names = {f.name for f in dataclasses.fields(Rollout)}
    return [Rollout(**{k: v for k, v in row.items() if k in names}) for row in datasets.load_from_disk(str(path))]
