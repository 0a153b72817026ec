"""The built-in default model: the shipped ones, and how they are made (a short build here; the real one
pre-trains 800 steps, ~2 minutes)."""

from __future__ import annotations

import json
import random

import pytest

from trainers.default_model import build_default_model, pretraining_document, pretraining_example


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
    """--default_model_size medium with another seed: ~5 M parameters, cached beside (never instead of) the small."""
    from trainers.default_model import default_model_path

    monkeypatch.setenv("LETI_CACHE", str(tmp_path))
    medium = default_model_path(seed=1, size="medium", pretrain_steps=3, warmup_steps=1, log=lambda *_: None)
    record = json.loads((tmp_path / "default-arith-v2-seed1-medium" / "leti_default_model.json").read_text())
    assert medium.endswith("-medium") and record["size"] == "medium" and 4_000_000 < record["parameters"] < 7_000_000
    assert not (tmp_path / "default-arith-v2-seed1").exists()
    with pytest.raises(ValueError, match="unknown default model size 'huge'; choose from"):
        default_model_path(size="huge")


@pytest.mark.parametrize("size, parameters", [("small", 910_976), ("medium", 5_230_848)])
def test_leti_train_loads_the_shipped_model_checked_file_by_file(tmp_path, monkeypatch, size, parameters):
    """Seed 0 of each size ships with leti: no build, no cache; a changed or missing file is refused."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    import trainers.default_model as default_model

    monkeypatch.setenv("LETI_CACHE", str(tmp_path / "cache"))
    folder = default_model.default_model_path(size=size)
    assert folder == str(default_model.SHIPPED_DIR / size) and not (tmp_path / "cache").exists()
    record = json.loads((default_model.SHIPPED_DIR / size / "leti_default_model.json").read_text())
    assert record["parameters"] == parameters and record["pretrain_steps"] == 800 and record["machine"]["cpu"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert AutoTokenizer.from_pretrained(folder).tokenize("123") == ["1", "2", "3"]

    sums = (default_model.SHIPPED_DIR / size / "SHA256SUMS").read_text().splitlines()  # for `sha256sum -c`
    assert dict(reversed(line.split("  ")) for line in sums) == default_model.SHIPPED[size]

    copy = tmp_path / "shipped"
    shutil.copytree(default_model.SHIPPED_DIR, copy)
    monkeypatch.setattr(default_model, "SHIPPED_DIR", copy)
    assert default_model.default_model_path(size=size) == str(copy / size)
    weights = copy / size / "model.safetensors"
    original = weights.read_bytes()
    data = bytearray(original)
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(OSError, match=f"shipped default model's .*{size}/model.safetensors does not match its sha256"):
        default_model.default_model_path(size=size)
    weights.write_bytes(original)
    (copy / size / "tokenizer.json").unlink()
    with pytest.raises(OSError, match="shipped default model lacks .*tokenizer.json: reinstall leti"):
        default_model.default_model_path(size=size)


def test_a_run_of_the_default_model_records_its_hash(tmp_path):
    from trainers.default_model import SHIPPED, SHIPPED_DIR, base_model_record

    record = base_model_record(str(SHIPPED_DIR / "small"))["base_model"]
    assert record["sha256"] == SHIPPED["small"]["model.safetensors"] and record["shipped"]
    assert (record["seed"], record["size"], record["parameters"]) == (0, "small", 910_976)
    assert base_model_record(str(tmp_path)) == {} and base_model_record(None) == {}


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


def test_feedback_documents_carry_the_executors_own_feedback():
    """The feedback corpus (``corpus="feedback"``): each wrong program's traceback is, character for character,
    what leti's executor says when it runs that program against those asserts; and the plain corpus's stream
    is unchanged by the option (the shipped model's documents)."""
    import re

    from leti_env import ExecutionLimits, TaskRunner
    from leti_env.tasks import CodeTask
    from trainers.default_model import feedback_example

    rng = random.Random(3)
    documents = [feedback_example(rng)[0] for _ in range(60)]
    pairs, expected = [], []
    for doc in documents:
        commented = "# The program above failed its tests:\n" in doc
        if commented:  # the repair layout: the feedback as comments, then the prompt again and the right program
            head, rest = doc.split("\n\n# The program above failed its tests:\n")
            feedback = "".join(line[2:] + "\n" if line.startswith("# ") else "\n"
                               for line in rest.split("\n# Write a corrected version.\n")[0].splitlines())
        else:
            head, feedback = doc.split("\nTraceback", 1)
            feedback = "Traceback" + feedback
        prompt, program = head.split('"""\n', 2)[1], head.split('"""\n', 2)[2]
        prompt = f'"""\n{prompt}"""\n'
        failing = re.search(r"assert \(got := f\((\d+)\)\) == (-?\d+), got", feedback)
        shown = re.search(r"assert f\((\d+)\) == (-?\d+)", prompt).groups()
        # the tests: the failing one is where the feedback's line number puts it; the others pass the wrong program
        index = int(re.search(r"line (\d+)", feedback).group(1)) - (prompt + program).count("\n") - 2
        tests = [f"assert (got := f({x})) == f({x}), got" for x in range(index)]  # earlier asserts that pass
        tests.append(failing.group(0))
        pairs.append((CodeTask(task_id=f"doc{len(pairs)}", prompt=prompt, tests="\n".join(tests), entry_point="f"),
                      program.rstrip("\n")))
        expected.append(feedback)
        assert shown  # every document's prompt shows one assert
    results = TaskRunner(ExecutionLimits(timeout=5.0)).run(pairs)
    assert [r.feedback for r in results] == expected
    assert {r.status for r in results} == {"failed"}
    assert sum("# The program above failed its tests:" in d for d in documents) in range(15, 46)  # both layouts
    assert not any("Write a function" in d and " then " in d for d in documents)  # no described two-step task

    plain = random.Random(0)
    assert [pretraining_example(plain) for _ in range(50)] == [
        pretraining_document(r, feedback_fraction=0.0)[0] for r in [random.Random(0)] for _ in range(50)]


def test_pretraining_reads_the_wrong_programs_but_never_learns_to_write_them():
    """In a feedback document the wrong program is context only: its tokens carry no loss, the feedback and
    the corrected program do (trained on, wrong programs taught the model to write one after a prompt)."""
    from trainers.default_model import build_default_tokenizer, feedback_example, pretraining_batch

    tokenizer = build_default_tokenizer(0)
    rng = random.Random(5)
    documents = [feedback_example(rng) for _ in range(8)] + [("def f(x):\n    return x", None)]
    batch = pretraining_batch(tokenizer, documents)
    for row, (text, span) in enumerate(documents):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        real = batch["attention_mask"][row] == 1
        unlearned = tokenizer.decode(ids[real & (labels == -100)])
        if span is None:
            assert unlearned == ""
            continue
        assert unlearned == text[span[0]:span[1]]  # exactly the wrong program, token for token
        learned = tokenizer.decode(ids[labels != -100])
        assert "AssertionError" in learned and learned.endswith(tokenizer.eos_token)


def test_the_feedback_corpus_model_ships_and_is_chosen_by_name(tmp_path, monkeypatch):
    """`--default_model_corpus feedback`: its own shipped model (same tokenizer, same shape), its own cache
    folder for other seeds, and a one-line error for a corpus that does not exist."""
    import trainers.default_model as default_model

    monkeypatch.setenv("LETI_CACHE", str(tmp_path))
    folder = default_model.default_model_path(corpus="feedback")
    assert folder == str(default_model.SHIPPED_DIR / "small-feedback")
    record = json.loads((default_model.SHIPPED_DIR / "small-feedback" / "leti_default_model.json").read_text())
    assert (record["corpus"], record["feedback_fraction"], record["parameters"]) == ("feedback", 0.3, 910_976)
    assert default_model.SHIPPED["small-feedback"]["tokenizer.json"] == default_model.SHIPPED["small"]["tokenizer.json"]
    assert default_model.SHIPPED["small-feedback"]["model.safetensors"] != default_model.SHIPPED["small"]["model.safetensors"]
    assert default_model.base_model_record(folder)["base_model"]["corpus"] == "feedback"
    assert default_model.cached_model_folder(2, "small", "feedback") == tmp_path / "default-arith-v2-seed2-feedback"
    assert default_model.cached_model_folder(2, "medium", "feedback") == tmp_path / "default-arith-v2-seed2-medium-feedback"
    with pytest.raises(ValueError, match="unknown default model corpus 'stack'; choose from"):
        default_model.default_model_path(corpus="stack")
