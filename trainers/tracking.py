"""Experiment tracking for a LeTI run: one tracker run for the whole LeTI run, for every tracker.

Each iteration trains with a fresh ``SFTTrainer``, whose own ``report_to`` integrations would start a new
run at step 0 every iteration and would never see iteration 0 (before training). So the iterations'
trainers report to nothing, and LeTI logs itself, through ``accelerate.tracking`` (TensorBoard, trackio,
wandb, MLflow, Comet, Aim, ClearML, DVCLive, SwanLab, and any tracker registered with
``accelerate.tracking.register_tracker_class``): the training loss, learning rate and gradient norm at the
*cumulative* optimizer step (``loss_callback``), so curves continue across iterations and after a resume,
and LeTI's per-iteration metrics (``leti/rollout/pass_rate``, ``leti/eval/pass@1``, the status mix,
seconds per phase) at the step their iteration ended on (iteration 0 at step 0). A table of sampled
programs, with their status and feedback, goes with each iteration.

A resumed LeTI run continues the same tracker run: its id or name is kept in ``output_dir/tracking.json``.
It starts again after its last complete iteration, whose last optimizer step is ``resume_step``; what an
interrupted attempt logged after that step is dropped where the tracker can drop it:

- ``tensorboard``: event files in ``output_dir/runs``; a resume opens them with
  ``SummaryWriter(purge_step=resume_step + 1)``, so TensorBoard discards every event at a later step
  written before it. The table is Markdown in the Text tab.
- ``trackio``: one trackio run in ``LetiConfig.project``, named ``run_name`` or after the run folder
  (``trackio_space_id``/``trackio_bucket_id`` as in transformers; local by default, in ``TRACKIO_DIR``).
  trackio has no call to delete steps; when the run is local and stored in SQLite (trackio's default), a
  resume deletes the run's rows after ``resume_step`` from the project's database itself. On a Space, a
  self-hosted server, or with ``TRACKIO_STORAGE_MODE=jsonl``, it cannot: the interrupted attempt's later
  rows stay, and the resumed steps are logged beside them (one line says so). The table is a
  ``trackio.Table``.
- ``wandb``: ``id`` + ``resume="allow"``; a resume first tries W&B's rewind,
  ``resume_from=f"{id}?_step={resume_step}"`` (a preview feature that accounts must ask for): the run's
  history is kept up to ``resume_step`` and continues at the next step. Offline (``WANDB_MODE=offline``)
  wandb does not ask W&B: the rewind is kept in the offline run and goes to W&B with ``wandb sync``. Where
  W&B refuses it, the run is resumed in place and W&B ignores steps lower than its last one, so the
  interrupted attempt's values stay up to its last step (one line says so). The table is a ``wandb.Table``.
- ``mlflow``: the run id (``mlflow.start_run(run_id=...)``), in experiment ``project``. MLflow cannot
  delete metric points: the interrupted attempt's points after ``resume_step`` stay beside the resumed
  ones. Metric names lose characters MLflow refuses (``pass@1`` is ``pass_1``); the table is
  ``mlflow.log_table``.
- ``comet_ml``: an experiment key made by LeTI, ``comet_ml.start(experiment_key=..., mode="get_or_create")``;
  like MLflow, steps logged again stand beside the old ones.
- ``aim`` (``run_hash``, repository in ``output_dir``), ``clearml`` (``continue_last_task=<task id>``,
  iteration offset 0), ``dvclive`` (``resume=True``, ``output_dir/dvclive``), ``swanlab`` (``id`` +
  ``resume="allow"``): resumed in place by their own run id; nothing is dropped.
- a registered tracker: started as accelerate starts it (the project name, and ``output_dir`` where it
  needs a directory); no resume.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import io
import json
import re
import secrets
import string
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TRAIN_KEYS = ("loss", "learning_rate", "grad_norm")
RUN_FILE = "tracking.json"  # each tracker's run id or name, kept for a resume
TENSORBOARD_DIR = "runs"  # output_dir/runs: the event files
# accelerate's tracker names -> (module imported, package to install)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "trackio": ("trackio", "trackio"),
            "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow"), "comet_ml": ("comet_ml", "comet_ml"),
            "aim": ("aim", "aim"), "clearml": ("clearml", "clearml"), "dvclive": ("dvclive", "dvclive"),
            "swanlab": ("swanlab", "swanlab")}
TABLE_CELL_CHARS = 2000


def known_trackers() -> list[str]:
    """The ``report_to`` names LeTI can log to: accelerate's trackers, and any registered with it."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    return sorted(LOGGER_TYPE_TO_CLASS)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_report_to(report_to: Sequence[str] | str | None) -> list[str]:
    """The tracker names of ``report_to`` (``"none"`` and empty: none), each one LeTI can log to and installed.

    Raises ``ValueError`` (one line, with the nearest known name) for a name no tracker has, and
    ``ImportError`` (one line, naming the package) for a tracker whose package is not installed."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [name for name in names if name and name != "none"]
    known = known_trackers()
    out: list[str] = []
    for name in names:
        if name not in known:
            lowered = {k.lower(): k for k in known}
            close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.5)
            hint = f"did you mean {lowered[close[0]]!r}? " if close else ""
            raise ValueError(f"report_to={name!r} is not a tracker leti can log to: {hint}leti logs through "
                             f"accelerate's trackers: {', '.join(known)} (or 'none').")
        module, package = PACKAGES.get(name, (None, None))
        if module is not None and not _installed(module):
            raise ImportError(f"report_to={name!r} needs the {package} package, which is not installed: "
                              f"`pip install {package}`, or drop {name} from report_to.")
        if name not in out:
            out.append(name)
    return out


def _scalar_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every value a bool, int, float, str or None (others as JSON text): what trackers'
    hyperparameter tables take."""
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
            for k, v in config.items()}


class RunTracker:
    """The trackers of one LeTI run (main process only; elsewhere every call does nothing).

    Args:
        report_to: ``LetiConfig.report_to`` (TRL's list): checked on every process (``check_report_to``).
        output_dir: The run folder (``runs/`` under it holds the tensorboard event files; ``tracking.json``
            each tracker's run).
        enabled: False on every process but the main one.
        project: trackio's project, wandb's (unless ``WANDB_PROJECT`` is set), MLflow's experiment, ...
        run_name, space_id, bucket_id, private: the run's name, and trackio's Space (transformers'
            ``run_name``, ``trackio_space_id``, ``trackio_bucket_id``, ``hub_private_repo``).
        config: The run's configuration, stored with the tracker run.
    """

    def __init__(self, report_to: Sequence[str] | str | None, output_dir: str | Path, enabled: bool = True, *,
                 project: str = "leti", run_name: str | None = None, space_id: str | None = None,
                 bucket_id: str | None = None, private: bool | None = None, config: Mapping[str, Any] | None = None):
        names = check_report_to(report_to)
        self.names = names if enabled else []
        self.output_dir = Path(output_dir)
        self.project = project
        self.run_name = run_name
        self.space_id, self.bucket_id, self.private = space_id, bucket_id, private
        self.config = dict(config or {})
        self.trackers: dict[str, Any] = {}  # name -> a started accelerate GeneralTracker
        self.resume_step: int | None = None
        self._started = False

    def __bool__(self) -> bool:
        return bool(self.names)

    # -- starting -----------------------------------------------------------------------------------

    def start(self, resume_step: int | None = None) -> None:
        """Start (or resume) every tracker's run. ``resume_step``: the cumulative optimizer step the last
        complete iteration ended on (0 for a new run); a resumed tracker run drops what was logged after it
        (None: nothing is dropped)."""
        if self._started or not self.names:
            self._started = True
            return
        self._started = True
        self.resume_step = None if resume_step is None else int(resume_step)
        from accelerate import PartialState

        if not PartialState._shared_state:  # accelerate's trackers log through it (LetiConfig has set it up)
            PartialState()
        record_path = self.output_dir / RUN_FILE
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            starter = getattr(self, f"_start_{name}", None) or self._start_registered
            tracker, kept = starter(name, record.get(name))
            tracker.main_process_only = False  # LeTI only makes trackers on the main process
            self.trackers[name] = tracker
            record[name] = kept
            # each tracker's run on disk as soon as it exists: a run killed later resumes it
            record_path.write_text(json.dumps(record, indent=1) + "\n")

    def _start_tensorboard(self, name: str, kept: dict | None):
        from accelerate.tracking import TensorBoardTracker

        folder = self.output_dir / TENSORBOARD_DIR
        resumed = folder.is_dir() and any(folder.glob("events.out.tfevents.*"))
        # purge_step: TensorBoard discards the events at this step and later that earlier files hold
        options = {"purge_step": self.resume_step + 1} if resumed and self.resume_step is not None else {}
        tracker = TensorBoardTracker(TENSORBOARD_DIR, str(self.output_dir), **options)
        tracker.start()
        return tracker, {"logdir": TENSORBOARD_DIR}

    def _start_trackio(self, name: str, kept: dict | None):
        from accelerate.tracking import TrackioTracker

        kept = kept or {}
        project = kept.get("project", self.project)
        run_name = kept.get("name") or self.run_name or \
            f"{self.output_dir.resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tracker = TrackioTracker(project, name=run_name, resume="allow", space_id=self.space_id,
                                 bucket_id=self.bucket_id, private=self.private, config=self.config)
        with contextlib.redirect_stdout(io.StringIO()):  # trackio's banner; the line below says what a user needs
            tracker.start()
        where = f"Space {self.space_id}" if self.space_id else f"`trackio show --project {project}`"
        print(f"trackio: project {project}, run {run_name} ({where})", flush=True)
        if kept and self.resume_step is not None:
            dropped = _trackio_drop_after(tracker.run, project, self.resume_step)
            if dropped is None:
                print(f"trackio: resumed run {run_name} after step {self.resume_step}; trackio cannot delete steps "
                      "on a Space, a self-hosted server or with TRACKIO_STORAGE_MODE=jsonl: what the interrupted "
                      f"attempt logged after step {self.resume_step} stays beside the steps logged again",
                      flush=True)
        return tracker, {"project": project, "name": run_name}

    def _start_wandb(self, name: str, kept: dict | None):
        import os

        from accelerate.tracking import WandBTracker

        project = (kept or {}).get("project") or os.environ.get("WANDB_PROJECT") or self.project
        run_id = (kept or {}).get("id") or secrets.token_hex(4)
        options = {"name": self.run_name, "config": self.config}
        tracker = None
        if kept and self.resume_step is not None:
            # W&B's rewind: the run's history is kept up to this step and continues at the next one
            rewind = f"{run_id}?_step={self.resume_step}"
            try:
                tracker = WandBTracker(project, resume_from=rewind, **options)
                tracker.start()
            except Exception as exc:  # noqa: BLE001 - a preview feature: many accounts do not have it
                tracker = None
                print(f"wandb: could not rewind run {run_id} to step {self.resume_step} "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); resumed it in "
                      f"place: W&B ignores steps lower than the run's last, so what the interrupted attempt "
                      f"logged after step {self.resume_step} keeps its values", flush=True)
        if tracker is None:
            tracker = WandBTracker(project, id=run_id, resume="allow", **options)
            tracker.start()
        return tracker, {"project": project, "id": run_id}

    def _start_mlflow(self, name: str, kept: dict | None):
        experiment = (kept or {}).get("experiment") or self.project
        tracker = _mlflow_tracker_class()(experiment_name=experiment, run_id=(kept or {}).get("run_id"),
                                 run_name=self.run_name or self.output_dir.resolve().name)
        tracker.start()
        if not kept:
            tracker.store_init_configuration(_scalar_config(self.config))  # MLflow's params cannot change later
        elif self.resume_step is not None:
            print(f"mlflow: resumed run {tracker.active_run.info.run_id} after step {self.resume_step}; MLflow cannot "
                  f"delete metric points: what the interrupted attempt logged after step {self.resume_step} stays "
                  "beside the steps logged again", flush=True)
        return tracker, {"experiment": experiment, "run_id": tracker.active_run.info.run_id}

    def _start_comet_ml(self, name: str, kept: dict | None):
        import comet_ml
        from accelerate.tracking import CometMLTracker

        if not hasattr(comet_ml, "start"):
            raise ImportError("report_to='comet_ml' needs comet_ml 3.41 or later (comet_ml.start, which resumes "
                              "an experiment): `pip install -U comet_ml`.")
        project = (kept or {}).get("project") or self.project
        key = (kept or {}).get("experiment_key") or secrets.token_hex(16)  # comet: 32-50 letters and digits
        tracker = CometMLTracker(project, experiment_key=key, mode="get_or_create")
        tracker.start()
        if self.run_name:
            tracker.writer.set_name(self.run_name)
        if not kept:
            tracker.store_init_configuration(_scalar_config(self.config))
        return tracker, {"project": project, "experiment_key": key}

    def _start_aim(self, name: str, kept: dict | None):
        from accelerate.tracking import AimTracker

        options = {"run_hash": kept["run_hash"]} if kept and kept.get("run_hash") else {}
        tracker = AimTracker(self.run_name or self.output_dir.resolve().name, str(self.output_dir), **options)
        tracker.start()
        if not kept:
            tracker.store_init_configuration(_scalar_config(self.config))
        return tracker, {"run_hash": tracker.writer.hash}

    def _start_clearml(self, name: str, kept: dict | None):
        from accelerate.tracking import ClearMLTracker

        options = {"task_name": self.run_name or self.output_dir.resolve().name}
        if kept and kept.get("task_id"):
            options["continue_last_task"] = kept["task_id"]
        tracker = ClearMLTracker(self.project, **options)
        tracker.start()
        if kept:
            tracker.task.set_initial_iteration(0)  # LeTI's steps are absolute: no offset after the last one
        else:
            tracker.store_init_configuration(_scalar_config(self.config))
        return tracker, {"task_id": tracker.task.id}

    def _start_dvclive(self, name: str, kept: dict | None):
        from accelerate.tracking import DVCLiveTracker

        tracker = DVCLiveTracker(dir=str(self.output_dir / "dvclive"), resume=bool(kept))
        tracker.start()
        if not kept:
            tracker.store_init_configuration(_scalar_config(self.config))
        return tracker, {"dir": "dvclive"}

    def _start_swanlab(self, name: str, kept: dict | None):
        from accelerate.tracking import SwanLabTracker

        run_id = (kept or {}).get("id") or "".join(secrets.choice(string.ascii_lowercase + string.digits)
                                                   for _ in range(21))  # swanlab's id: 21 letters and digits
        tracker = SwanLabTracker(self.project, experiment_name=self.run_name, id=run_id, resume="allow",
                                 config=self.config)
        tracker.start()
        return tracker, {"id": run_id}

    def _start_registered(self, name: str, kept: dict | None):
        """A tracker registered with ``accelerate.tracking.register_tracker_class``, started as accelerate does."""
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        cls = LOGGER_TYPE_TO_CLASS[name]
        tracker = cls(self.project, str(self.output_dir)) if cls.requires_logging_directory else cls(self.project)
        tracker.start()
        return tracker, {}

    # -- logging ------------------------------------------------------------------------------------

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Numeric values of ``metrics`` at ``step`` (other values are skipped)."""
        if not self.names:
            return
        self.start()
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numbers:
            return
        for tracker in self.trackers.values():
            tracker.log(numbers, step=step)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """A table: tensorboard a Markdown table in the Text tab, trackio a ``trackio.Table``, wandb and
        ClearML their tables, MLflow ``mlflow.log_table``, Comet ``log_table``; the other trackers none."""
        if not self.names:
            return
        self.start()
        columns = list(columns)
        data = [[str(v)[:TABLE_CELL_CHARS] if isinstance(v, str) else v for v in row] for row in rows]
        for tracker_name, tracker in self.trackers.items():
            if tracker_name == "tensorboard":
                cell = lambda value: str(value).replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
                lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in data]
                tracker.log({name: "\n".join(lines)}, step=step)
            elif tracker_name == "trackio":
                import trackio

                tracker.log({name: trackio.Table(columns=columns, data=data)}, step=step)
            elif tracker_name == "mlflow":
                import mlflow

                mlflow.log_table(data={c: [row[i] for row in data] for i, c in enumerate(columns)},
                                 artifact_file=f"{name}/step-{step}.json")
            elif tracker_name == "comet_ml":
                tracker.writer.log_table(f"{name.replace('/', '-')}-step-{step}.csv", tabular_data=data,
                                         headers=columns)
            elif hasattr(tracker, "log_table"):  # wandb, clearml
                tracker.log_table(name, columns=columns, data=data, step=step)

    def close(self) -> None:
        """Finish every tracker's run (an error is reported in one line, never raised: ``close`` runs in a
        ``finally``)."""
        for name, tracker in self.trackers.items():
            try:
                if name == "trackio":
                    _finish_trackio(tracker.run)
                else:
                    tracker.finish()
            except Exception as exc:  # noqa: BLE001
                print(f"{name}: finishing the run failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        self.trackers = {}
        self._started = False


def _mlflow_tracker_class():
    from accelerate.tracking import MLflowTracker

    class MLflowNames(MLflowTracker):
        """accelerate's MLflow tracker, with metric names MLflow accepts (``pass@1`` -> ``pass_1``)."""

        def log(self, values: dict, step: int | None = None, **kwargs):
            super().log({re.sub(r"[^/\w.\- :]", "_", k): v for k, v in values.items()}, step=step, **kwargs)

    return MLflowNames


def _finish_trackio(run) -> None:
    import trackio

    with contextlib.redirect_stdout(io.StringIO()):  # trackio's "uploading logs" line
        if trackio.context_vars.current_run.get() is run:
            trackio.finish()  # also forgets it: trackio's exit hook would finish it again, printing
        else:
            run.finish()


def _trackio_drop_after(run, project: str, step: int) -> int | None:
    """Delete what ``run`` logged after ``step`` from trackio's local SQLite database; the number of rows
    deleted, or None where trackio does not keep the run there (a Space, a self-hosted server, JSONL
    fragments): trackio has no call of its own to delete steps."""
    import sqlite3

    from trackio.sqlite_storage import SQLiteStorage

    if not getattr(run, "_is_local", False) or getattr(run, "_storage_mode", None) != "sqlite":
        return None
    db_path = SQLiteStorage.get_project_db_path(project)
    if not db_path.is_file():
        return 0
    lock = getattr(SQLiteStorage, "_get_process_lock", None)  # trackio's own lock between writers
    deleted = 0
    with lock(project) if lock is not None else contextlib.nullcontext():
        conn = sqlite3.connect(str(db_path), timeout=30)
        try:
            with conn:
                for table in ("metrics", "traces"):
                    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                    if "step" not in columns:
                        continue
                    column, value = ("run_id", run.id) if "run_id" in columns else ("run_name", run.name)
                    cursor = conn.execute(f"DELETE FROM {table} WHERE {column} = ? AND step > ?", (value, step))
                    deleted += max(cursor.rowcount, 0)
        finally:
            conn.close()
    return deleted


def loss_callback(tracker: RunTracker, offset: int):
    """A ``TrainerCallback`` that sends an iteration's training logs to ``tracker`` at ``offset`` + its step."""
    from transformers import TrainerCallback

    class _TrainingCurves(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            values = {f"train/{k}": v for k, v in (logs or {}).items() if k in TRAIN_KEYS}
            if values:
                tracker.log(values, offset + state.global_step)

    return _TrainingCurves()
