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
