"""The built-in default model: a ~0.9 M-parameter Llama that knows the primitives of LETI-Arith.

How it is made (offline, ~2 minutes on 2 cores, cached under ``$LETI_CACHE``, default ``~/.cache/leti``):

1. A byte-level BPE tokenizer trained on the family's own text (task descriptions, programs,
   asserts, feedback lines), with every digit its own token.
2. A randomly initialised Llama (hidden 128, 4 layers, 4 heads, FFN 384, tied embeddings).
3. Brief pre-training on a stream of generated examples:
   - 80%: a program under a docstring that shows only an assert (one- or two-step, no description);
   - 20%: a *single-step* task with its description.
   So the model learns what each operation word means and how to copy numbers, but it never sees
   a described two-step task: LeTI must teach those compositions through execution feedback alone.

Made with the design measured in ``docs/cpu_testbed_probe.md`` (which learned; description-free
pre-training did not).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from leti_env.tasks.arith import CONSTANTS, OPERATORS, PHRASES, SYMBOL

VERSION = 1  # bump when the recipe changes, so caches are rebuilt


def cache_dir() -> Path:
    return Path(os.environ.get("LETI_CACHE", Path.home() / ".cache" / "leti"))


def _program(steps) -> str:
    expr = "x"
    for i, (op, c) in enumerate(steps):
        expr = f"{expr} {SYMBOL[op]} {c}" if i == 0 else f"({expr}) {SYMBOL[op]} {c}"
    return f"def f(x):\n    return {expr}"


def _value(steps, x: int) -> int:
    for op, c in steps:
        x = x + c if op == "add" else x - c if op == "sub" else x * c
    return x


def pretraining_example(rng: random.Random, described_fraction: float = 0.2) -> str:
    """One pre-training document (see the module docstring)."""
    if rng.random() < described_fraction:
        op, c = rng.choice(OPERATORS), rng.choice(CONSTANTS)
        x = rng.randint(0, 50)
        text = "Write a function f(x) that returns x " + rng.choice(PHRASES[op]).format(c=c) + "."
        return f'"""\n{text}\nassert f({x}) == {_value([(op, c)], x)}\n"""\n{_program([(op, c)])}'
    steps = [(rng.choice(OPERATORS), rng.choice(CONSTANTS)) for _ in range(rng.choice((1, 2)))]
    x = rng.randint(0, 50)
    return f'"""\nassert f({x}) == {_value(steps, x)}\n"""\n{_program(steps)}'


def _tokenizer_corpus(rng: random.Random) -> list[str]:
    from leti_env.tasks.arith import load_arith

    texts = [pretraining_example(rng, 0.5) for _ in range(4000)]
    for split in ("train", "heldout"):
        texts += [t.prompt + t.reference_solution + "\n" + t.tests for t in load_arith(split)]
    texts += ["Traceback (most recent call last):\n  File \"<string>\", line 5, in <module>\nAssertionError: f(3) returned 9, "
              "expected 12\nSyntaxError: invalid syntax\nNameError: name 'y' is not defined\nTypeError: unsupported operand"]
    return texts


def build_default_tokenizer(seed: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_tokenizer_corpus(random.Random(seed)), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", padding_side="left", model_max_length=512)


def default_model_path(*, seed: int = 0, pretrain_seconds: float = 120.0, rebuild: bool = False, log=print) -> str:
    """The cached default model (built on first use). Returns its folder."""
    folder = cache_dir() / f"default-arith-v{VERSION}-seed{seed}"
    if (folder / "leti_default_model.json").exists() and not rebuild:
        return str(folder)
    build_default_model(folder, seed=seed, pretrain_seconds=pretrain_seconds, log=log)
    return str(folder)


def build_default_model(folder: str | Path, *, seed: int = 0, pretrain_seconds: float = 120.0, batch_size: int = 64,
                        learning_rate: float = 2e-3, log=print) -> Path:
    """Tokenizer + Llama + pre-training; writes ``folder`` with a ``leti_default_model.json`` record."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    start = time.monotonic()
    torch.manual_seed(seed)
    tokenizer = build_default_tokenizer(seed)
    config = LlamaConfig(vocab_size=len(tokenizer) + 4, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    rng = random.Random(seed)
    model.train()
    steps, tokens_seen, losses = 0, 0, []
    deadline = start + pretrain_seconds
    while time.monotonic() < deadline:
        texts = [pretraining_example(rng) + tokenizer.eos_token for _ in range(batch_size)]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        steps += 1
        tokens_seen += int(batch["attention_mask"].sum())
        losses.append(float(loss))
        if steps % 100 == 0:
            log(f"pre-training the default model: step {steps}, loss {sum(losses[-100:]) / 100:.3f}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    record = {"version": VERSION, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
              "vocab_size": len(tokenizer), "pretrain_steps": steps, "pretrain_tokens": tokens_seen,
              "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])), "seconds": time.monotonic() - start,
              "recipe": __doc__}
    (tmp / "leti_default_model.json").write_text(json.dumps(record, indent=2))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    log(f"default model ready: {record['parameters']:,} parameters, {steps} steps, loss {record['final_loss']:.3f}, "
        f"{record['seconds']:.0f} s -> {folder}")
    return folder
