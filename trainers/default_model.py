"""The built-in default model: a ~0.9 M-parameter Llama that knows the primitives of LETI-Arith.

It ships with leti (``trainers/default_models/<size>/``), built once by the recipe below, so that every
machine trains the same base model: its 800 CPU pre-training steps do not give the same bits on every
CPU, and from a different base LeTI takes off at a different pace. Each file's sha256 is checked on load
(``SHIPPED``). Seeds other than 0 are built on first use and cached under ``$LETI_CACHE`` (default
``~/.cache/leti``); ``leti build-default-model`` runs the recipe and says whether this machine's result is
the shipped model, bit for bit. They are stored in fp32 (3.6 MB and 21 MB), exactly the weights the recipe
trained: half precision would halve the size, but the shipped model would then be a rounding of what the
recipe makes, and no build could be compared with it bit for bit.

How it is made (offline, ~2 minutes on 2 cores):

1. A byte-level BPE tokenizer trained on the family's own text (task descriptions, programs,
   asserts, feedback lines), with every digit its own token.
2. A randomly initialised Llama (hidden 128, 4 layers, 4 heads, FFN 384, tied embeddings).
3. Brief pre-training (800 steps of 64 examples, AdamW 3e-3, warm-up then cosine) on a stream of
   generated examples:
   - 65%: a program under a docstring that shows only an assert (one- or two-step, no description);
   - 35%: a *single-step* task with its description.
   So the model learns what each operation word means and how to copy numbers, but it never sees
   a described two-step task: LeTI must teach those compositions through execution feedback alone.

A second corpus, ``corpus="feedback"`` (``--default_model_corpus feedback``), makes a model that can read
execution feedback, as code models can after pre-training on issues, Q&A threads and CI logs: 30% of its
documents are a wrong program followed by the real feedback its tests give (the traceback of the first
failing assert, with the value returned), half of them then followed by the corrected program. Those tasks
are the same kinds as above (assert-only one- or two-step, or described single-step), and half the wrong
programs satisfy the docstring's assert, so only the feedback's hidden input tells them apart: the model
learns to connect "AssertionError: 12" under ``assert (got := f(11)) == 13`` with its program, and still
never sees a described two-step task. The wrong programs carry no loss: the model reads them, and is never
taught to write a wrong program after a prompt. Its tokenizer is the same as the plain corpus's.

Made with the design of ``docs/cpu_testbed.md`` (which learned; description-free
pre-training did not). Measured here (seed 0, 300 training tasks x 8 samples at T=1): with 20% described
examples the base model passes 23% of single-step and 4.7% of two-step samples, and LeTI's sampled pass
rate rose 0.053 -> 0.079 in 5 iterations; with 35% it passes 77% / 2.2% and LeTI went 0.053 -> 0.132.

How well a model copies constants from the words after 800 steps depends on its seed: one-step tasks at T=1
passed 56%, 89%, 22% and 93% for seeds 0-3 (the operation was nearly always right, the constant often not),
and LeTI took off slowest from seed 2. ``leti train`` therefore uses one model, seed 0, for runs of every
``--seed`` (as one would use a released checkpoint); ``--default_model_seed`` builds and uses another.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Literal

from leti_env.tasks.arith import CONSTANTS, MAX_INPUT, OPERATORS, PHRASES, apply_steps, describe, reference_program

Corpus = Literal["programs", "feedback"]
CORPORA: tuple[str, ...] = ("programs", "feedback")
FEEDBACK_FRACTION = 0.3  # share of execution-feedback documents in the "feedback" corpus

VERSION = 2  # bump when the recipe changes, so caches are rebuilt
PRETRAIN_STEPS = 800
# Llama shapes of the default model's sizes. "small" is the built-in default (~0.9 M parameters); "medium"
# (~5 M) is for asking whether what LeTI's feedback text adds changes with scale (the learning study).
SIZES = {
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4),
    "medium": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4),
}


SHIPPED_DIR = Path(__file__).with_name("default_models")
# sha256 of every file of the shipped models (seed 0 of each size, and the small one pre-trained on feedback), checked whenever one is loaded; each folder's
# SHA256SUMS holds the same, for `sha256sum -c`
SHIPPED: dict[str, dict[str, str]] = {
    "small": {
        "config.json": "91a2bd54f4dbfebf0c44c73f04be5a8e9703f6c845f878d8c3780e290488906a",
        "generation_config.json": "17e26fdb0638e17ace8be2357fe7615013bb221604cac0ff7368a558028be097",
        "leti_default_model.json": "e21019afe1f49c2717d6a8f43ba5c24ee70911ba4a09205c13deec14ab00c36c",
        "model.safetensors": "1d56f6786732457c4f9ce866855d0fd30665576d08bee21442749b1e14f23179",
        "tokenizer.json": "ff01de3bfbc0d23388a90125623b251c0d148ed8dccd783c274fa85c04b439c4",
        "tokenizer_config.json": "82b57cee6ec802269563f8de21f3f132da357b124b2e374e3db0965b4805af5e",
    },
    "medium": {
        "config.json": "6977dc940ef7abf05196d26174023800bf3d2c2d988cba3bfc8456aa477e6e4b",
        "generation_config.json": "17e26fdb0638e17ace8be2357fe7615013bb221604cac0ff7368a558028be097",
        "leti_default_model.json": "e374c2d7cc850adb4608b4e28948bb3aa9380dc39edc4dcba2b12dc114f094d0",
        "model.safetensors": "806557453a0855f2ff55fcc5da905fe3d8210fec72545040b696f65e210a6546",
        "tokenizer.json": "ff01de3bfbc0d23388a90125623b251c0d148ed8dccd783c274fa85c04b439c4",
        "tokenizer_config.json": "82b57cee6ec802269563f8de21f3f132da357b124b2e374e3db0965b4805af5e",
    },
    "small-feedback": {
        "config.json": "91a2bd54f4dbfebf0c44c73f04be5a8e9703f6c845f878d8c3780e290488906a",
        "generation_config.json": "17e26fdb0638e17ace8be2357fe7615013bb221604cac0ff7368a558028be097",
        "leti_default_model.json": "35d1112f03aaa24f0d7c6a576e2322cab34ee4ec745db824588fc583745ba925",
        "model.safetensors": "a6228cc4277e25140ec44544d563f848ae027ad1b98122b1800c40684eecc716",
        "tokenizer.json": "ff01de3bfbc0d23388a90125623b251c0d148ed8dccd783c274fa85c04b439c4",
        "tokenizer_config.json": "82b57cee6ec802269563f8de21f3f132da357b124b2e374e3db0965b4805af5e",
    },
}


def shipped_name(size: str = "small", corpus: str = "programs") -> str:
    """The folder name of a default model under ``default_models/``: its size, and ``-feedback`` for the
    corpus with execution feedback."""
    if size not in SIZES:
        raise ValueError(f"unknown default model size {size!r}; choose from {sorted(SIZES)}")
    if corpus not in CORPORA:
        raise ValueError(f"unknown default model corpus {corpus!r}; choose from {list(CORPORA)}")
    return size if corpus == "programs" else f"{size}-{corpus}"


def cache_dir() -> Path:
    return Path(os.environ.get("LETI_CACHE", Path.home() / ".cache" / "leti"))


def file_sha256(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(folder: str | Path) -> str | None:
    """The base model's identity in a figure: the sha256 of its weights file (``model.safetensors``), or
    None where a folder has no single such file."""
    path = Path(folder) / "model.safetensors"
    return file_sha256(path) if path.is_file() else None


def base_model_record(source: object) -> dict:
    """What a run's ``config.json`` says of its base model when it is a leti default model (shipped or
    built): its folder, its weights' sha256, and the record of its build. Other models: ``{}``."""
    if not isinstance(source, (str, os.PathLike)) or not (Path(source) / "leti_default_model.json").is_file():
        return {}
    record = json.loads((Path(source) / "leti_default_model.json").read_text())
    return {"base_model": {"path": str(source), "sha256": model_sha256(source),
                           "shipped": Path(source).resolve().parent == SHIPPED_DIR.resolve(),
                           **{k: record.get(k) for k in ("version", "seed", "size", "parameters")},
                           "corpus": record.get("corpus", "programs")}}


def shipped_model_path(size: str = "small", corpus: str = "programs") -> str:
    """The shipped default model of ``size`` and ``corpus``, after checking every file against ``SHIPPED``."""
    key = shipped_name(size, corpus)
    if key not in SHIPPED:
        raise ValueError(f"no {key} default model ships with leti (shipped: {sorted(SHIPPED)}); "
                         "`leti build-default-model` builds it")
    folder = SHIPPED_DIR / key
    for name, expected in SHIPPED[key].items():
        path = folder / name
        if not path.is_file():
            raise OSError(f"the shipped default model lacks {path}: reinstall leti (an install without its "
                          "package data, or a checkout without the file?)")
        if file_sha256(path) != expected:
            raise OSError(f"the shipped default model's {path} does not match its sha256 ({expected[:12]}...): "
                          "reinstall leti, or `leti build-default-model` to build one")
    return str(folder)


def pretraining_example(rng: random.Random, described_fraction: float = 0.35, max_input: int = MAX_INPUT) -> str:
    """One document of the plain corpus (see the module docstring)."""
    if rng.random() < described_fraction:
        op, c = rng.choice(OPERATORS), rng.choice(CONSTANTS)
        x = rng.randint(0, max_input)
        steps = ((op, c, rng.choice(range(len(PHRASES[op])))),)
        return f'"""\n{describe(steps)}\nassert f({x}) == {apply_steps(steps, x)}\n"""\n{reference_program(steps)}'
    steps = tuple((rng.choice(OPERATORS), rng.choice(CONSTANTS), 0) for _ in range(rng.choice((1, 2))))
    x = rng.randint(0, max_input)
    return f'"""\nassert f({x}) == {apply_steps(steps, x)}\n"""\n{reference_program(steps)}'


# every program of one or two steps (first phrasing): the wrong programs of the feedback documents
_PROGRAMS: tuple = tuple(((op, c, 0),) for op in OPERATORS for c in CONSTANTS) + tuple(
    ((a, c1, 0), (b, c2, 0)) for a in OPERATORS for c1 in CONSTANTS for b in OPERATORS for c2 in CONSTANTS)


def execution_feedback(solution: str, tests: list[str], index: int, returned: int) -> str:
    """The feedback leti's executor gives when ``tests[index]`` (``assert (got := f(x)) == y, got``) is
    the first to fail after running ``solution``: the traceback of the whole file (solution, newline, the
    tests), its line number included, and the value returned as the AssertionError's message."""
    line = solution.count("\n") + 2 + index
    return (f'Traceback (most recent call last):\n  File "<string>", line {line}, in <module>\n    {tests[index]}\n'
            f"AssertionError: {returned}\n")


def pretraining_document(rng: random.Random, described_fraction: float = 0.35, max_input: int = MAX_INPUT,
                         feedback_fraction: float = 0.0) -> tuple[str, tuple[int, int] | None]:
    """One pre-training document and the characters of it that carry no loss (``None``: none). With
    ``feedback_fraction`` 0 it draws exactly as the plain corpus always has (``pretraining_example``), so
    the plain models stay bit for bit what they were."""
    if feedback_fraction and rng.random() < feedback_fraction:
        return feedback_example(rng, described_fraction, max_input)
    return pretraining_example(rng, described_fraction, max_input), None


def feedback_example(rng: random.Random, described_fraction: float = 0.35, max_input: int = MAX_INPUT,
                     num_asserts: int = 5) -> tuple[str, tuple[int, int]]:
    """A wrong program and its execution feedback (see the module docstring): either as a log shows them
    (the file, then the traceback), or as a repair (``leti_env.refinement_prompt``'s layout: the file, the
    feedback as comments, the prompt again, then the right program).

    Returns the document and the character span of the wrong program, which pre-training reads but never
    learns to write: trained on, it taught the model that a wrong program follows a prompt (a first build
    that trained on it passed 21% of one-step tasks at T=1, against the plain model's 55%)."""
    from leti_env.envs import refinement_prompt

    if rng.random() < described_fraction:  # a described task has one step, as in the plain corpus
        steps = ((rng.choice(OPERATORS), rng.choice(CONSTANTS), rng.randrange(3)),)
        header = describe(steps) + "\n"
    else:
        steps = tuple((rng.choice(OPERATORS), rng.choice(CONSTANTS), 0) for _ in range(rng.choice((1, 2))))
        header = ""
    inputs = rng.sample(range(max_input + 1), num_asserts)
    order = inputs if rng.random() < 0.5 else inputs[1:] + inputs[:1]  # the shown assert checked first, or last
    prompt = f'"""\n{header}assert f({inputs[0]}) == {apply_steps(steps, inputs[0])}\n"""\n'
    want = [apply_steps(steps, x) for x in order]
    differs = [p for p in _PROGRAMS if [apply_steps(p, x) for x in order] != want]
    agrees = [p for p in differs if apply_steps(p, inputs[0]) == want[order.index(inputs[0])]]
    wrong = rng.choice(agrees if agrees and rng.random() < 0.5 else differs)
    tests = [f"assert (got := f({x})) == {y}, got" for x, y in zip(order, want)]
    index = next(i for i, x in enumerate(order) if apply_steps(wrong, x) != want[i])
    program = reference_program(wrong)
    feedback = execution_feedback(prompt + program, tests, index, apply_steps(wrong, order[index]))
    span = (len(prompt), len(prompt) + len(program))
    if rng.random() < 0.5:
        return f"{prompt}{program}\n{feedback}", span
    return refinement_prompt(prompt, program, feedback) + reference_program(steps), span


def _tokenizer_corpus(rng: random.Random) -> list[str]:
    from leti_env.tasks.arith import load_arith

    texts = [pretraining_example(rng, 0.5) for _ in range(4000)]
    # training tasks only: nothing of the evaluation splits, not even their spelling, shapes the model
    texts += [t.prompt + t.reference_solution + "\n" + t.tests for t in load_arith("train")]
    texts += ["Traceback (most recent call last):\n  File \"<string>\", line 5, in <module>\n    assert (got := f(3)) == 12, got\n"
              "AssertionError: 9\nSyntaxError: invalid syntax\nNameError: name 'y' is not defined\nTypeError: unsupported operand"]
    return texts


EOS = "<|endoftext|>"  # the default model's end of text (and BOS): every pre-training document ends with it


def build_default_tokenizer(seed: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=[EOS, "<|pad|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_tokenizer_corpus(random.Random(seed)), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS,
                                   pad_token="<|pad|>", padding_side="left", model_max_length=512)


def pretraining_batch(tokenizer, documents: list[tuple[str, tuple[int, int] | None]]):
    """Tensors for one pre-training step: each document with EOS appended, padded, and ``labels`` that
    leave out the padding and each document's span without loss (``pretraining_document``)."""
    batch = tokenizer([text + tokenizer.eos_token for text, _ in documents], return_tensors="pt", padding=True,
                      add_special_tokens=False, return_offsets_mapping=True)
    offsets = batch.pop("offset_mapping")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for row, (_, span) in enumerate(documents):
        if span is not None:  # read, never a target
            inside = (offsets[row, :, 0] >= span[0]) & (offsets[row, :, 1] <= span[1]) & (offsets[row, :, 1] > 0)
            labels[row, inside] = -100
    batch["labels"] = labels
    return batch


def _progress(message: str) -> None:
    """Where the build's progress goes: stderr, at once (as the run's table), so that a log or a pipe shows
    a build of minutes as it happens rather than when stdout's buffer fills."""
    print(message, file=sys.stderr, flush=True)


def cached_model_folder(seed: int = 0, size: str = "small", corpus: str = "programs") -> Path:
    """Where a built default model of ``seed``, ``size`` and ``corpus`` is cached."""
    suffix = shipped_name(size, corpus).removeprefix("small").removeprefix("-")
    return cache_dir() / (f"default-arith-v{VERSION}-seed{seed}" + (f"-{suffix}" if suffix else ""))


def default_model_path(*, seed: int = 0, size: str = "small", corpus: str = "programs", rebuild: bool = False,
                       log=_progress, **build_kwargs) -> str:
    """The default model of ``size`` pre-trained on ``corpus``: the shipped one for seed 0; another seed's is
    built on first use and cached (``rebuild``, or build arguments, build it again). Returns its folder."""
    key = shipped_name(size, corpus)
    if seed == 0 and not rebuild and not build_kwargs and key in SHIPPED:
        return shipped_model_path(size, corpus)
    folder = cached_model_folder(seed, size, corpus)
    if (folder / "leti_default_model.json").exists() and not rebuild:
        return str(folder)
    build_default_model(folder, seed=seed, size=size, corpus=corpus, log=log, **build_kwargs)
    return str(folder)


def build_default_model(folder: str | Path, *, seed: int = 0, size: str = "small", corpus: str = "programs",
                        pretrain_steps: int = PRETRAIN_STEPS,
                        batch_size: int = 64, learning_rate: float = 3e-3, warmup_steps: int = 50,
                        described_fraction: float = 0.35, max_input: int = MAX_INPUT, log=_progress) -> Path:
    """Tokenizer + Llama + pre-training; writes ``folder`` with a ``leti_default_model.json`` record.

    Pre-training runs a fixed number of steps (not a time budget), so a seed gives the same recipe on
    any machine, fast or slow (up to floating-point differences); the learning rate warms up, then
    decays to zero on a cosine.
    """
    import math

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .machine import machine_record

    shipped_name(size, corpus)  # a valid size and corpus, before minutes of work
    feedback_fraction = FEEDBACK_FRACTION if corpus == "feedback" else 0.0
    folder = Path(folder)
    start = time.monotonic()
    torch.manual_seed(seed)
    tokenizer = build_default_tokenizer(seed)
    shape = SIZES[size]
    config = LlamaConfig(vocab_size=len(tokenizer) + 4, **shape, num_key_value_heads=shape["num_attention_heads"],
                         max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) * 0.5 * (
        1 + math.cos(math.pi * min(step, pretrain_steps) / pretrain_steps)))
    rng = random.Random(seed)
    model.train()
    tokens_seen, losses = 0, []
    for step in range(1, pretrain_steps + 1):
        batch = pretraining_batch(tokenizer, [pretraining_document(rng, described_fraction, max_input, feedback_fraction)
                                              for _ in range(batch_size)])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        tokens_seen += int(batch["attention_mask"].sum())
        losses.append(loss.item())
        if step % 100 == 0:
            log(f"pre-training the default model: step {step}/{pretrain_steps}, loss {sum(losses[-100:]) / 100:.3f}, "
                f"{time.monotonic() - start:.0f} s")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = folder.with_name(folder.name + ".tmp")
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a bar for one 4 MB shard says nothing; the line below does
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    tail = losses[-max(1, min(50, len(losses) // 5)):]
    record = {"version": VERSION, "seed": seed, "size": size, "parameters": sum(p.numel() for p in model.parameters()),
              "vocab_size": len(tokenizer), "pretrain_steps": pretrain_steps, "pretrain_tokens": tokens_seen,
              "corpus": corpus, "described_fraction": described_fraction, "feedback_fraction": feedback_fraction,
              "max_input": max_input, "learning_rate": learning_rate,
              "first_loss": losses[0], "final_loss": sum(tail) / len(tail), "seconds": time.monotonic() - start,
              "machine": machine_record(), "recipe": __doc__}
    (tmp / "leti_default_model.json").write_text(json.dumps(record, indent=2))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    log(f"default model ready: {record['parameters']:,} parameters, {pretrain_steps} steps, loss {record['final_loss']:.3f}, "
        f"{record['seconds']:.0f} s -> {folder}")
    return folder
