"""One tracker run per LeTI run: tensorboard event files read back, steps checked across iterations and a resume."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.trainers.conftest import small_config
from trainers import LetiTrainer


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


TRACKIO_TRAIN = """
import sys
import leti_env
from tests.trainers.conftest import small_config
from trainers import LetiTrainer
tasks = leti_env.load_tasks("LETI-Arith", "train", 6)
config = small_config(sys.argv[2], num_iterations=int(sys.argv[3]), report_to=["trackio"], logging_steps=1,
                      eval_max_tasks=2, project="leti-test")
trainer = LetiTrainer(sys.argv[1], config, train_tasks=tasks[:4], eval_tasks=tasks[4:6])
trainer.train()
print("END", trainer.metrics_history()[-1]["run/optimizer_steps"])
"""
TRACKIO_READ = """
import json, sys
from trackio import SQLiteStorage
runs = SQLiteStorage.get_runs("leti-test")
print(json.dumps({"runs": runs, "logs": SQLiteStorage.get_logs("leti-test", runs[0])}, default=str))
"""


def test_trackio_logs_the_whole_run_as_one_run_and_a_resume_continues_it(tmp_path, tiny_model_dir):
    """trackio's local mode (an SQLite file in TRACKIO_DIR, no network), read back through its own storage.
    Each step is its own process, as a resumed run is (trackio reads TRACKIO_DIR once, at import)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    pytest.importorskip("trackio")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "PYTHONPATH": str(REPO)}

    def python(code, *args):
        proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out = python(TRACKIO_TRAIN, tiny_model_dir, tmp_path / "run", 1)
    name = json.loads((tmp_path / "run" / "tracking.json").read_text())["trackio"]["name"]
    assert f"trackio: project leti-test, run {name}" in out  # one line says where the run is
    assert "Trackio project initialized" not in out and "Uploading logs" not in out  # trackio's banners are not
    end1 = int(out.split("END")[1])
    out = python(TRACKIO_TRAIN, tiny_model_dir, tmp_path / "run", 2)  # the resume: a new process
    end2 = int(out.split("END")[1])
    stored = json.loads(python(TRACKIO_READ))
    assert stored["runs"] == [name]  # one trackio run for the LeTI run, resume included
    logs = stored["logs"]
    steps = lambda key: [row["step"] for row in logs if key in row]  # noqa: E731
    assert steps("leti/eval/pass@1") == [0, end1, end2] and 0 < end1 < end2
    assert steps("leti/rollout/pass_rate") == [end1, end2]
    loss = steps("train/loss")
    assert loss == sorted(loss) and loss[0] == 1 and loss[-1] == end2 and end1 + 1 in loss  # one curve
    tables = [row["leti/rollouts"] for row in logs if "leti/rollouts" in row]
    assert len(tables) == 2 and "feedback" in json.dumps(tables[0])  # the sampled programs, per iteration
    assert not (REPO / "trackio").exists()
