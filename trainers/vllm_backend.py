"""vLLM rollouts for the LeTI loop, built on the merged-checkpoint export (``trainers/export.py``).

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

import gc
import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .export import export_merged_model
from .sampling import SamplingParams

GREEDY_BELOW = 1e-5  # vLLM samples greedily below this temperature (its _SAMPLING_EPS)
SEQUENCES_PER_CALL = 8192  # sequences per `LLM.generate` call (the progress bar advances between calls)


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

    A ``trainers.sampling.Sampler``. The engine is created on first use from an exported checkpoint
    (``export_dir``), reloaded in place from a fresh export after ``weights_changed()``, and put to
    sleep between sampling phases so training gets the GPU memory back.

    Args:
        export_dir: Where the merged checkpoint is written (one folder, rewritten per weights version).
        seed: The engine's seed (each prompt's draws are seeded by ``generate``'s ``seed`` and its id).
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
        self._weights_version = 0  # bumped by weights_changed(); the export is rewritten when it moves
        self._loaded_version: int | None = None
        self._asleep = False

    def weights_changed(self) -> None:
        """The trainer's weights changed: the next ``generate`` exports and reloads them."""
        self._weights_version += 1

    def generate(self, model: Any, tokenizer: Any, prompts: Sequence[str], params: SamplingParams, *, seed: int,
                 prompt_ids: Sequence[int] | None = None, on_batch: Callable[[int], None] | None = None,
                 negative_prompts: Sequence[str] | None = None) -> list[list[str]]:
        """Sample ``params.num_samples`` completions per prompt, as ``TransformersSampler`` does.

        Each prompt's vLLM seed comes from ``seed`` and its id in ``prompt_ids`` (default: its position),
        so a process that samples a share of the prompts draws what one process would.

        Completions are decoded with ``tokenizer`` (special tokens skipped), after the prompt's tokens, so
        both backends hand the executor the same kind of text. ``temperature == 0`` is greedy.
        """
        if params.guidance_weight > 0:
            raise ValueError("reward-token guidance (guidance_weight > 0) needs the transformers backend "
                             "(generation_backend='hf'): vLLM samples each sequence alone")
        from vllm import SamplingParams as VLLMParams

        self._load(model, tokenizer, self._weights_version)
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        num_samples = params.num_samples
        greedy = params.temperature < GREEDY_BELOW  # vLLM refuses n > 1 when greedy: sample once, then copy
        params = [VLLMParams(n=1 if greedy else num_samples, temperature=0.0 if greedy else params.temperature,
                             top_p=1.0 if greedy else params.top_p, top_k=0 if greedy else params.top_k,
                             max_tokens=params.max_new_tokens, seed=_prompt_seed(seed, i), detokenize=False)
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


def _prompt_seed(seed: int, index: int) -> int:
    """Distinct, reproducible seeds per (call seed, prompt): resumed iterations sample the same programs."""
    return (seed + index) % (2**31 - 1)
