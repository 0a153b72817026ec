"""Loading the model and tokenizer a LeTI run trains (from the config's TRL ``ModelConfig`` fields): 4-bit
for QLoRA, fp32 for full fine-tuning, with set-up errors that name the fix."""

from __future__ import annotations

import os
from typing import Any

from .console import third_party_deprecations_ignored
from .leti_config import LetiConfig


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a backend error on unsupported hardware
        raise RuntimeError(
            f"`load_in_4bit=True` (or load_in_8bit) needs bitsandbytes ({exc}). `pip install bitsandbytes`, or set "
            "load_in_4bit=False (LoRA on full-precision weights)."
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
    from transformers import AutoModelForCausalLM

    kwargs = model_loading_kwargs(args)
    if args.quantized and args.device.type == "cuda":
        # transformers' Trainer never moves a bitsandbytes model, so it must be loaded onto this process's GPU
        kwargs["device_map"] = {"": str(args.device)}
    try:
        return AutoModelForCausalLM.from_pretrained(model, **kwargs)
    except OSError as exc:
        raise ValueError(f"could not load a causal LM from {str(model)!r}: {exc}") from None


def model_loading_kwargs(args: Any) -> dict[str, Any]:
    """``from_pretrained`` arguments from TRL's ``ModelConfig`` fields (a ``LetiConfig``, or a run's saved
    ``config.json`` as a namespace), as TRL's ``get_quantization_config`` builds them, with LeTI's
    defaults where ``dtype`` is unset. Why not TRL's helper: it sets the 4-bit compute dtype to ``dtype``
    even when that is ``None`` (float32 compute), and LeTI's default computes in bfloat16."""
    import torch
    from transformers import BitsAndBytesConfig

    dtype = getattr(args, "dtype", None)
    kwargs: dict[str, Any] = {"revision": getattr(args, "model_revision", "main")}
    if getattr(args, "attn_implementation", None):
        kwargs["attn_implementation"] = args.attn_implementation
    if dtype is not None:
        kwargs["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    elif not getattr(args, "use_peft", True):
        # Full fine-tuning trains the loaded weights themselves: fp32 master weights (bf16 only in the
        # autocast compute), never a half-precision checkpoint's dtype (transformers loads "auto":
        # CodeGen's fp16), where AdamW's small steps round away and fp16 overflows.
        kwargs["dtype"] = torch.float32
    if getattr(args, "load_in_4bit", False):
        compute = dtype if dtype not in (None, "auto") else "bfloat16"
        storage = getattr(args, "bnb_4bit_quant_storage", None)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=getattr(args, "bnb_4bit_quant_type", "nf4"),
            bnb_4bit_use_double_quant=getattr(args, "use_bnb_nested_quant", True),
            bnb_4bit_compute_dtype=getattr(torch, compute),
            **({"bnb_4bit_quant_storage": getattr(torch, storage)} if storage else {}))
    elif getattr(args, "load_in_8bit", False):
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    return kwargs


def keep_4bit_weights_trainable(model) -> int:
    """Keep a 4-bit model's weights in the layout training needs, on every CPU. Returns how many layers
    were converted back.

    Why: on a CPU with AVX512-BF16, bitsandbytes (0.50.2, ``nn.modules.Linear4bit.forward``) converts a
    4-bit weight to a CPU inference layout the first time the layer runs in eval mode without grad
    (sampling, evaluation), sets ``quant_state.packing_format_for_cpu`` and never converts it back. The
    next training forward then takes the inference-only kernel, whose in-place ``result += bias`` fails
    ("a view of a leaf Variable that requires grad is being used in an in-place operation"), so every
    QLoRA iteration on such a CPU died at its first training step. The switch is turned off on each
    layer (``support_avx512bf16_for_cpu``) and any weight already converted, as by a caller who sampled
    from the model before handing it over, is converted back. A side effect we want: sampling computes
    the same way on CPUs with and without AVX512-BF16 (the inference layout also rounds the
    quantization scales to bfloat16). ``docs/upstream/bitsandbytes-cpu-packed-4bit-training.md`` is the
    upstream report.
    """
    try:
        import bitsandbytes as bnb
    except Exception:  # not installed, or no backend here: then no layer can be 4-bit
        return 0
    inverse = getattr(getattr(bnb, "functional", None), "_convert_weight_packed_for_cpu_inverse", None)
    converted = 0

    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        module.support_avx512bf16_for_cpu = False  # read in forward where the layout exists; harmless elsewhere
        state = getattr(module.weight, "quant_state", None)
        if inverse is not None and getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = inverse(module.weight.data, state)
            module.quant_state = module.weight.quant_state
            converted += 1
    return converted


def _movable(model) -> bool:
    """Whether the trainer may move ``model`` to its device (not quantized, not already spread by a device map)."""
    return getattr(model, "quantization_method", None) is None and not getattr(model, "hf_device_map", None) \
        and hasattr(model, "device")


def _module_name(model, module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.split(".")[-1]
    raise ValueError("could not find the embedding module by name")


def wrap_with_lora(model, args: LetiConfig, new_token_ids: list[int], mode: str):
    """``model`` as a PEFT model with LoRA from the config's TRL ``ModelConfig`` fields, and the new tokens'
    rows trained as ``mode`` says (``LetiTrainer.new_token_mode``); a quantized model is prepared first."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if args.quantized:
        with third_party_deprecations_ignored():
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(args.gradient_checkpointing))
    embed_name = _module_name(model, model.get_input_embeddings())
    head = model.get_output_embeddings()
    head_name = _module_name(model, head) if head is not None else None
    extra: dict[str, Any] = {}
    if mode == "trainable_tokens":
        extra["trainable_token_indices"] = {embed_name: new_token_ids}
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        train_head = args.train_output_head if args.train_output_head is not None else not tied
        if train_head and head_name and not tied:
            # PEFT's trainable tokens cover the input rows only; TRL 1.16's fused LM head cannot read a
            # TrainableTokens head, so the head is trained whole.
            extra["modules_to_save"] = [head_name]
    elif mode == "embeddings":
        # TRL 1.16's fused LM head cannot read a tied TrainableTokens head:
        # train the whole embedding (and, when untied, the output head) instead.
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        extra["modules_to_save"] = [embed_name] + ([head_name] if head_name and not tied else [])
        extra["ensure_weight_tying"] = tied  # keep the trained embedding and the LM head one matrix
    # TRL's get_peft_config, plus the new tokens' rows (which must be given when the config is built)
    if args.lora_modules_to_save:
        extra["modules_to_save"] = list(args.lora_modules_to_save) + extra.get("modules_to_save", [])
    if args.lora_target_parameters is not None:
        extra["target_parameters"] = args.lora_target_parameters
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=args.lora_target_modules, task_type=args.lora_task_type,
                        use_rslora=args.use_rslora, use_dora=args.use_dora, bias="none", **extra)
    with third_party_deprecations_ignored():
        return get_peft_model(model, config)
