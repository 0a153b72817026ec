"""The built-in default model: a ~0.9 M-parameter Llama that knows the primitives of LETI-Arith.

How it is made (offline, ~2 minutes on 2 cores, cached under ``$LETI_CACHE``, default ``~/.cache/leti``):

1. A byte-level BPE tokenizer trained on the family's own text (task descriptions, programs,
   asserts, feedback lines), with every digit its own token.
2. A randomly initialised Llama (hidden 128, 4 layers, 4 heads, FFN 384, tied embeddings).
3. Brief pre-training (800 steps of 64 examples, AdamW 3e-3, warm-up then cosine) on a stream of
   generated examples:
   - 65%: a program under a docstring that shows only an assert (one- or two-step, no description);
   - 35%: a *single-step* task with its description.
   So the model learns what each operation word means and how to copy numbers, but it never sees
   a described two-step task: LeTI must teach those compositions through execution feedback alone.

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

from leti_env.tasks.arith import CONSTANTS, MAX_INPUT, OPERATORS, PHRASES, apply_steps, describe, reference_program

VERSION = 2  # bump when the recipe changes, so caches are rebuilt
PRETRAIN_STEPS = 800
# Llama shapes of the default model's sizes. "small" is the built-in default (~0.9 M parameters); "medium"
# (~5 M) is for asking whether what LeTI's feedback text adds changes with scale (the learning study).
SIZES = {
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4),
    "medium": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4),
}


def cache_dir() -> Path:
    return Path(os.environ.get("LETI_CACHE", Path.home() / ".cache" / "leti"))


def pretraining_example(rng: random.Random, described_fraction: float = 0.35, max_input: int = MAX_INPUT) -> str:
    """One pre-training document (see the module docstring)."""
    if rng.random() < described_fraction:
        op, c = rng.choice(OPERATORS), rng.choice(CONSTANTS)
        x = rng.randint(0, max_input)
        steps = ((op, c, rng.choice(range(len(PHRASES[op])))),)
        return f'"""\n{describe(steps)}\nassert f({x}) == {apply_steps(steps, x)}\n"""\n{reference_program(steps)}'
    steps = tuple((rng.choice(OPERATORS), rng.choice(CONSTANTS), 0) for _ in range(rng.choice((1, 2))))
    x = rng.randint(0, max_input)
    return f'"""\nassert f({x}) == {apply_steps(steps, x)}\n"""\n{reference_program(steps)}'


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


def _progress(message: str) -> None:
    """Where the build's progress goes: stderr, at once (as the run's table), so that a log or a pipe shows
    a ten-minute build as it happens rather than when stdout's buffer fills."""
    print(message, file=sys.stderr, flush=True)


def default_model_path(*, seed: int = 0, size: str = "small", rebuild: bool = False, log=_progress, **build_kwargs) -> str:
    """The cached default model of ``size`` (built on first use). Returns its folder."""
    if size not in SIZES:
        raise ValueError(f"unknown default model size {size!r}; choose from {sorted(SIZES)}")
    folder = cache_dir() / (f"default-arith-v{VERSION}-seed{seed}" + ("" if size == "small" else f"-{size}"))
    if (folder / "leti_default_model.json").exists() and not rebuild:
        return str(folder)
    build_default_model(folder, seed=seed, size=size, log=log, **build_kwargs)
    return str(folder)


def build_default_model(folder: str | Path, *, seed: int = 0, size: str = "small", pretrain_steps: int = PRETRAIN_STEPS,
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
        texts = [pretraining_example(rng, described_fraction, max_input) + tokenizer.eos_token for _ in range(batch_size)]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
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
              "described_fraction": described_fraction, "max_input": max_input, "learning_rate": learning_rate,
              "first_loss": losses[0], "final_loss": sum(tail) / len(tail), "seconds": time.monotonic() - start,
              "recipe": __doc__}
    (tmp / "leti_default_model.json").write_text(json.dumps(record, indent=2))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    log(f"default model ready: {record['parameters']:,} parameters, {pretrain_steps} steps, loss {record['final_loss']:.3f}, "
        f"{record['seconds']:.0f} s -> {folder}")
    return folder
