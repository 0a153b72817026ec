"""A LeTI model as one plain transformers checkpoint: LoRA merged, 4-bit weights dequantized, the new
tokens' trained rows in place. ``leti export`` writes it for serving; the vLLM backend reloads it
between sampling phases. It needs no vLLM.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

EXPORT_FORMAT = "leti-merged-checkpoint-v1"


def merged_state_dict(model: Any, dtype: Any = None) -> dict[str, Any]:
    """The weights of ``model`` as a plain transformers model would name and hold them.

    Works on a PEFT model without changing it: each LoRA layer contributes base weight plus its active
    adapters' deltas, a ``trainable_token_indices`` embedding its trained rows, a ``modules_to_save``
    module its trained copy; bitsandbytes 4-bit weights are dequantized. Weights tied to another
    weight (a tied LM head) appear once, under their first name, as in ``save_pretrained``.

    Args:
        model: A transformers causal LM, or a PEFT model wrapping one.
        dtype: Cast every floating-point tensor to this dtype (``None``: keep each tensor's own dtype).

    Returns:
        CPU tensors keyed by parameter name, ready for ``save_pretrained``-style serialisation.
    """
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    merged = _Merged(dtype)
    merged.visit(root, "")
    return merged.out


class _Merged:
    """Walks a (PEFT) model's modules and collects each weight once, merged and on the CPU."""

    def __init__(self, dtype: Any):
        self.dtype = dtype
        self.out: dict[str, Any] = {}
        self.seen: set[int] = set()  # parameters already exported (tied weights)

    def put(self, name: str, tensor: Any, param: Any = None) -> None:
        if param is not None:
            if id(param) in self.seen:
                return
            self.seen.add(id(param))
        tensor = tensor.detach()
        if self.dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        self.out[name] = tensor.to("cpu")  # one tensor at a time: the merged copy never sits in GPU memory whole

    def visit(self, module: Any, prefix: str) -> None:
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper

        if isinstance(module, TrainableTokensWrapper):
            layer = module.token_adapter
            base = layer.get_base_layer()
            weight = layer.get_merged_weights(layer.active_adapters) if layer.active_adapters and not layer.merged \
                else base.weight
            self.put(prefix + "weight", weight, base.weight)
            self.base_extras(base, prefix)
        elif isinstance(module, ModulesToSaveWrapper):
            active = module.active_adapters
            self.visit(module.modules_to_save[active[0]] if active else module.original_module, prefix)
        elif isinstance(module, LoraLayer):
            self.lora_layer(module, prefix)
        else:
            for name, param in module.named_parameters(recurse=False):
                quantized = type(param).__name__ in ("Params4bit", "Int8Params")
                self.put(prefix + name, _dequantized(module) if quantized and name == "weight" else param, param)
            for name, buffer in module.named_buffers(recurse=False):
                if name not in module._non_persistent_buffers_set:
                    self.put(prefix + name, buffer)
            for name, child in module.named_children():
                self.visit(child, f"{prefix}{name}.")

    def lora_layer(self, module: Any, prefix: str) -> None:
        base = module.get_base_layer()
        if getattr(module, "use_dora", {}) and any(module.use_dora.get(a, False) for a in module.active_adapters):
            raise NotImplementedError("exporting DoRA adapters is not supported; use plain LoRA (use_dora=False).")
        base_weight = _dequantized(base).detach()
        weight = base_weight.float()  # merge in fp32, round once
        if not module.disable_adapters:
            for adapter in module.active_adapters:
                has = adapter in module.lora_A or adapter in getattr(module, "lora_embedding_A", {})
                if has and adapter not in module.merged_adapters:
                    weight = weight + module.get_delta_weight(adapter).float()
        self.put(prefix + "weight", weight.to(base_weight.dtype) if self.dtype is None else weight, base.weight)
        self.base_extras(base, prefix)

    def base_extras(self, base: Any, prefix: str) -> None:
        """A wrapped layer's other parameters (a bias), as they are."""
        for name, param in base.named_parameters(recurse=False):
            if name != "weight":
                self.put(prefix + name, param, param)


def _dequantized(module: Any):
    """A layer's weight as a plain tensor (bitsandbytes 4/8-bit dequantized), without changing the layer."""
    from peft.utils.integrations import dequantize_module_weight

    weight = module.weight
    if type(weight).__name__ == "Params4bit":
        import bitsandbytes as bnb

        data, state = weight.data, weight.quant_state
        if getattr(state, "packing_format_for_cpu", False):
            # bitsandbytes repacks 4-bit weights for its CPU kernel on first use; undo it on a copy of the state
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            data, state = _convert_weight_packed_for_cpu_inverse(data, copy.deepcopy(state))
        return bnb.functional.dequantize_4bit(data, state)
    return dequantize_module_weight(module)


def export_merged_model(model: Any, tokenizer: Any, path: str | os.PathLike, dtype: Any = None) -> Path:
    """Write ``model`` (PEFT adapters merged, 4-bit dequantized) as a transformers checkpoint at ``path``.

    The folder loads with ``AutoModelForCausalLM.from_pretrained`` and with vLLM. It is written next to
    ``path`` and moved into place, so a reader never sees half a checkpoint.

    Args:
        model: A transformers causal LM, or a PEFT model wrapping one.
        tokenizer: Saved alongside (with LeTI's added tokens), so the folder is self-contained.
        path: Destination folder (replaced).
        dtype: Weight dtype (``None``: the 4-bit compute dtype for a 4-bit model, else the model's dtype).
    """
    import torch
    from huggingface_hub import save_torch_state_dict

    path = Path(path)
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(root.config)
    quantization = getattr(config, "quantization_config", None)
    if dtype is None:
        dtype = _compute_dtype(quantization) if quantization is not None else root.dtype
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    state = merged_state_dict(model, dtype=dtype)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the exported weights are plain tensors
    config.vocab_size = root.get_input_embeddings().weight.shape[0]
    config.dtype = dtype
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_torch_state_dict(state, tmp, metadata={"format": "pt"})
    config.save_pretrained(tmp)
    if getattr(root, "generation_config", None) is not None:
        root.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "leti_export.json").write_text(json.dumps({"format": EXPORT_FORMAT, "dtype": str(dtype)}))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def _compute_dtype(quantization: Any):
    import torch

    value = quantization.get("bnb_4bit_compute_dtype") if isinstance(quantization, dict) \
        else getattr(quantization, "bnb_4bit_compute_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value.removeprefix("torch."), None)
    return value if value is not None else torch.bfloat16


