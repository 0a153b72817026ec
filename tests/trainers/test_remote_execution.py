"""The trainer's side of a `leti serve` fleet: `execution_servers` in the config, `ExecutionReward(servers=...)`,
`leti eval --execution_servers`, and a tiny LeTI run whose programs all run on a server (none here)."""

from __future__ import annotations

import json

import pytest

from leti_env import ExecutionServerError, load_tasks
from tests.leti_env.serving import Server, free_port
from tests.trainers.conftest import small_config

WRONG = "\ndef nothing():\n    pass\n"


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("openenv", reason="leti serve needs openenv-core (pip install 'leti[serve]')")
    s = Server("--workers", "1", "--timeout", "30")
    yield s
    s.close()


@pytest.fixture
def nothing_runs_here(monkeypatch):
    """Any program this process's own sandbox pool is asked to run fails the test."""
    from leti_env.execution.pool import ExecutorPool

    def refuse(self, *args, **kwargs):
        raise AssertionError("a program ran in this process's sandbox pool, not on the execution servers")

    monkeypatch.setattr(ExecutorPool, "run", refuse)


def test_the_config_takes_execution_servers_from_python_the_command_line_and_yaml(tmp_path):
    from trainers import LetiConfig
    from trainers.parser import make_parser

    urls = ["http://10.0.0.5:8000", "http://10.0.0.6:8000"]
    assert LetiConfig(output_dir=str(tmp_path)).execution_servers is None  # default: this machine
    assert LetiConfig(output_dir=str(tmp_path), execution_servers="http://10.0.0.5:8000, http://10.0.0.6:8000/"
                      ).execution_servers == urls
    _, config = make_parser().parse_args_and_config(["--output_dir", str(tmp_path), "--execution_servers", *urls])
    assert config.execution_servers == urls
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"output_dir: {tmp_path}\nexecution_servers:\n  - {urls[0]}\n  - {urls[1]}\n")
    _, config = make_parser().parse_args_and_config(["--config", str(recipe)])
    assert config.execution_servers == urls and config.to_dict()["execution_servers"] == urls
    with pytest.raises(ValueError, match="'10.0.0.5:8000' is not an execution server URL"):
        LetiConfig(output_dir=str(tmp_path), execution_servers=["10.0.0.5:8000"])
    with pytest.raises(ValueError, match="set one or the other"):
        LetiConfig(output_dir=str(tmp_path), execution_servers=urls, execution_workers=2)


def test_execution_reward_runs_on_the_servers(server, nothing_runs_here):
    from trainers import ExecutionReward

    tasks = load_tasks("LETI-MBPP", "test", 2)
    reward = ExecutionReward(tasks, servers=[server.url])
    assert reward.runner.servers == [server.url] and reward.runner.limits == tasks.limits
    logged = {}
    assert reward(prompts=[t.prompt for t in tasks] * 2, completions=[t.reference_solution for t in tasks] + [WRONG] * 2,
                  task_id=[t.task_id for t in tasks] * 2, log_extra=logged.__setitem__) == [1.0, 1.0, 0.0, 0.0]
    assert logged["status"] == ["passed", "passed", "error", "error"] and "NameError" in logged["feedback"][2]
    with pytest.raises(ValueError, match="not both"):
        ExecutionReward(tasks, servers=[server.url], runner=reward.runner)


def test_leti_eval_scores_on_the_servers(tmp_path, server, nothing_runs_here):
    from trainers.eval_command import main, parse_eval_args, run_eval

    task = load_tasks("LETI-MBPP", "test", 1)[0]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": task.task_id, "completion": c}) + "\n"
                               for c in (task.reference_solution, WRONG)))
    argv = ["--samples", str(samples), "--env", "LETI-MBPP", "--split", "test", "--k", "1", "--output_dir",
            str(tmp_path / "out"), "--execution_servers", server.url]
    results = run_eval(parse_eval_args(argv))
    assert results["pass@1"] == 0.5 and results["settings"]["execution_servers"] == [server.url]
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["passed", "error"]
    # a fleet that is not there: one line, before anything is sampled or scored
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ExecutionServerError, match=f"no execution server answered: {dead} \\(connection refused\\)"):
        run_eval(parse_eval_args(argv[:-1] + [dead]))
    with pytest.raises(SystemExit):
        parse_eval_args(argv[:-1] + ["not-a-url"])
    assert main(argv[:-1] + [dead]) == 2


def test_a_tiny_run_executes_every_program_on_the_servers(tmp_path, tiny_model_dir, mbpp_tasks, server,
                                                          nothing_runs_here):
    from trainers import LetiTrainer, load_rollouts

    config = small_config(tmp_path, num_iterations=1, execution_servers=[server.url])
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks, eval_tasks=mbpp_tasks[:2])
    assert trainer.collector.runner.servers == [server.url]
    metrics = trainer.train()
    assert metrics["iteration"] == 1 and "eval/pass@1" in metrics
    rollouts = load_rollouts(tmp_path / "iteration-1" / "rollouts")
    assert len(rollouts) == 8 and all(r.feedback or r.reward == 1.0 for r in rollouts)
    assert json.loads((tmp_path / "config.json").read_text())["execution_servers"] == [server.url]
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ExecutionServerError, match="no execution server answered"):  # before any sampling
        LetiTrainer(str(tiny_model_dir), small_config(tmp_path / "dead", execution_servers=[dead]),
                    train_tasks=mbpp_tasks)
