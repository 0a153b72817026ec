"""Experiment tracking for a LeTI run: one tracker run for the whole LeTI run, not one per iteration.

Each iteration trains with a fresh ``SFTTrainer``, whose own ``report_to`` integrations would start a new
run at step 0 every iteration, under a folder the trainer deletes (``iteration-N/sft``), and would never
see iteration 0 (before training). So LeTI logs itself: the training loss, learning rate and gradient
norm at the *cumulative* optimizer step, so curves continue across iterations and after a resume, and
LeTI's per-iteration metrics (``leti/rollout/pass_rate``, ``leti/eval/pass@1``, the status mix, seconds
per phase) at the step their iteration ended on (iteration 0 at step 0). A table of sampled programs,
with their status and feedback, goes with each iteration.

Supported here:

- ``tensorboard``: event files in ``output_dir/runs`` (kept); the table is Markdown in the Text tab.
- ``trackio``: one trackio run in ``LetiConfig.project`` (``trackio_space_id``/``trackio_bucket_id`` as in
  transformers; local by default, in ``TRACKIO_DIR``), named ``run_name`` or after the run folder. The
  name is kept in ``output_dir/tracking.json``, so a resumed LeTI run continues the same trackio run.
  The table is a ``trackio.Table``.

Other ``report_to`` integrations (wandb, ...) are handed to each iteration's ``SFTTrainer`` as TRL would
(one tracker run per iteration).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SUPPORTED = ("tensorboard", "trackio")
TRAIN_KEYS = ("loss", "learning_rate", "grad_norm")
RUN_FILE = "tracking.json"  # the trackio run's name, kept for a resume


class RunTracker:
    """The trackers of one LeTI run (main process only; elsewhere every call does nothing).

    Args:
        report_to: ``LetiConfig.report_to`` (TRL's list); the supported names are tracked here.
        output_dir: The run folder (``runs/`` under it holds the tensorboard event files).
        enabled: False on every process but the main one.
        project, run_name, space_id, bucket_id, private: trackio's run (transformers' ``project``,
            ``run_name``, ``trackio_space_id``, ``trackio_bucket_id``, ``hub_private_repo``).
        config: The run's configuration, stored with the trackio run.
    """

    def __init__(self, report_to: Sequence[str], output_dir: str | Path, enabled: bool = True, *,
                 project: str = "leti", run_name: str | None = None, space_id: str | None = None,
                 bucket_id: str | None = None, private: bool | None = None, config: Mapping[str, Any] | None = None):
        self.names = [name for name in report_to if name in SUPPORTED] if enabled else []
        self.output_dir = Path(output_dir)
        self._writer = None
        self._trackio_run = None
        self._trackio_options = {"project": project, "name": run_name, "space_id": space_id, "bucket_id": bucket_id,
                                 "private": private, "config": dict(config or {})}

    def __bool__(self) -> bool:
        return bool(self.names)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Numeric values of ``metrics`` at ``step`` (other values are skipped)."""
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        writer = self._tensorboard()
        if writer is not None:
            for key, value in numbers.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        run = self._trackio()
        if run is not None and numbers:
            run.log(numbers, step=step)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """A table (tensorboard: a Markdown table in the Text tab; trackio: a ``trackio.Table``)."""
        writer = self._tensorboard()
        if writer is not None:
            cell = lambda value: str(value).replace("|", "\\|").replace("\n", "<br>")[:2000]  # noqa: E731
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
            writer.add_text(name, "\n".join(lines), step)
            writer.flush()
        run = self._trackio()
        if run is not None:
            import trackio

            run.log({name: trackio.Table(columns=list(columns), data=[[str(v)[:2000] if isinstance(v, str) else v
                                                                        for v in row] for row in rows])}, step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._trackio_run is not None:
            import trackio

            with contextlib.redirect_stdout(io.StringIO()):  # trackio's "uploading logs" line
                if trackio.context_vars.current_run.get() is self._trackio_run:
                    trackio.finish()  # also forgets it: trackio's exit hook would finish it again, printing
                else:
                    self._trackio_run.finish()
            self._trackio_run = None

    def _trackio(self):
        """The LeTI run's trackio run, started (or resumed, by the name in ``tracking.json``) on first use."""
        if "trackio" not in self.names:
            return None
        if self._trackio_run is None:
            trackio = _tracker_module("trackio", "trackio")
            options = dict(self._trackio_options)
            record = self.output_dir / RUN_FILE
            kept = json.loads(record.read_text()).get("trackio", {}) if record.is_file() else {}
            options["project"] = kept.get("project", options["project"])
            options["name"] = kept.get("name") or options["name"] or \
                f"{self.output_dir.resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"
            # trackio prints a banner per run; the one line below says what a user needs
            with contextlib.redirect_stdout(io.StringIO()):
                self._trackio_run = trackio.init(resume="allow", **options)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"trackio": {"project": options["project"], "name": options["name"]}}) + "\n")
            where = f"Space {options['space_id']}" if options["space_id"] else "`trackio show --project " \
                                                                               f"{options['project']}`"
            print(f"trackio: project {options['project']}, run {options['name']} ({where})", flush=True)
        return self._trackio_run

    def _tensorboard(self):
        if "tensorboard" not in self.names:
            return None
        if self._writer is None:
            tensorboard = _tracker_module("tensorboard", "torch.utils.tensorboard")
            self._writer = tensorboard.SummaryWriter(log_dir=str(self.output_dir / "runs"))
        return self._writer


def _tracker_module(name: str, module: str):
    """``module``, or an error naming the package that ``report_to=name`` needs."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"report_to='{name}' needs {name} ({exc}): `pip install {name}`, "
                          "or drop it from report_to.") from None


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
