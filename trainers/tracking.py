"""Experiment tracking for a LeTI run: one tracker run for the whole LeTI run, not one per iteration.

Each iteration trains with a fresh ``SFTTrainer``, whose own ``report_to`` integrations would start a new
run at step 0 every iteration, under a folder the trainer deletes (``iteration-N/sft``), and would never
see iteration 0 (before training). So LeTI logs itself: the training loss, learning rate and gradient
norm at the *cumulative* optimizer step, so curves continue across iterations and after a resume, and
LeTI's per-iteration metrics (``leti/rollout/pass_rate``, ``leti/eval/pass@1``, the status mix, seconds
per phase) at the step their iteration ended on (iteration 0 at step 0). A table of sampled programs,
with their status and feedback, goes with each iteration.

Supported here: ``tensorboard`` (``output_dir/runs``, kept). Other ``report_to`` integrations are handed
to each iteration's ``SFTTrainer`` as TRL would (one run per iteration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SUPPORTED = ("tensorboard",)
TRAIN_KEYS = ("loss", "learning_rate", "grad_norm")


class RunTracker:
    """The trackers of one LeTI run (main process only; elsewhere every call does nothing).

    Args:
        report_to: ``LetiConfig.report_to`` (TRL's list); the supported names are tracked here.
        output_dir: The run folder (``runs/`` under it holds the tensorboard event files).
    """

    def __init__(self, report_to: Sequence[str], output_dir: str | Path, enabled: bool = True):
        self.names = [name for name in report_to if name in SUPPORTED] if enabled else []
        self.output_dir = Path(output_dir)
        self._writer = None

    def __bool__(self) -> bool:
        return bool(self.names)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Numeric values of ``metrics`` at ``step`` (other values are skipped)."""
        writer = self._tensorboard()
        if writer is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, value, step)
        writer.flush()

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """A table (tensorboard: a Markdown table in the Text tab)."""
        writer = self._tensorboard()
        if writer is None:
            return
        cell = lambda value: str(value).replace("|", "\\|").replace("\n", "<br>")[:2000]  # noqa: E731
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        writer.add_text(name, "\n".join(lines), step)
        writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _tensorboard(self):
        if "tensorboard" not in self.names:
            return None
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(f"report_to='tensorboard' needs tensorboard ({exc}): `pip install tensorboard`, "
                                  "or drop it from report_to.") from None
            self._writer = SummaryWriter(log_dir=str(self.output_dir / "runs"))
        return self._writer


def loss_callback(tracker: RunTracker, offset: int):
    """A ``TrainerCallback`` that sends an iteration's training logs to ``tracker`` at ``offset`` + its step."""
    from transformers import TrainerCallback

    class _TrainingCurves(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            values = {f"train/{k}": v for k, v in (logs or {}).items() if k in TRAIN_KEYS}
            if values:
                tracker.log(values, offset + state.global_step)

    return _TrainingCurves()


def passed_to_sft_trainer(report_to: Sequence[str]) -> list[str] | str:
    """The ``report_to`` left for each iteration's ``SFTTrainer``: what ``RunTracker`` does not track."""
    rest = [name for name in report_to if name not in SUPPORTED]
    return rest or "none"
