"""Smoke runs of benchmark scripts that CI cannot run for real (they need a GPU): the code must not rot."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_benchmark_runs_its_training_and_sampling_code_on_a_cpu(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where it builds its model: removed when it is done
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    results = module.main(["--tiny", "--device", "cpu", "--rows", "16", "--batch", "4", "--prompts", "4",
                           "--samples", "2", "--max_new_tokens", "8"])

    out = capsys.readouterr().out
    for name in ("bf16 LoRA", "QLoRA 4-bit"):
        assert results[name]["tokens"] > 0 and results[name]["tokens_per_s"] > 0
    assert math.isfinite(results["hf rollouts_per_s"]) and results["hf rollouts_per_s"] > 0
    assert "QLoRA / bf16 LoRA: tokens/s" in out and "sample vLLM: skipped (needs CUDA)" in out
    assert not list(tmp_path.glob("leti-gpu-*")), "the benchmark left its model folder behind"


def test_learning_study_quick_runs_every_arm_and_writes_its_report(tmp_path):
    """The pipeline only (a tiny model, 2 iterations): folders, report, CSV and plots; no scientific outcome."""
    import csv
    import os
    import subprocess
    import sys

    env = {**os.environ, "LETI_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    # binary/shuffled: flags alone; rejection_sampling_hidden: two flags, and the environment's options
    arms = ["textual", "dummy_span", "sft_reference", "textual_pretrain_mix", "rejection_sampling_hidden"]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "learning" / "run.py"), "--quick", "--arms", *arms,
                           "--out", str(tmp_path / "study")], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "study"
    report = (out / "RESULTS.md").read_text()
    assert "quick: the pipeline only" in report and "| dummy_span | 1 |" in report and "Student-t" in report
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["arm"] for r in rows} == set(arms) and {r["iteration"] for r in rows} == {"0", "1", "2"}
    assert tuple(rows[0]) == _study().ROW_FIELDS  # what --pool reads back from a committed study
    assert all((out / name).stat().st_size > 0 for name in ("heldout_pass_at_1.png", "sampled_pass_rate.png",
                                                          "heldout_pass_at_1_vs_wall_time.png"))
    assert all(float(r["cumulative_seconds"]) > 0 for r in rows if r["iteration"] != "0")
    import json

    configs = {arm: json.loads((out / "runs" / f"{arm}-seed0" / "config.json").read_text()) for arm in arms}
    assert {arm: c["feedback_mode"] for arm, c in configs.items()} == {
        "textual": "text", "dummy_span": "dummy", "sft_reference": "text", "textual_pretrain_mix": "text",
        "rejection_sampling_hidden": "binary"}
    hidden = configs["rejection_sampling_hidden"]
    assert (hidden["max_failures_per_prompt"], hidden["env_kwargs"]) == (0, {"test_order": "hidden_first"})
    assert configs["textual"]["env_kwargs"] == {} and configs["textual"]["eval_extra_conditions"] == ["bad", "none"]
    assert all(r["heldout_pass@1_bad"] != "" and r["heldout_pass@1_none"] != "" for r in rows)  # evaluated 3 ways
    assert "good − bad" in report and "after a refinement turn" in report
    assert all(r["repair_rate"] != "" for r in rows if r["iteration"] != "0") and configs["textual"]["eval_max_turns"] == 2
    assert configs["sft_reference"]["train_on"] == "references" and configs["textual"]["train_on"] == "rollouts"
    assert configs["textual_pretrain_mix"]["pretrain_dataset"] == str(out / "runs" / "pretraining-corpus-quick")
    assert (out / "runs" / "textual_pretrain_mix-seed0" / "pretraining-blocks").exists()  # the mix really ran
    import datasets

    corpus = datasets.load_from_disk(str(out / "runs" / "pretraining-corpus-quick"))
    assert all(text.endswith("<|endoftext|>") for text in corpus["text"])  # documents as the model saw them
    for arm in arms:  # forgetting: the LM loss of the base model (0) and of each iteration's model
        forgetting = json.loads((out / "runs" / f"{arm}-seed0" / "forgetting.json").read_text())
        assert set(forgetting) == {"0", "1", "2"} and all(v["heldout_lm_loss"] > 0 for v in forgetting.values())
    assert "Forgetting: language-model loss" in report and "| textual_pretrain_mix | textual_sequential |" not in report
    again = subprocess.run([sys.executable, str(REPO / "benchmarks" / "learning" / "run.py"), "--quick", "--arms", *arms,
                            "--out", str(out)], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert again.returncode == 0 and "seed 0:" not in again.stdout  # finished runs are kept, not run again
    one = subprocess.run([sys.executable, str(REPO / "benchmarks" / "learning" / "run.py"), "--quick", "--arms", "textual",
                          "--out", str(out)], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    report = (out / "RESULTS.md").read_text()  # a one-arm invocation keeps every finished run in the report
    assert one.returncode == 0 and all(f"| {arm} | 1 |" in report for arm in arms), report[:2000]


def _study():
    spec = importlib.util.spec_from_file_location("learning_study", REPO / "benchmarks" / "learning" / "run.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_learning_study_statistics_say_what_they_mean():
    """Paired Student-t intervals over seeds (not a bootstrap of 3 values), the binomial error of one
    evaluation, and steps-to-reach read on each seed's own curve."""
    study = _study()
    a, b = {0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.4, 2: 0.4}  # differences 0.1, 0.2, 0.3: sd 0.1
    mean, low, high = study.paired_difference(a, b)
    assert abs(mean - 0.2) < 1e-12 and abs((high - mean) - 4.303 * 0.1 / 3 ** 0.5) < 1e-9 and abs(low + high - 0.4) < 1e-12
    assert study.paired_difference({0: 0.3}, {0: 0.1, 1: 0.2})[1:] == (0.3 - 0.1, 0.3 - 0.1)  # one common seed
    assert abs(study.binomial_se(0.13, 400) - 0.0168) < 1e-4
    rows = [{"arm": "x", "seed": s, "iteration": i, "optimizer_steps": 240 * i, "heldout_pass@1": v}
            for s, curve in ((0, (0.0, 0.1, 0.3)), (1, (0.0, 0.2, 0.2))) for i, v in enumerate(curve)]
    assert study.steps_to_reach_per_seed(rows, "x", "heldout_pass@1", 0.2) == {0: 480, 1: 240}
    assert study.steps_to_reach_per_seed(rows, "x", "heldout_pass@1", 0.25) == {0: 480, 1: None}
    assert study.steps_to_reach(rows, "x", "heldout_pass@1", 0.25) == 480  # the mean curve: 0.15, then 0.25
    assert study.at_iteration(rows, "x", "heldout_pass@1", 1) == {0: 0.1, 1: 0.2}  # the iteration-3 column's reader


def test_rejection_sampling_trains_on_passing_programs_with_the_good_token(tmp_path):
    """The clean control of positives_only: its flags keep every passing program, each row opening with the
    good token the model is sampled and evaluated with, and no failing program."""
    from trainers import Rollout
    from trainers.parser import make_parser
    from trainers.sequences import select_rollouts, training_text

    study = _study()
    _, config = make_parser().parse_args_and_config(["--output_dir", str(tmp_path), *study.ARMS["rejection_sampling"]])
    rollouts = [Rollout(f"T/{i % 3}", "p\n", f"x = {i}", float(i % 2), "passed" if i % 2 else "failed",
                        "" if i % 2 else "AssertionError") for i in range(12)]
    texts = [training_text(r, config) for r in select_rollouts(rollouts, config, seed=0)]
    assert texts and all(t.startswith("<|good|>p\n") for t in texts)
    assert {t.split("\n")[1] for t in texts} == {r.program for r in rollouts if r.passed}


def test_learning_study_compares_the_mix_with_its_baseline_after_as_many_leti_steps():
    """Half of the mix's optimizer steps are pre-training steps: its iteration 2k meets the baseline's iteration k,
    and a single-step pass rate (sampled from the previous iteration's model) one iteration later on both sides."""
    study = _study()
    rows = []
    for seed in (0, 1):
        for i in range(5):  # the mix: held-out pass@1 = iteration / 10; LM loss 1 + iteration; single-step 0.5 + iteration
            rows.append({"arm": "textual_pretrain_mix", "seed": seed, "iteration": i, "optimizer_steps": 240 * i,
                         "heldout_pass@1": i / 10, "heldout_lm_loss": 1.0 + i, "single_step_sampled_pass_rate": 0.5 + i})
        for i in range(4):  # the baseline: its iteration k sits at the mix's 2k on every measure
            rows.append({"arm": "textual_sequential", "seed": seed, "iteration": i, "optimizer_steps": 240 * i,
                         "heldout_pass@1": 2 * i / 10, "heldout_lm_loss": 1.0 + 2 * i,
                         "single_step_sampled_pass_rate": 0.5 + 2 * i - 1})
    lines = study.mix_at_equal_leti_steps(rows)
    table = [line for line in lines if line.startswith("| 240") or line.startswith("| 480")]
    assert len(table) == 2, lines
    # 240 LeTI steps: mix iteration 2 against baseline iteration 1 (pass@1, LM loss: equal by construction), and
    # the single-step rate of those models, sampled in mix iteration 3 (3.5) and baseline iteration 2 (3.5)
    assert table[0] == ("| 240 | 2 vs 1 | 2 | 0.200 vs 0.200 (+0.000 [+0.000, +0.000]) | 3.000 vs 3.000 (+0.000 [+0.000, "
                        "+0.000]) | 3.500 vs 3.500 (+0.000 [+0.000, +0.000]) |"), table[0]
    assert table[1].startswith("| 480 | 4 vs 2 | 2 | 0.400 vs 0.400") and table[1].endswith("| - |")  # no iteration 5
    assert study.mix_at_equal_leti_steps([r for r in rows if r["arm"] == "textual_pretrain_mix"]) == []


def test_portable_kernels_give_the_same_bits_on_a_cpu_without_avx512(tmp_path):
    """benchmarks/reproducibility.py --quick: `leti train` with its default (portable) kernels here, and on
    this CPU made to look like one without AVX-512 (ATen, MKL and oneDNN capped at AVX2): the trained
    weights are bit-identical. Where this CPU has AVX-512, the native path differs, so the check can fail."""
    import os
    import subprocess
    import sys

    from trainers.machine import cpu_description

    flags = cpu_description()[1]
    if "avx2" not in flags:
        pytest.skip("portable kernels are for x86 CPUs with AVX2")
    paths = ["portable", "avx2_cpu_portable", *(["native"] if "avx512f" in flags else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reproducibility.py"), "--quick", "--paths", *paths,
                           "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert rows["portable"][7] == "yes" and rows["avx2_cpu_portable"][7] == "yes", proc.stdout
    assert rows["avx2_cpu_portable"][2] == "AVX2"
    if "native" in rows:
        assert rows["native"][2] == "AVX512" and rows["native"][7] == "no", proc.stdout


def test_learning_study_pools_studies_of_two_base_models_into_one_report(tmp_path):
    """`--pool`: the committed results.csv of one study per base model become one report in which each
    (base model, seed) pair is a unit: differences are paired within a pair, and the t interval counts pairs."""
    import csv
    import subprocess
    import sys

    study = _study()
    fields = ["arm", "seed", "base_corpus", "iteration", "optimizer_steps", "sampled_pass_rate", "heldout_pass@1",
              "run_wall_s", "cumulative_seconds", "compositional_pass@1"]
    lifts = {"programs": (0.10, 0.20), "feedback": (0.30, 0.40)}  # textual − binary per seed, on each base
    for base, lift in lifts.items():
        (tmp_path / base).mkdir()
        with open(tmp_path / base / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for seed in (0, 1):
                for arm, final in (("textual_hidden", 0.5 + lift[seed]), ("binary_hidden", 0.5)):
                    for iteration, value in ((0, 0.0), (1, final)):
                        writer.writerow({"arm": arm, "seed": seed, "base_corpus": base, "iteration": iteration,
                                         "optimizer_steps": 240 * iteration, "sampled_pass_rate": value,
                                         "heldout_pass@1": value, "run_wall_s": 60,
                                         "cumulative_seconds": 60 * iteration, "compositional_pass@1": 0})
    out = tmp_path / "pooled"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "learning" / "run.py"), "--report_only", "--out",
                           str(out), "--pool", str(tmp_path / "programs"), str(tmp_path / "feedback")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (out / "RESULTS.md").read_text()
    assert "programs/0, programs/1" in report and "feedback/0, feedback/1" in report
    mean, low, high = study.paired_difference({0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}, {0: 0, 1: 0, 2: 0, 3: 0})
    assert f"| binary_hidden | textual_hidden | 4 | {mean:+.3f} [{low:+.3f}, {high:+.3f}]" in report  # 4 units, 3 df
    assert "held-out pass@1, iteration 3 |" in report
    (line,) = [x for x in report.splitlines() if x.startswith("| binary_hidden | textual_hidden | 4 |")]
    assert line.endswith("| - |")  # runs of 1 iteration: no iteration 3
    refused = subprocess.run([sys.executable, str(REPO / "benchmarks" / "learning" / "run.py"), "--out", str(out),
                              "--pool", str(tmp_path / "programs")], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert refused.returncode == 2 and "--report_only" in refused.stderr


def test_remote_execution_benchmark_quick_measures_both_setups_and_compares_verdicts(capsys):
    """benchmarks/remote_execution.py --quick: two `leti serve` processes on loopback, one server against two and
    the local pool, and the verdict check; no figure is asserted (CI's machine is not the benchmark's)."""
    pytest.importorskip("openenv", reason="leti serve needs openenv-core (pip install 'leti[serve]')")
    spec = importlib.util.spec_from_file_location("remote_execution", REPO / "benchmarks" / "remote_execution.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    summary = module.main(["--quick"])

    out = capsys.readouterr().out
    assert summary["same_verdicts"] is True and 0 < summary["verdicts_compared"] <= 40
    assert len(summary["sets"]) == 3
    for row in summary["sets"].values():
        assert all(row[k] > 0 for k in ("local 1", "1 server", "2 servers", "local 2")) and row["ratio"] > 0
    assert "same verdicts as local on the MBPP references: yes" in out and "2 servers" in out
