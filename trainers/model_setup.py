"""Loading the model and tokenizer a LeTI run trains: 4-bit for QLoRA, fp32 for full fine-tuning, with
set-up errors that name the fix."""

from __future__ import annotations

import os
from typing import Any

from .leti_config import LetiConfig


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a backend error on unsupported hardware
        raise RuntimeError(
            f"`load_in_4bit=True` needs bitsandbytes ({exc}). `pip install bitsandbytes`, or set load_in_4bit=False "
            "(LoRA on full-precision weights)."
        ) from None


def _load_tokenizer(model: Any):
    from transformers import AutoTokenizer

    source = model if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", None)
    if not source:
        raise ValueError("the model has no `name_or_path` to load a tokenizer from; pass processing_class=<tokenizer>.")
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"could not load a tokenizer for {str(source)!r} ({exc}). Pass processing_class=<tokenizer>.") from None


def _load_model(model: str | os.PathLike, args: LetiConfig):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {}
    if not args.use_peft:
        # Full fine-tuning trains the loaded weights themselves: fp32 master weights (bf16 only in the
        # autocast compute), never a half-precision checkpoint's dtype (transformers loads "auto":
        # CodeGen's fp16), where AdamW's small steps round away and fp16 overflows.
        kwargs["dtype"] = torch.float32
    if args.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=args.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=args.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=getattr(torch, args.bnb_4bit_compute_dtype))
        if args.device.type == "cuda":
            # transformers' Trainer never moves a bitsandbytes model, so it must be loaded onto this process's GPU
            kwargs["device_map"] = {"": str(args.device)}
    try:
        return AutoModelForCausalLM.from_pretrained(model, **kwargs)
    except OSError as exc:
        raise ValueError(f"could not load a causal LM from {str(model)!r}: {exc}") from None


def _movable(model) -> bool:
    """Whether the trainer may move ``model`` to its device (not quantized, not already spread by a device map)."""
    return getattr(model, "quantization_method", None) is None and not getattr(model, "hf_device_map", None) \
        and hasattr(model, "device")


def _module_name(model, module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.split(".")[-1]
    raise ValueError("could not find the embedding module by name")
