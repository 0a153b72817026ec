"""`scripts/gpu_check.sh`, the one GPU check, runs as it is: here its CPU version (tiny shapes), so
that it works whenever it runs on a GPU. Every check but vLLM's two (CUDA only) really runs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_check_runs_every_check_on_a_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run(["bash", "scripts/gpu_check.sh", "--smoke", "--device", "cpu", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "LETI_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"})
    assert out.exists(), run.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert set(checks) == {"qlora_updates", "memory", "shared_prefill", "vllm", "grpo_vllm_turns",
                           "train_resume_eval_export", "sandbox_here"}
    assert checks["sandbox_here"]["mode"] and checks["sandbox_here"]["self_test_failed"] == []
    failed = {name: result for name, result in checks.items() if not result["ok"]}
    assert not failed and run.returncode == 0, json.dumps(failed, indent=1)[-4000:]
    qlora = checks["qlora_updates"]
    assert qlora["trainable_dtypes"] == ["float32"] and qlora["lora_A_changed"] >= 0.99
    assert qlora["good_row_changed"] >= 0.99 and qlora["output_head_trained"]
    resumed = checks["train_resume_eval_export"]
    assert resumed["killed_during_iteration_2"] and resumed["iteration_1_kept"] and resumed["eval_model_is_4bit"]
    assert checks["vllm"]["skipped"] == "needs CUDA" and checks["grpo_vllm_turns"]["skipped"] == "needs CUDA"
    assert "qlora_updates" in run.stdout and "pass" in run.stdout  # the table
