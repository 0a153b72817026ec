"""One tracker run per LeTI run, for every tracker: tensorboard event files, trackio's storage, wandb's offline
runs and MLflow's file store (where mlflow is installed) read back, steps checked across iterations, a crash
and its resume; the one-line errors for unknown and missing trackers."""

from __future__ import annotations

import importlib.util
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


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """wandb offline, everything it writes under tmp_path; the folder its offline runs go to."""
    import wandb

    folder = tmp_path / "wandb"
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        (folder / name.lower()).mkdir(parents=True)
        monkeypatch.setenv(name, str(folder / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    wandb.teardown()  # wandb reads its environment once a process, when set up: set it up again with this one
    yield folder / "wandb_dir" / "wandb"
    wandb.teardown()


def wandb_records(path):
    """The records of an offline run's ``.wandb`` file: LevelDB's log format (32 KiB blocks, each record a
    7-byte header and a chunk) after wandb's 7-byte file header, each record a ``wandb_internal_pb2.Record``
    (wandb has no reader of its own in Python since wandb-core replaced its internal process)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, record = 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if room >= 7 else (0, 0, 0)
        if kind == 0:  # the rest of a block too short for a header, or zeros
            pos += room
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        record = chunk if kind in (1, 2) else record + chunk  # full, first | middle, last
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(record)


def wandb_offline_runs(folder):
    """Each offline run in ``folder``, in the order started: its run record, its history (step -> values)
    and its offline run directory."""
    import wandb

    wandb.teardown()  # wandb-core may write a run's file after finish() returns: this waits for it to stop
    out = []
    for run_dir in sorted(folder.glob("offline-run-*")):
        (path,) = run_dir.glob("run-*.wandb")
        records = list(wandb_records(path))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        history = {}
        for r in records:
            if r.WhichOneof("record_type") == "history":
                values: dict = {}
                for item in r.history.item:  # a key, or a path of keys into a value (a table's fields)
                    *keys, last = [item.key] if item.key else list(item.nested_key)
                    place = values
                    for key in keys:
                        place = place.setdefault(key, {})
                    place[last] = json.loads(item.value_json)
                history[r.history.step.num] = {k: v for k, v in values.items() if not k.startswith("_")}
        out.append((run, history, run_dir))
    return out


def log_an_interrupted_run(tracker):
    """What a LeTI run logs, killed in its second iteration: iteration 0 at step 0, iteration 1 ending on
    step 4 (its metrics and table), then steps 5 and 6 of iteration 2 (which the resume drops)."""
    tracker.start(0)
    tracker.log({"leti/eval/pass@1": 0.25, "note": "not a number"}, 0)
    for step in range(1, 7):
        tracker.log({"train/loss": 10.0 - step}, step)
        if step == 4:
            tracker.log({"leti/eval/pass@1": 0.5}, 4)
            tracker.log_table("leti/rollouts", ["task_id", "program"], [["a", "x" * 3000]], 4)
    tracker.close()


def test_wandb_is_one_run_per_leti_run_rewound_on_resume(tmp_path, offline_wandb, capsys):
    """Real wandb, offline: one run id for the LeTI run, its config, the metrics at LeTI's steps, the table;
    the resume rewinds the same run to the last complete iteration's step and logs the next steps again.
    Offline, wandb does not ask W&B for the rewind: the offline run keeps it (its branch point)."""
    log_an_interrupted_run(RunTracker(["wandb"], tmp_path / "run", project="leti-x", run_name="mine",
                                      config={"lr": 0.1, "eval_k": [1, 10]}))
    kept = json.loads((tmp_path / "run" / "tracking.json").read_text())["wandb"]
    run_id = kept["id"]
    assert kept == {"project": "leti-x", "id": run_id}
    resumed = RunTracker(["wandb"], tmp_path / "run", project="other", config={"lr": 0.2})
    resumed.start(resume_step=4)
    for step in range(5, 9):
        resumed.log({"train/loss": 100.0 + step}, step)
    resumed.close()
    assert "could not rewind" not in capsys.readouterr().out

    (first, history, run_dir), (second, rewound, _) = wandb_offline_runs(offline_wandb)  # two attempts, one run
    assert first.run_id == second.run_id == run_id and first.project == second.project == "leti-x"
    assert first.display_name == "mine"
    config = {c.key: json.loads(c.value_json) for c in first.config.update}
    assert config["lr"] == 0.1 and config["eval_k"] == [1, 10]
    assert {s: v.get("train/loss") for s, v in history.items()} == {0: None, **{s: 10.0 - s for s in range(1, 7)}}
    assert history[0] == {"leti/eval/pass@1": 0.25} and history[4]["leti/eval/pass@1"] == 0.5  # "note" skipped
    table = history[4]["leti/rollouts"]
    assert table["_type"] == "table-file"
    stored = json.loads((run_dir / "files" / table["path"]).read_text())
    assert stored["columns"] == ["task_id", "program"] and stored["data"][0][0] == "a"
    assert len(stored["data"][0][1]) == 2000  # a long cell is cut
    # the resume: the same run rewound to step 4 (W&B keeps its history up to there), then steps 5.. again
    assert {s: v["train/loss"] for s, v in rewound.items()} == {s: 100.0 + s for s in range(5, 9)}
    assert (second.branch_point.run, second.branch_point.metric, second.branch_point.value) == (run_id, "_step", 4)


def test_wandb_resumes_in_place_where_w_and_b_refuses_the_rewind(tmp_path, offline_wandb, monkeypatch, capsys):
    """W&B refuses a rewind for an account without the preview. That answer comes from W&B's server, which
    an offline run never asks, so it alone is stood in for: wandb.init raises what wandb-core raises then
    (``CommError: failed to rewind run: ...``) when given ``resume_from``; the rest is real wandb, offline.
    leti says so in one line and resumes the run in place (same id, ``resume="allow"``)."""
    import wandb

    log_an_interrupted_run(RunTracker(["wandb"], tmp_path / "run", project="leti-x"))
    run_id = json.loads((tmp_path / "run" / "tracking.json").read_text())["wandb"]["id"]
    real_init = wandb.init

    def init(**kwargs):
        if "resume_from" in kwargs:
            raise wandb.errors.CommError("failed to rewind run: rewind is not enabled for this entity\nmore")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    resumed = RunTracker(["wandb"], tmp_path / "run")
    resumed.start(resume_step=4)
    resumed.log({"train/loss": 105.0}, 5)
    resumed.close()
    out = capsys.readouterr().out
    assert f"wandb: could not rewind run {run_id} to step 4 (CommError: failed to rewind run: rewind is not " \
           "enabled for this entity); resumed it in place: W&B ignores steps lower than the run's last" in out
    assert out.count("wandb:") == 1
    (first, _, _), (second, history, _) = wandb_offline_runs(offline_wandb)
    assert first.run_id == second.run_id == run_id and second.project == "leti-x"
    assert not second.HasField("branch_point") and history == {5: {"train/loss": 105.0}}


def test_mlflow_is_one_run_per_leti_run_resumed_by_run_id(tmp_path, monkeypatch, capsys):
    """Real MLflow, a local file store: one MLflow run for the LeTI run, its config as params (logged once),
    the metrics at LeTI's steps (``pass@1`` as ``pass_1``), the table; the resume continues the same run,
    and the interrupted attempt's points after the last complete iteration stay beside the new ones.
    Skipped where mlflow is not installed: no mlflow-skinny release installs beside constraints.txt's pins
    (3.x and 2.13 on need cachetools<8, older ones protobuf<5, packaging<25 or cloudpickle<3), so CI runs
    the stand-in test below instead."""
    pytest.importorskip("mlflow", reason="mlflow is not installed (see the docstring)")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store, kept for local use
    log_an_interrupted_run(RunTracker(["mlflow"], tmp_path / "run", config={"lr": 0.1, "eval_k": [1, 10]}))
    resumed = RunTracker(["mlflow"], tmp_path / "run", config={"lr": 0.2})
    resumed.start(resume_step=4)
    for step in range(5, 9):
        resumed.log({"train/loss": 100.0 + step}, step)
    resumed.close()

    run_id = json.loads((tmp_path / "run" / "tracking.json").read_text())["mlflow"]["run_id"]
    assert f"mlflow: resumed run {run_id} after step 4; MLflow cannot delete metric points" in capsys.readouterr().out
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("leti").experiment_id])  # one run, resumed
    assert run.info.run_id == run_id and run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "eval_k": "[1, 10]"}  # params cannot change: the first config
    points = lambda key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))  # noqa: E731
    assert points("leti/eval/pass_1") == [(0, 0.25), (4, 0.5)]
    old, new = [(s, 10.0 - s) for s in range(1, 7)], [(s, 100.0 + s) for s in range(5, 9)]
    assert points("train/loss") == sorted(old + new)  # steps 5 and 6 twice: the old points stay
    table = json.loads(open(client.download_artifacts(run_id, "leti/rollouts/step-4.json")).read())
    assert table["columns"] == ["task_id", "program"] and table["data"][0][0] == "a"
    assert len(table["data"][0][1]) == 2000


def stand_in(monkeypatch, name: str, module) -> list:
    """``module`` as the installed package ``name``; returns the list its calls are recorded in."""
    import importlib.machinery

    import trainers.tracking as tracking

    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    monkeypatch.setitem(sys.modules, name, module)
    real = tracking._installed
    monkeypatch.setattr(tracking, "_installed", lambda m: m == name or real(m))
    return module.calls


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


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="the real MLflow test runs instead")
def test_mlflow_calls_where_mlflow_cannot_be_installed(tmp_path, monkeypatch, capsys):
    """leti's calls to the mlflow module, against a stand-in of it: only where mlflow is not installed, as
    in CI, because no mlflow-skinny release installs beside constraints.txt's pins (see the real test above,
    which checks what MLflow stores)."""
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
