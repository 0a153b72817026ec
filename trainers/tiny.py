"""Tiny causal LMs built offline: for tests, CPU smoke runs and examples (no Hub access needed).

The tokenizer is a byte-level BPE trained in about a second on Python source (the standard library by
default), so it round-trips any text; the model is a randomly initialised Llama of ~1-5 M parameters.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path


def python_corpus(max_files: int = 200) -> list[str]:
    """Source files from the standard library: a corpus every Python installation has."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(stdlib.glob("*.py"))[:max_files]:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return texts


def build_tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 4096):
    """A byte-level BPE tokenizer (``<|endoftext|>`` is BOS/EOS/pad), left padding for generation."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus if corpus is not None else python_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", padding_side="left", model_max_length=2048)


def build_tiny_model(output_dir: str | Path, *, corpus: list[str] | None = None, vocab_size: int = 4096,
                     hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                     tie_word_embeddings: bool = False, seed: int = 0, padded_rows: int = 0) -> Path:
    """Save a randomly initialised tiny Llama and its tokenizer to ``output_dir``; return the path.

    ``padded_rows``: embedding rows beyond the tokenizer's length, as Qwen and CodeGen ship them.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer(corpus, vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer) + padded_rows, hidden_size=hidden_size, intermediate_size=hidden_size * 3,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
                         max_position_embeddings=2048, tie_word_embeddings=tie_word_embeddings,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def tiny_model_path(name: str = "tiny") -> str:
    """``"tiny"``: a tiny offline model built once and cached under ``$LETI_CACHE`` (default ``~/.cache/leti``).

    Lets every example run on a CPU with no Hub access: ``--model_name_or_path tiny``. Any other value
    is returned unchanged (a Hub id or a local path).
    """
    import os

    if name != "tiny":
        return name
    folder = Path(os.environ.get("LETI_CACHE", Path.home() / ".cache" / "leti")) / "tiny-llama"
    if not (folder / "config.json").exists():
        build_tiny_model(folder, vocab_size=2048, hidden_size=64, num_layers=2)
    return str(folder)
