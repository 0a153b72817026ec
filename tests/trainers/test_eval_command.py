"""`leti eval`: the programs it scores run under the environment's own limits, unless `--timeout` is given."""

from __future__ import annotations

import json

from leti_env import load_tasks
from trainers.eval_command import parse_eval_args, run_eval


def rescore(tmp_path, env_id: str, split: str, task, completion: str, *flags: str) -> dict:
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": task.task_id, "completion": completion}) + "\n")
    return run_eval(parse_eval_args(["--samples", str(samples), "--env", env_id, "--split", split, "--k", "1",
                                     "--output_dir", str(tmp_path / "out"), *flags]))


def test_eval_scores_under_the_environments_limits_and_timeout_overrides_them(tmp_path):
    eae = load_tasks("LETI-EAE", None, 1)[0]
    results = rescore(tmp_path, "LETI-EAE", "none", eae, "pass\n")
    limits = results["settings"]["limits"]
    assert limits["timeout"] == 30.0  # LeTI's 30 s for EAE, as the trainer and the reward use
    assert json.loads((tmp_path / "out" / "results.json").read_text())["settings"]["limits"] == limits
    task = load_tasks("LETI-Arith", "heldout", 1)[0]
    late = "\nimport time\ntime.sleep(1.5)\n" + task.reference_solution  # a correct answer, 1.5 s late
    own = rescore(tmp_path, "LETI-Arith", "heldout", task, late)
    longer = rescore(tmp_path, "LETI-Arith", "heldout", task, late, "--timeout", "3")
    assert (own["settings"]["limits"]["timeout"], longer["settings"]["limits"]["timeout"]) == (1.0, 3.0)
    assert (own["pass@1"], longer["pass@1"]) == (0.0, 1.0)
