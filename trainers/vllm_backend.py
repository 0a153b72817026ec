"""vLLM rollouts for the LeTI loop, and the merged-checkpoint export they are built on.

LeTI alternates sampling and training on one GPU, never both at once, so one vLLM engine shares the
trainer's GPU ("colocated"; vLLM runs its engine core in a child process it spawns, so a script that
builds the trainer needs an ``if __name__ == "__main__":`` guard) and sleeps while the trainer trains.
Before each sampling phase whose weights changed, the trainer's model is written out as a plain
transformers checkpoint (LoRA merged, 4-bit base dequantized, the new tokens' trained rows in place) and
vLLM reloads it in place.

Why a checkpoint on disk rather than streaming tensors into vLLM's worker (TRL's GRPO does the latter):
the checkpoint is the one interface every vLLM version loads, it crosses vLLM's worker-process boundary
as a path, it covers LeTI's resized vocabulary (vLLM's LoRA path cannot add tokens), and it never
modifies the training model (PEFT's ``merge_adapter``/``unmerge_adapter`` round trip re-quantizes a
4-bit base and drifts a bf16 one). The cost is one write of the model per iteration.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXPORT_FORMAT = "leti-merged-checkpoint-v1"
GREEDY_BELOW = 1e-5  # vLLM samples greedily below this temperature (its _SAMPLING_EPS)
SEQUENCES_PER_CALL = 8192  # sequences per `LLM.generate` call (the progress bar advances between calls)


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
    import torch

    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper

    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()  # parameters already exported (tied weights)

    def put(name: str, tensor: torch.Tensor, param: Any = None) -> None:
        key = id(param) if param is not None else None
        if key is not None and key in seen:
            return
        if key is not None:
            seen.add(key)
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[name] = tensor.to("cpu")  # one tensor at a time: the merged copy never sits in GPU memory whole

    def own_tensors(module: torch.nn.Module, prefix: str) -> None:
        for name, param in module.named_parameters(recurse=False):
            quantized = type(param).__name__ in ("Params4bit", "Int8Params")
            put(prefix + name, _dequantized(module) if quantized and name == "weight" else param, param)
        for name, buffer in module.named_buffers(recurse=False):
            if name not in module._non_persistent_buffers_set:
                put(prefix + name, buffer)

    def visit(module: torch.nn.Module, prefix: str) -> None:
        if isinstance(module, TrainableTokensWrapper):
            layer = module.token_adapter
            base = layer.get_base_layer()
            weight = layer.get_merged_weights(layer.active_adapters) if layer.active_adapters and not layer.merged \
                else base.weight
            put(prefix + "weight", weight, base.weight)
            for name, param in base.named_parameters(recurse=False):
                if name != "weight":
                    put(prefix + name, param, param)
            return
        if isinstance(module, ModulesToSaveWrapper):
            active = module.active_adapters
            visit(module.modules_to_save[active[0]] if active else module.original_module, prefix)
            return
        if isinstance(module, LoraLayer):
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
            put(prefix + "weight", weight.to(base_weight.dtype) if dtype is None else weight, base.weight)
            for name, param in base.named_parameters(recurse=False):
                if name != "weight":
                    put(prefix + name, param, param)
            return
        own_tensors(module, prefix)
        for name, child in module.named_children():
            visit(child, f"{prefix}{name}.")

    visit(root, "")
    return out


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


def check_vllm_usable() -> None:
    """Fail early, with the fix, where vLLM rollouts cannot run (called before any sampling)."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError("generation_backend='vllm' needs vLLM: `pip install \"vllm>=0.22,<0.32\"` (or leti's "
                          "`[vllm]` extra) on a CUDA machine, or use generation_backend='hf'.")
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("generation_backend='vllm' needs a CUDA GPU, and none is visible. "
                           "Use generation_backend='hf' on this machine.")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("generation_backend='vllm' runs one colocated engine in a single process; under a "
                           "multi-process launch use generation_backend='hf'.")


class VLLMSampler:
    """A colocated vLLM engine that samples LeTI rollouts from the trainer's current weights.

    The engine is created on first use from an exported checkpoint (``export_dir``), reloaded in place
    from a fresh export whenever the weights changed (``weights_version``), and put to sleep between
    sampling phases so training gets the GPU memory back.

    Args:
        export_dir: Where the merged checkpoint is written (one folder, rewritten per weights version).
        seed: Base seed; each prompt of each call gets its own seed derived from it and ``call_seed``.
        gpu_memory_utilization: Share of GPU memory vLLM may take for weights and KV cache while awake.
        max_model_len: Prompt + completion tokens vLLM plans for (``None``: the model's maximum).
        enable_sleep_mode: Release vLLM's GPU memory while the trainer trains.
        dtype: Weights and compute dtype of the export and the engine (``"auto"``: the export keeps the
            model's dtype, or a 4-bit model's compute dtype, and vLLM picks its own from that).
        engine_kwargs: Further ``vllm.LLM`` arguments (e.g. ``{"enforce_eager": True}``).
    """

    def __init__(self, export_dir: str | os.PathLike, *, seed: int = 0, gpu_memory_utilization: float = 0.5,
                 max_model_len: int | None = None, enable_sleep_mode: bool = True, dtype: str = "auto",
                 engine_kwargs: dict | None = None):
        self.export_dir = Path(export_dir)
        self.seed = seed
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.enable_sleep_mode = enable_sleep_mode
        self.dtype = dtype
        self.engine_kwargs = dict(engine_kwargs or {})
        self.llm: Any = None
        self._loaded_version: int | None = None
        self._asleep = False

    def generate(self, model: Any, tokenizer: Any, prompts: Sequence[str], *, weights_version: int,
                 num_samples: int, max_new_tokens: int, temperature: float, top_p: float = 1.0, top_k: int = 0,
                 call_seed: int = 0, prompt_ids: Sequence[int] | None = None,
                 on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        """Sample ``num_samples`` completions per prompt, as ``sampling.generate`` does with transformers.

        Each prompt's seed comes from ``seed``, ``call_seed`` and its id in ``prompt_ids`` (default: its
        position), so a process that samples a share of the prompts draws what one process would.

        Completions are decoded with ``tokenizer`` (special tokens skipped), after the prompt's tokens, so
        both backends hand the executor the same kind of text. ``temperature == 0`` is greedy.
        """
        from vllm import SamplingParams

        self._load(model, tokenizer, weights_version)
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        greedy = temperature < GREEDY_BELOW  # vLLM refuses n > 1 when greedy: sample once, then copy
        params = [SamplingParams(n=1 if greedy else num_samples, temperature=0.0 if greedy else temperature,
                                 top_p=1.0 if greedy else top_p, top_k=0 if greedy else top_k,
                                 max_tokens=max_new_tokens, seed=_prompt_seed(self.seed, call_seed, i),
                                 detokenize=False)
                  for i in (range(len(ids)) if prompt_ids is None else prompt_ids)]
        completions: list[list[str]] = []
        step = max(1, SEQUENCES_PER_CALL // num_samples)  # prompts per call: enough for vLLM's batching
        for start in range(0, len(ids), step):
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in ids[start:start + step]],
                                        params[start:start + step], use_tqdm=False)
            completions.extend(self._decode(outputs, tokenizer, num_samples, greedy, on_batch))
        return completions

    @staticmethod
    def _decode(outputs, tokenizer, num_samples: int, greedy: bool, on_batch) -> list[list[str]]:
        completions = []
        for output in outputs:
            samples = [tokenizer.decode(list(o.token_ids), skip_special_tokens=True) for o in output.outputs]
            if greedy and len(samples) == 1:
                samples *= num_samples
            if len(samples) != num_samples:
                raise RuntimeError(f"vLLM returned {len(samples)} samples for a prompt, expected {num_samples}.")
            completions.append(samples)
            if on_batch is not None:
                on_batch(num_samples)
        return completions

    def sleep(self) -> None:
        """Give the GPU memory back to training (weights are reloaded from the next export anyway)."""
        if self.llm is not None and self.enable_sleep_mode and not self._asleep:
            self.llm.sleep(level=2)
            self._asleep = True

    def close(self) -> None:
        """Shut the engine (and its engine-core process) down and free its memory."""
        if self.llm is not None:
            core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
            if hasattr(core, "shutdown"):
                core.shutdown()
        self.llm = None
        self._loaded_version = None
        _free_gpu_cache()

    def _load(self, model: Any, tokenizer: Any, version: int) -> None:
        # vLLM's engine process can only take GPU memory this process's allocator has given back
        _free_gpu_cache()
        stale = self._loaded_version != version
        if stale:
            export_merged_model(model, tokenizer, self.export_dir,
                                dtype=None if self.dtype == "auto" else self.dtype)
        if self.llm is None:
            from vllm import LLM

            kwargs = {"gpu_memory_utilization": self.gpu_memory_utilization, "seed": self.seed,
                      "enable_sleep_mode": self.enable_sleep_mode, "dtype": self.dtype, **self.engine_kwargs}
            if self.max_model_len is not None:
                kwargs["max_model_len"] = self.max_model_len
            self.llm = LLM(model=str(self.export_dir), tokenizer=str(self.export_dir), **kwargs)
        elif stale or self._asleep:  # new weights, or level-2 sleep discarded the old ones
            if self._asleep:
                self.llm.wake_up()
                self._asleep = False
            self._reload()
        self._loaded_version = version

    def _reload(self) -> None:
        # No arguments: the export is always written to the folder the engine was built from, and V1
        # workers' `reload_weights(self)` takes none (a `weights_path` keyword fails there).
        self.llm.collective_rpc("reload_weights")
        self.llm.reset_prefix_cache()


def _free_gpu_cache() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _prompt_seed(base: int, call: int, index: int) -> int:
    """Distinct, reproducible seeds per (run seed, call, prompt): resumed iterations sample the same programs."""
    return (base * 1_000_003 + call * 10_007 + index) % (2**31 - 1)
