"""The `leti` command: train (with and without a recipe), eval, envs; the run folder it writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
LETI = [sys.executable, "-m", "trainers.cli"]


def run(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*LETI, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "LETI_CACHE": str(tmp_path_factory.mktemp("cache")), "TRL_EXPERIMENTAL_SILENCE": "1",
            "HF_HUB_OFFLINE": "1"}


def test_help_and_envs(env):
    assert "leti train" in run(env=env).stdout
    out = run("envs", env=env)
    assert out.returncode == 0 and "LETI-Arith" in out.stdout and "LETI-EAE" in out.stdout


def test_train_writes_a_complete_run_folder_then_eval_reads_it(tmp_path, env):
    out = run("train", "--model_name_or_path", "tiny", "--max_train_tasks", "6", "--max_eval_tasks", "4",
              "--num_iterations", "1", "--num_generations_per_prompt", "2", "--max_new_tokens", "12",
              "--max_steps", "3", "--output_dir", str(tmp_path / "run"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "pass_rate.png", "report.md", "iteration-1/rollouts/dataset_info.json",
                 "iteration-1/model/config.json", "iteration-1/COMPLETE"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "pass_rate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| iteration |" in (run_dir / "report.md").read_text()
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["passing_copies"], config["replay_passing"], config["use_peft"]) == (6, True, False)  # the default recipe
    # where its figures came from: this CPU, torch's kernels (portable by default on an AVX2 CPU), the threads
    from trainers.machine import cpu_description

    machine = config["machine"]
    assert machine["cpu"] == cpu_description()[0] and machine["torch"]["threads"] >= 1
    if "avx2" in machine["cpu_flags"] and "ATEN_CPU_CAPABILITY" not in os.environ:
        assert machine["torch"]["cpu_capability"] == "AVX2" and machine["env"]["MKL_CBWR"] == "AVX2"
    assert "base_model" not in config  # the tiny test model is not a leti default model
    # `leti eval` runs the trainer's evaluation path (sampler, executor, report): with the recipe's settings
    # (greedy, 24 new tokens, one sample) it scores the saved model as the trainer scored it
    out = run("eval", "--model", str(run_dir / "iteration-1" / "model"), "--env", "LETI-Arith", "--split", "heldout",
              "--max_tasks", "4", "--num_samples", "1", "--k", "1", "--temperature", "0", "--max_new_tokens", "24",
              env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    trained = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    scores = {k: v for k, v in report.items() if k not in ("env", "split", "tasks", "split_tasks", "output_dir")}
    assert (report["tasks"], report["split_tasks"]) == (4, 400) and scores == {k.removeprefix("eval/"): v for k, v in trained.items() if k.startswith("eval/")}
    refined = run("eval", "--model", str(run_dir / "iteration-1" / "model"), "--env", "LETI-Arith", "--split", "heldout",
                  "--max_tasks", "4", "--num_samples", "1", "--k", "1", "--temperature", "0", "--max_new_tokens", "24",
                  "--max_turns", "2", "--output_dir", str(tmp_path / "refined"), env=env)
    assert refined.returncode == 0, refined.stderr[-3000:]
    refined = json.loads(refined.stdout)  # the same first attempts, then one refinement turn
    assert refined["pass@1"] == scores["pass@1"] and refined["turn2/pass@1"] >= refined["pass@1/postprocessed"]
    assert 0.0 <= refined["repair_rate"] <= 1.0
    # ... and writes its samples beside the model, in evalplus's format, which --samples re-scores without a model
    folder = run_dir / "iteration-1" / "eval-LETI-Arith-heldout"
    assert report["output_dir"] == str(folder)
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {"task_id", "solution", "completion", "status", "feedback", "passed"} <= set(samples[0])
    assert samples[0]["solution"].endswith(samples[0]["completion"]) and samples[0]["task_id"].startswith("Arith/")
    assert json.loads((folder / "results.json").read_text())["settings"]["temperature"] == 0.0
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"samples: {folder / 'samples.jsonl'}\nenv: LETI-Arith\nsplit: heldout\nk: [1]\n")
    out = run("eval", "--config", str(recipe), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rescored = json.loads(out.stdout)
    assert {k: v for k, v in rescored.items() if k in scores} == scores and rescored["output_dir"] == str(folder / "rescored")
    recipe.write_text("modle: x\n")
    out = run("eval", "--config", str(recipe), env=env)
    assert out.returncode == 2 and "unknown key 'modle'; did you mean 'model'?" in out.stderr


QUIET_RUN = """
import sys, warnings
# a warning attributed to leti's own code is an error; so is any FutureWarning (a deprecated call)
warnings.filterwarnings("error", module=r"(trainers|leti_env)(\\.|$)")
warnings.filterwarnings("error", category=FutureWarning)
from trainers.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("recipe", [[], ["--use_peft", "true", "--load_in_4bit", "true", "--bf16", "true",
                                         "--activation_checkpointing", "true"]], ids=["default", "qlora"])
def test_train_console_is_one_row_per_iteration(tmp_path, env, recipe):
    """Nothing but the table (and the run folder's paths) at the default level: no library logging,
    progress bars of datasets or transformers, dicts of metrics, nor warnings; --verbose brings them back."""
    args = ["train", "--model_name_or_path", "tiny", "--max_train_tasks", "6", "--max_eval_tasks", "4",
            "--num_iterations", "2", "--num_generations_per_prompt", "2", "--max_new_tokens", "12", "--max_steps", "2",
            *recipe]
    out = subprocess.run([sys.executable, "-c", QUIET_RUN, *args, "--output_dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stderr.splitlines()  # the console (stderr): the table and nothing else
    assert re.fullmatch(r" +iter +sampled pass +held-out pass@1 +rows +loss +sample s +exec s +train s +eval s", table[0])
    assert [line.split()[0] for line in table[1:]] == ["0", "1", "2"], table
    assert out.stdout.splitlines() == [f"run folder: {tmp_path / 'run'}", f"  {tmp_path / 'run' / 'pass_rate.png'}",
                                       f"  {tmp_path / 'run' / 'report.md'}"]
    if recipe:
        return
    verbose = run(*args, "--num_iterations", "1", "--output_dir", str(tmp_path / "verbose"), "--verbose", env=env)
    assert verbose.returncode == 0 and "Saving the dataset" in verbose.stderr  # datasets' own bars are back


def test_the_cli_never_guesses(tmp_path, env):
    """A typo is an error, in one line (two with the help hint), that names the nearest valid choice: no
    abbreviation runs a default job, no 200-line usage buries the error."""
    typo = tmp_path / "typo.yaml"
    typo.write_text("num_iteration: 2\n")
    cases = [(["trian"], "leti: unknown command 'trian'; did you mean 'train'\\?"),
             (["train", "--num_iteration", "2"], "leti train: error: unrecognized arguments: --num_iteration 2; did you "
                                                 "mean '--num_iterations'\\?"),
             (["train", "--feedback_mode", "txt"], "leti train: error: argument --feedback_mode/--feedback-mode: invalid "
                                                   "choice: 'txt' \\(choose from 'text', 'binary'"),
             (["train", "--config", str(typo)], "leti train: error: .*typo.yaml: unknown key 'num_iteration'; did you mean "
                                                "'num_iterations'\\?"),
             (["eval", "--max_task", "3", "--model", "x"], "leti eval: error: unrecognized arguments: --max_task 3; did "
                                                            "you mean '--max_tasks'\\?"),
             (["serve", "--por", "1"], "leti: error: unrecognized arguments: --por 1; did you mean '--port'\\?"),
             (["build-default-model", "--siz", "small"], "leti build-default-model: error: unrecognized arguments")]
    for args, message in cases:
        out = run(*args, *(["--output_dir", str(tmp_path / "run")] if args[0] == "train" else []), env=env)
        assert out.returncode == 2 and re.match(message, out.stderr), out.stderr[-2000:]
        assert len(out.stderr.splitlines()) <= 2 and out.stdout == ""
    assert not (tmp_path / "run").exists()


def test_quiet_libraries_silences_the_kernel_hub_lines(env):
    """On a CPU with AVX512-BF16, importing bitsandbytes asks kernels for a Hub kernel; offline, kernels warns
    that it skips the publisher trust check. The quiet console (every leti command unless --verbose) hides it."""
    code = "from trainers.console import quiet_libraries; quiet_libraries(); import bitsandbytes, peft, trl"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0 and "publisher trust" not in out.stderr and "kernels-community" not in out.stderr, out.stderr


def test_eval_speaks_evalplus_mbpp_ids_and_warns_on_a_partial_file(tmp_path, env):
    """evalplus names MBPP tasks ``Mbpp/N``: `leti eval` re-scores such a file (and leti's own ``MBPP/N``),
    writes ``Mbpp/N``, and says so when the file covers fewer tasks than the split."""
    from leti_env import load_tasks

    tasks = load_tasks("LETI-MBPP", "test")[:3]
    samples = tmp_path / "samples.jsonl"
    rows = [{"task_id": t.task_id.replace("MBPP/", "Mbpp/"), "solution": t.prompt + t.reference_solution} for t in tasks[:2]]
    rows.append({"task_id": tasks[2].task_id, "completion": "\ndef nothing():\n    pass\n"})  # leti's spelling: fails
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run("eval", "--samples", str(samples), "--env", "LETI-MBPP", "--split", "test", "--k", "1",
              "--output_dir", str(tmp_path / "scored"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    split = len(load_tasks("LETI-MBPP", "test"))
    assert (report["tasks"], report["split_tasks"], report["pass@1"]) == (3, split, 2 / 3)
    assert f"has samples for 3 of the {split} tasks of LETI-MBPP test" in out.stderr
    written = [json.loads(line)["task_id"] for line in (tmp_path / "scored" / "samples.jsonl").read_text().splitlines()]
    assert written == [t.task_id.replace("MBPP/", "Mbpp/") for t in tasks] and written[0].startswith("Mbpp/")


def test_eval_rejects_k_above_samples(env):
    out = run("eval", "--model", "x", "--num_samples", "2", "--k", "10", env=env)
    assert out.returncode == 2 and "pass@k needs --num_samples >= k" in out.stderr


def test_set_up_errors_are_one_line_that_names_the_fix(tmp_path, env):
    recipe = tmp_path / "recipe.yaml"  # a YAML value skips argparse's choices: the config's own check names it
    recipe.write_text("model_name_or_path: tiny\ndtype: bf16\n")
    old = tmp_path / "old.yaml"  # leti 0.1's name for the 4-bit compute dtype
    old.write_text("model_name_or_path: tiny\nbnb_4bit_compute_dtype: bfloat16\n")
    cases = [(["train", "--config", str(recipe)], r"`dtype` must be one of \['auto', 'bfloat16', 'float16', 'float32', None\], got 'bf16'"),
             (["train", "--config", str(old)], r".*old.yaml: `bnb_4bit_compute_dtype` is now `dtype`"),
             (["train", "--bnb_4bit_use_double_quant", "false"], "command line: `bnb_4bit_use_double_quant` is now `use_bnb_nested_quant`"),
             (["train", "--env_id", "LETI-Nope"], "unknown environment id 'LETI-Nope'.*Registered leti ids"),
             (["train", "--env_kwargs", "{test_order: hidden_first}"], "--env_kwargs must be a JSON object such as"),
             (["train", "--env_kwargs", '{"test_ordr": "hidden_first"}'], "LETI-Arith has no option 'test_ordr'; its options: help\\(leti_env.envs.ArithEnv\\)"),
             (["train", "--report_to", "tensorboard,wandbb"], "report_to='wandbb' is not a tracker leti can log to: "
                                                              "did you mean 'wandb'\\? leti logs through accelerate's"),
             (["eval", "--model", str(tmp_path / "nowhere"), "--env", "LETI-Arith"], "no model at .*iteration-N/model")]
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:  # a tracker accelerate knows, not installed: the package to install
        cases.append((["train", "--report_to", "mlflow"], "report_to='mlflow' needs the mlflow package, which is not "
                                                          "installed: `pip install mlflow`"))
    for args, message in cases:
        out = run(*args, "--output_dir", str(tmp_path / "run"), env=env) if args[0] == "train" else run(*args, env=env)
        assert out.returncode == 2, out.stderr[-2000:]
        assert re.search(f"leti {args[0]}: error: {message}", out.stderr) and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
    out = run("train", "--env_id", "LETI-Nope", env={**env, "LETI_TRACEBACK": "1"})
    assert out.returncode == 1 and "Traceback" in out.stderr
    out = run("train", "--model_name_or_path", "tiny", "--vllm_dtype", "float8", env=env)  # the flag: argparse's check
    assert out.returncode == 2 and "invalid choice: 'float8'" in out.stderr and "Traceback" not in out.stderr


def test_accelerate_launch_two_cpu_processes_through_one_iteration(tmp_path, env):
    # data-parallel: each process samples half the prompts; the main process alone writes the run folder
    # --multi_gpu is the torchrun-style launcher (gloo on a CPU-only machine); `--cpu` starts ONE process
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m", "trainers.cli",
               "train", "--model_name_or_path", "tiny", "--max_train_tasks", "6", "--max_eval_tasks", "4",
               "--num_iterations", "1", "--num_generations_per_prompt", "2", "--max_new_tokens", "12",
               "--per_device_train_batch_size", "2", "--max_steps", "3", "--output_dir", str(tmp_path / "run")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                         env={**env, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [0, 1]  # written once, not once per process
    assert lines[1]["run/processes"] == 2  # really two processes (`--cpu` would have started one)
    assert lines[1]["rollout/count"] == 6 * 2  # the two shards gathered: every prompt sampled once
    import datasets

    rollouts = datasets.load_from_disk(str(tmp_path / "run" / "iteration-1" / "rollouts"))
    tasks = [f"Arith/train/{i}" for i in range(6)]
    assert rollouts["task_id"] == [t for t in tasks for _ in range(2)]  # in task order again
    assert rollouts["sample_index"] == [0, 1] * 6
    assert (tmp_path / "run" / "iteration-1" / "model" / "config.json").exists()


def test_ctrl_c_leaves_a_run_folder_that_the_same_command_resumes(tmp_path, env):
    import signal
    import time

    # 60 optimizer steps make an iteration last seconds, so the signal lands inside iteration 2
    args = [*LETI, "train", "--model_name_or_path", "tiny", "--max_train_tasks", "4", "--max_eval_tasks", "2",
            "--num_iterations", "3", "--num_generations_per_prompt", "2", "--max_new_tokens", "12",
            "--max_steps", "60", "--output_dir", str(tmp_path / "run")]
    # a shell started in the background (CI, nohup) ignores SIGINT and children inherit that: restore it
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    marker = tmp_path / "run" / "iteration-1" / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), first.communicate()[1][-3000:]
    first.send_signal(signal.SIGINT)  # what Ctrl-C sends, while iteration 2 is under way
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-3000:]
    assert "run the same command again to resume" in stderr and "completed iterations: [1]" in stderr
    rollouts = tmp_path / "run" / "iteration-1" / "rollouts" / "dataset_info.json"
    written = rollouts.stat().st_mtime_ns

    second = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    assert rollouts.stat().st_mtime_ns == written  # iteration 1 was not redone
    history = [json.loads(line)["iteration"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert history.count(1) == 1 and history[-2:] == [2, 3]
    assert all((tmp_path / "run" / f"iteration-{i}" / "COMPLETE").exists() for i in (1, 2, 3))


def test_every_run_seed_uses_the_one_shipped_default_model(tmp_path, monkeypatch):
    from trainers.cli import DEFAULT_CONFIG, _model_path
    from trainers.default_model import SHIPPED_DIR, VERSION
    from trainers.parser import make_parser

    monkeypatch.setenv("LETI_CACHE", str(tmp_path))
    for seed in (0, 3):  # a cached model is used as is, never rebuilt; seed 0's is never looked for
        folder = tmp_path / f"default-arith-v{VERSION}-seed{seed}"
        folder.mkdir()
        (folder / "leti_default_model.json").write_text("{}")
    script, config = make_parser().parse_args_and_config(
        ["--config", str(DEFAULT_CONFIG), "--seed", "2", "--output_dir", str(tmp_path / "run")])
    assert (config.seed, script.default_model_seed) == (2, 0)  # the run's seed does not pick the model
    assert _model_path("default", script.default_model_seed) == str(SHIPPED_DIR / "small")
    other, _ = make_parser().parse_args_and_config(
        ["--config", str(DEFAULT_CONFIG), "--default_model_seed", "3", "--output_dir", str(tmp_path / "run")])
    assert _model_path("default", other.default_model_seed) == str(tmp_path / f"default-arith-v{VERSION}-seed3")


def test_build_default_model_says_whether_it_built_the_shipped_model(tmp_path, env):
    """The recipe run here (cut to 3 steps, so it cannot be the shipped model) is compared file by file."""
    out = run("build-default-model", "--pretrain_steps", "3", "--output_dir", str(tmp_path / "built"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"built {tmp_path / 'built'}: differs from the shipped small model (model.safetensors)" in out.stdout
    assert (tmp_path / "built" / "model.safetensors").is_file() and "default model ready" in out.stderr


def test_env_kwargs_reach_the_environment_in_train_and_eval(tmp_path, env):
    """``--env_kwargs`` (JSON) configures the environment: a run records it (with the environment) in its
    ``config.json``, and ``leti eval`` re-scores the same program against either test order of LETI-Arith
    (the feedback names the shown input, or a hidden one)."""
    hidden = '{"test_order": "hidden_first"}'
    out = run("train", "--model_name_or_path", "tiny", "--max_train_tasks", "4", "--max_eval_tasks", "2",
              "--num_iterations", "1", "--num_generations_per_prompt", "2", "--max_new_tokens", "12",
              "--max_steps", "1", "--env_kwargs", hidden, "--output_dir", str(tmp_path / "run"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["env_id"], config["env_kwargs"]) == ("LETI-Arith", {"test_order": "hidden_first"})
    import leti_env

    task = leti_env.load_tasks("LETI-Arith", "heldout", 1)[0]
    expected = task.prompt.splitlines()[2].split(" == ")[1]
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": task.task_id, "completion": f"def f(x):\n    return x + 1000"}) + "\n")
    feedback = {}
    for order, extra in (("shown_first", []), ("hidden_first", ["--env_kwargs", hidden])):
        out = run("eval", "--samples", str(samples), "--env", "LETI-Arith", "--split", "heldout", "--k", "1",
                  "--output_dir", str(tmp_path / order), *extra, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        feedback[order] = json.loads((tmp_path / order / "samples.jsonl").read_text())["feedback"]
    shown_call = task.prompt.splitlines()[2].removeprefix("assert ").split(" == ")[0]
    assert f"(got := {shown_call}) == {expected}" in feedback["shown_first"]
    assert f"(got := {shown_call})" not in feedback["hidden_first"] and "AssertionError" in feedback["hidden_first"]
