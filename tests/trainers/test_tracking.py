"""One tracker run per LeTI run, for every tracker: tensorboard event files and trackio's storage read back,
steps checked across iterations, a crash and its resume; wandb and MLflow through stand-ins of their modules
(neither is installed); the one-line errors for unknown and missing trackers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import types

import pytest

from tests.conftest import REPO
from tests.trainers.conftest import small_config
from trainers import LetiTrainer
from trainers.tracking import RunTracker, check_report_to


@pytest.fixture(scope="module")
def arith_tasks():
    import leti_env

    return leti_env.load_tasks("LETI-Arith", "train", 6)


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events


def test_tensorboard_logs_the_whole_run_at_cumulative_steps(tmp_path, tiny_model_dir, arith_tasks):
    config = small_config(tmp_path / "run", num_iterations=2, report_to=["tensorboard"], logging_steps=1,
                          eval_max_tasks=2)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=arith_tasks[:4], eval_tasks=arith_tasks[4:6])
    trainer.train()
    history = trainer.metrics_history()
    ends = [m.get("run/optimizer_steps", 0) for m in history]  # iteration 0, 1, 2
    assert ends[0] == 0 and 0 < ends[1] < ends[2]
    runs = tmp_path / "run" / "runs"
    assert not (tmp_path / "run" / "iteration-1" / "sft").exists() and any(runs.iterdir())  # the logs survive
    steps, events = scalars(runs)
    assert steps["leti/eval/pass@1"] == ends  # iteration 0 at step 0, then where each iteration ended
    assert steps["leti/rollout/pass_rate"] == ends[1:] and steps["leti/time/sampling"] == ends[1:]
    loss_steps = steps["train/loss"]  # one curve across iterations: the second continues where the first stopped
    assert loss_steps == sorted(loss_steps) and len(set(loss_steps)) == len(loss_steps)
    assert loss_steps[0] == 1 and loss_steps[-1] == ends[2] and ends[1] in loss_steps and ends[1] + 1 in loss_steps
    assert not any(tag.startswith("train/train/") or tag.startswith("train/eval/") for tag in steps)  # no double prefix
    assert events.Tags()["tensors"] and "leti/rollouts/text_summary" in events.Tags()["tensors"]  # the programs table

    resumed = LetiTrainer(str(tiny_model_dir), small_config(tmp_path / "run", num_iterations=3, report_to=["tensorboard"],
                                                            logging_steps=1, eval_max_tasks=2),
                          train_tasks=arith_tasks[:4], eval_tasks=arith_tasks[4:6])
    resumed.train()
    steps, _ = scalars(runs)
    end3 = resumed.metrics_history()[-1]["run/optimizer_steps"]
    assert steps["leti/eval/pass@1"] == ends + [end3] and end3 > ends[2]  # continued, not restarted at 0
    assert min(s for s in steps["train/loss"] if s > ends[2]) == ends[2] + 1
    shutil.rmtree(runs)


# A LeTI run on both trackers, as its own process (trackio reads TRACKIO_DIR once, at import). With a third
# argument, the process kills itself with SIGTERM in iteration 2, once its first two optimizer steps were
# logged (and trackio's background writer has stored them): nothing of LeTI's or trackio's gets to clean up.
TRAIN = """
import os, signal, sys, time
import leti_env
from transformers import TrainerCallback
from tests.trainers.conftest import small_config
from trainers import LetiTrainer

class Kill(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):  # runs before LeTI's own logging of this step
        if "iteration-2" in args.output_dir and state.global_step == 3:
            time.sleep(2)  # trackio stores its queue every 0.5 s
            os.kill(os.getpid(), signal.SIGTERM)

tasks = leti_env.load_tasks("LETI-Arith", "train", 6)
config = small_config(sys.argv[2], num_iterations=2, report_to=["tensorboard", "trackio"], logging_steps=1,
                      per_device_train_batch_size=2, eval_max_tasks=2, project="leti-test")
trainer = LetiTrainer(sys.argv[1], config, train_tasks=tasks[:4], eval_tasks=tasks[4:6],
                      callbacks=[Kill()] if len(sys.argv) > 3 else None)
trainer.train()
print("END", trainer.metrics_history()[-1]["run/optimizer_steps"])
"""
TRACKIO_READ = """
import json
from trackio import SQLiteStorage
runs = SQLiteStorage.get_runs("leti-test")
print(json.dumps({"runs": runs, "logs": SQLiteStorage.get_logs("leti-test", runs[0])}, default=str))
"""


def test_a_run_killed_mid_iteration_resumes_its_tracker_runs_without_repeated_steps(tmp_path, tiny_model_dir):
    """The user's report: killed in an iteration, then resumed, the curves went back (steps P+1.. twice).
    Now the resumed run drops what the killed attempt logged after the last complete iteration's step P:
    tensorboard by purge_step, trackio (local, SQLite) by deleting those rows."""
    pytest.importorskip("trackio")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "PYTHONPATH": str(REPO)}
    run_dir = tmp_path / "run"

    def python(code, *args):
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=600)

    def trackio_logs():
        out = python(TRACKIO_READ)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    killed = python(TRAIN, tiny_model_dir, run_dir, "kill")
    assert killed.returncode == -signal.SIGTERM, killed.stderr[-3000:]  # a hard kill, not a clean exit
    assert (run_dir / "iteration-1" / "COMPLETE").exists() and not (run_dir / "iteration-2" / "COMPLETE").exists()
    end1 = json.loads((run_dir / "iteration-1" / "COMPLETE").read_text())["run/optimizer_steps"]
    assert end1 >= 3
    # the killed attempt's steps of iteration 2 reached both trackers: what the resume must drop
    steps, _ = scalars(run_dir / "runs")
    assert steps["train/loss"] == list(range(1, end1 + 3))
    stored = trackio_logs()
    assert [row["step"] for row in stored["logs"] if "train/loss" in row] == list(range(1, end1 + 3))

    resumed = python(TRAIN, tiny_model_dir, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    end2 = int(resumed.stdout.split("END")[1])
    assert end2 > end1 + 2
    name = json.loads((run_dir / "tracking.json").read_text())["trackio"]["name"]
    assert f"trackio: project leti-test, run {name}" in resumed.stdout  # one line says where the run is
    assert "Trackio project initialized" not in resumed.stdout and "Uploading logs" not in resumed.stdout
    history = [json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert history == [0, 1, 2]

    # tensorboard, read as TensorBoard reads it: every step once, in order, iteration 2 from the resumed attempt
    steps, events = scalars(run_dir / "runs")
    assert len(list((run_dir / "runs").glob("events.out.tfevents.*"))) == 2  # one file per attempt
    assert steps["train/loss"] == list(range(1, end2 + 1))
    assert steps["train/learning_rate"] == list(range(1, end2 + 1))
    assert steps["leti/eval/pass@1"] == [0, end1, end2] and steps["leti/rollout/pass_rate"] == [end1, end2]
    assert [e.step for e in events.Tensors("leti/rollouts/text_summary")] == [end1, end2]  # the programs table

    # trackio, read back from its storage: one run, every step once, in the order logged
    stored = trackio_logs()
    assert stored["runs"] == [name]  # one trackio run for the LeTI run, crash and resume included
    logs = stored["logs"]
    steps = lambda key: [row["step"] for row in logs if key in row]  # noqa: E731
    assert steps("train/loss") == list(range(1, end2 + 1))
    assert steps("leti/eval/pass@1") == [0, end1, end2] and steps("leti/rollout/pass_rate") == [end1, end2]
    tables = [row["leti/rollouts"] for row in logs if "leti/rollouts" in row]
    assert steps("leti/rollouts") == [end1, end2] and "feedback" in json.dumps(tables[0])
    assert not (REPO / "trackio").exists()


def test_unknown_and_missing_trackers_are_one_line_naming_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError) as error:
        RunTracker(["tensorboard", "tensorbord"], tmp_path)
    message = str(error.value)
    assert "\n" not in message and "report_to='tensorbord'" in message and "did you mean 'tensorboard'?" in message
    assert "wandb" in message and "mlflow" in message  # the names that work
    with pytest.raises(ValueError, match="did you mean 'comet_ml'"):
        check_report_to("comet")
    with pytest.raises(ValueError, match="report_to='neptune' is not a tracker leti can log to: leti logs"):
        check_report_to(["neptune"])  # transformers knows it, accelerate does not: nothing near it
    # a tracker accelerate knows, whose package is missing
    import trainers.tracking as tracking

    real = tracking._installed
    monkeypatch.setattr(tracking, "_installed", lambda module: module != "wandb" and real(module))
    with pytest.raises(ImportError) as error:
        RunTracker(["tensorboard", "wandb"], tmp_path, enabled=False)  # checked on every process
    message = str(error.value)
    assert "\n" not in message and "report_to='wandb' needs the wandb package" in message
    assert "`pip install wandb`" in message
    assert check_report_to("none") == [] and check_report_to(None) == []
    assert check_report_to(["tensorboard", "tensorboard"]) == ["tensorboard"]
    assert not list(tmp_path.iterdir())


def test_other_processes_track_nothing(tmp_path):
    tracker = RunTracker(["tensorboard"], tmp_path / "run", enabled=False)
    tracker.start(0)
    tracker.log({"train/loss": 1.0}, 1)
    tracker.log_table("leti/rollouts", ["a"], [["x"]], 1)
    tracker.close()
    assert not tracker and not (tmp_path / "run").exists()


def stand_in(monkeypatch, name: str, module) -> list:
    """``module`` as the installed package ``name``; returns the list its calls are recorded in."""
    import importlib.machinery

    import trainers.tracking as tracking

    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    monkeypatch.setitem(sys.modules, name, module)
    real = tracking._installed
    monkeypatch.setattr(tracking, "_installed", lambda m: m == name or real(m))
    return module.calls


def fake_wandb(rewind_fails: bool = False):
    wandb = types.ModuleType("wandb")
    wandb.calls = []

    class Run:
        def __init__(self, kwargs):
            self.id = kwargs.get("id") or kwargs.get("resume_from", "").split("?")[0]

        def log(self, values, step=None):
            wandb.calls.append(("log", values, step))

        def finish(self):
            wandb.calls.append(("finish",))

    def init(**kwargs):
        wandb.calls.append(("init", kwargs))
        if "resume_from" in kwargs and rewind_fails:
            raise RuntimeError("rewind is not enabled for this account\nmore")
        return Run(kwargs)

    wandb.init = init
    wandb.Table = lambda columns=None, data=None, dataframe=None: ("Table", columns, data)
    return wandb


def test_wandb_is_one_run_per_leti_run_resumed_by_id_and_rewound(tmp_path, monkeypatch, capsys):
    calls = stand_in(monkeypatch, "wandb", fake_wandb())
    tracker = RunTracker(["wandb"], tmp_path, project="leti-x", run_name="mine", config={"lr": 0.1})
    tracker.start(0)
    tracker.log({"train/loss": 2.0, "note": "skipped"}, 1)
    tracker.log_table("leti/rollouts", ["program"], [["x" * 3000]], 1)
    tracker.close()
    kind, kwargs = calls[0]
    run_id = kwargs["id"]
    assert kind == "init" and kwargs["resume"] == "allow" and kwargs["project"] == "leti-x"
    assert kwargs["name"] == "mine" and kwargs["config"] == {"lr": 0.1}
    assert ("log", {"train/loss": 2.0}, 1) in calls
    table = next(c for c in calls if c[0] == "log" and "leti/rollouts" in c[1])[1]["leti/rollouts"]
    assert table[1] == ["program"] and len(table[2][0][0]) == 2000
    assert calls[-1] == ("finish",)
    assert json.loads((tmp_path / "tracking.json").read_text())["wandb"] == {"project": "leti-x", "id": run_id}

    calls.clear()  # the resume: the same run, rewound to the step after the last complete iteration
    RunTracker(["wandb"], tmp_path, project="other").start(resume_step=7)
    assert calls == [("init", {"project": "leti-x", "resume_from": f"{run_id}?_step=8", "name": None,
                               "config": {}})]

    calls = stand_in(monkeypatch, "wandb", fake_wandb(rewind_fails=True))  # no rewind on this account
    RunTracker(["wandb"], tmp_path).start(resume_step=7)
    assert [c[1].get("id") for c in calls] == [None, run_id] and calls[1][1]["resume"] == "allow"
    out = capsys.readouterr().out
    assert f"wandb: could not rewind run {run_id} to step 8 (RuntimeError: rewind is not enabled for this " \
           "account); resumed it in place" in out


def fake_mlflow():
    mlflow = types.ModuleType("mlflow")
    mlflow.calls = []
    mlflow.utils = types.SimpleNamespace(validation=types.SimpleNamespace(MAX_PARAM_VAL_LENGTH=6000,
                                                                          MAX_PARAMS_TAGS_PER_BATCH=100))
    record = lambda name: lambda *args, **kwargs: mlflow.calls.append((name, args, kwargs))  # noqa: E731

    def start_run(run_id=None, **kwargs):
        mlflow.calls.append(("start_run", (), {"run_id": run_id, **kwargs}))
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=run_id or "r123"))

    mlflow.search_experiments = lambda filter_string: []
    mlflow.create_experiment = lambda name, artifact_location=None, tags=None: "e1"
    mlflow.start_run = start_run
    for name in ("log_params", "log_metrics", "log_table", "end_run"):
        setattr(mlflow, name, record(name))
    return mlflow


def test_mlflow_is_one_run_per_leti_run_resumed_by_run_id(tmp_path, monkeypatch, capsys):
    calls = stand_in(monkeypatch, "mlflow", fake_mlflow())
    tracker = RunTracker(["mlflow"], tmp_path / "run", config={"lr": 0.1, "eval_k": [1, 10]})
    tracker.start(0)
    tracker.log({"leti/eval/pass@1": 0.5}, 4)
    tracker.log_table("leti/rollouts", ["task_id", "status"], [["a", "passed"]], 4)
    tracker.close()
    names = [c[0] for c in calls]
    assert names == ["start_run", "log_params", "log_metrics", "log_table", "end_run"]
    assert calls[0][2]["run_id"] is None and calls[0][2]["run_name"] == "run"
    assert calls[1][1][0] == {"lr": 0.1, "eval_k": "[1, 10]"}  # the config, as MLflow's params
    assert calls[2][1] == ({"leti/eval/pass_1": 0.5},) and calls[2][2] == {"step": 4}  # MLflow refuses '@'
    assert calls[3][2] == {"data": {"task_id": ["a"], "status": ["passed"]},
                           "artifact_file": "leti/rollouts/step-4.json"}
    assert json.loads((tmp_path / "run" / "tracking.json").read_text())["mlflow"] == {"experiment": "leti",
                                                                                      "run_id": "r123"}
    calls.clear()
    RunTracker(["mlflow"], tmp_path / "run").start(resume_step=4)
    assert [c[0] for c in calls] == ["start_run"] and calls[0][2]["run_id"] == "r123"  # params are not re-logged
    assert "mlflow: resumed run r123 after step 4; MLflow cannot delete metric points" in capsys.readouterr().out


def test_a_resume_forgets_an_iteration_recorded_but_never_complete(tmp_path):
    """Killed between writing an iteration's metrics and its COMPLETE marker: the resume continues from the
    last complete iteration's step, and metrics.jsonl loses the incomplete line (it is recorded again)."""
    lines = [{"iteration": 0, "eval/pass@1": 0.1}, {"iteration": 1, "run/optimizer_steps": 4},
             {"iteration": 2, "run/optimizer_steps": 8}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    trainer = types.SimpleNamespace(output_dir=tmp_path, distributed=types.SimpleNamespace(is_main=True))
    trainer.metrics_history = lambda: LetiTrainer.metrics_history(trainer)
    assert LetiTrainer._forget_incomplete(trainer, {1}) == lines[:2]
    assert LetiTrainer.metrics_history(trainer) == lines[:2]
    assert LetiTrainer._forget_incomplete(trainer, set()) == lines[:1]  # killed in iteration 1: step 0
