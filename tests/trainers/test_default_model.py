"""The built-in default model: how it is made (a short build here; the real one pre-trains 800 steps, ~2 minutes)."""

from __future__ import annotations

import json
import random

import pytest

from trainers.default_model import build_default_model, pretraining_example


def test_pretraining_never_shows_a_described_two_step_task():
    rng = random.Random(0)
    examples = [pretraining_example(rng) for _ in range(2000)]
    described = [e for e in examples if "Write a function" in e]
    assert 0.3 < len(described) / len(examples) < 0.4
    assert all(e.count(" then ") == 0 and e.splitlines()[-1].count("(") == 0 for e in described)  # one step only
    assert any(") * " in e or ") + " in e or ") - " in e for e in examples if "Write a function" not in e)


def test_build_writes_a_loadable_model_and_its_record(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    losses = []
    folder = build_default_model(tmp_path / "default", pretrain_steps=40, warmup_steps=5, log=losses.append)
    record = json.loads((folder / "leti_default_model.json").read_text())
    assert record["pretrain_steps"] == 40 and 800_000 < record["parameters"] < 1_100_000
    assert record["final_loss"] < record["first_loss"] - 2.0  # from ~6.2 (uniform over the vocabulary): it trained
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.tokenize("123") == ["1", "2", "3"]  # every digit its own token
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.tie_word_embeddings and model.get_input_embeddings().weight.shape[0] >= len(tokenizer)


def test_the_medium_size_is_its_own_cached_model(tmp_path, monkeypatch):
    """--default_model_size medium: ~5 M parameters, cached beside (never instead of) the small default."""
    from trainers.default_model import default_model_path

    monkeypatch.setenv("LETI_CACHE", str(tmp_path))
    medium = default_model_path(size="medium", pretrain_steps=3, warmup_steps=1, log=lambda *_: None)
    record = json.loads((tmp_path / "default-arith-v2-seed0-medium" / "leti_default_model.json").read_text())
    assert medium.endswith("-medium") and record["size"] == "medium" and 4_000_000 < record["parameters"] < 7_000_000
    assert not (tmp_path / "default-arith-v2-seed0").exists()
    with pytest.raises(ValueError, match="unknown default model size 'huge'; choose from"):
        default_model_path(size="huge")


def test_build_progress_reaches_a_pipe_as_it_happens(tmp_path):
    """`leti train 2>&1 | tee log` shows the build while it runs: stderr, flushed (stdout to a pipe is
    block-buffered, so a print there would only show at exit)."""
    import os
    import select
    import subprocess
    import sys

    child = ("import sys\nfrom trainers.default_model import default_model_path\n"
             "default_model_path(pretrain_steps=3, warmup_steps=1)\nsys.stdin.read()\n")  # stays alive until told
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "LETI_CACHE": str(tmp_path)}, text=True)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 120)
        line = proc.stderr.readline() if ready else ""
        assert line.startswith("default model ready:"), line
        assert proc.poll() is None  # read while the process still runs
    finally:
        out, _ = proc.communicate("", timeout=60)
    assert out == ""  # nothing on stdout
