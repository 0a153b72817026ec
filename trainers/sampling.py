"""Sampling programs from a transformers model: per-sample seeds, a shared prompt prefill, and a batch
size that halves itself when the accelerator runs out of memory.

Why per-sample seeds: transformers' sampler draws every token from torch's global generator, so what a
sample becomes depends on which other sequences share its batch. Then a smaller batch (after an
out-of-memory error, on another GPU, or with another ``generation_batch_size``) or another number of
processes samples other programs. Here each token of each sample is drawn from its own uniform number,
a hash of ``(seed, prompt id, sample index, step)``: the same programs whatever the batching.
"""

from __future__ import annotations

import gc
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

_M32 = 0xFFFFFFFF
# transformers' neutral values of the sampling filters a model's generation_config may set: greedy search
# over KeyedSampler's scores then neither inherits them nor warns that they are ignored.
_NEUTRAL_SAMPLING_FLAGS = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "typical_p": 1.0, "epsilon_cutoff": 0.0,
                           "eta_cutoff": 0.0}


@dataclass(frozen=True)
class SamplingParams:
    """How many programs to draw per prompt, and how (``temperature == 0``: greedy)."""

    num_samples: int
    max_new_tokens: int
    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    guidance_weight: float = 0.0  # reward-token guidance (``generate``): 0 is off


@runtime_checkable
class Sampler(Protocol):
    """What the LeTI loop needs from a generation backend: completions from the *current* weights.

    ``TransformersSampler`` (``generate`` below) and ``trainers.vllm_backend.VLLMSampler`` implement it.
    Both key each sample's randomness by ``(seed, prompt id, sample index)``, so a prompt draws the same
    programs whatever share of the prompts a process samples; ``prompt_ids`` give the prompts' indices
    in the caller's whole list.
    """

    def generate(self, model: Any, tokenizer: Any, prompts: Sequence[str], params: SamplingParams, *, seed: int,
                 prompt_ids: Sequence[int] | None = None, on_batch: Callable[[int], None] | None = None,
                 negative_prompts: Sequence[str] | None = None) -> list[list[str]]:
        """``params.num_samples`` completions per prompt (text after the prompt, special tokens skipped).
        ``negative_prompts``: the guidance's other condition, one per prompt (``params.guidance_weight``)."""

    def weights_changed(self) -> None:
        """The model's weights changed since the last call (a backend holding a copy reloads it)."""

    def sleep(self) -> None:
        """Training starts: give back accelerator memory held for sampling."""

    def close(self) -> None:
        """Release everything (engines, processes); the sampler is not used again."""


class TransformersSampler:
    """``Sampler`` over transformers ``generate`` (``generate`` below): any causal LM, any device.

    Args:
        batch_size: Sequences per ``generate`` call (halved on out-of-memory, with the same samples).
        share_prompt_prefill: Encode each prompt once and copy its cache to its samples.
    """

    def __init__(self, batch_size: int = 32, share_prompt_prefill: bool = True):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}")
        self.batch_size, self.share_prompt_prefill = batch_size, share_prompt_prefill

    def generate(self, model: Any, tokenizer: Any, prompts: Sequence[str], params: SamplingParams, *, seed: int,
                 prompt_ids: Sequence[int] | None = None, on_batch: Callable[[int], None] | None = None,
                 negative_prompts: Sequence[str] | None = None) -> list[list[str]]:
        return generate(model, tokenizer, prompts, num_samples=params.num_samples,
                        max_new_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                        top_k=params.top_k, batch_size=self.batch_size, on_batch=on_batch,
                        share_prompt_prefill=self.share_prompt_prefill, seed=seed, prompt_ids=prompt_ids,
                        negative_prompts=negative_prompts, guidance_weight=params.guidance_weight)

    def weights_changed(self) -> None:  # it samples from the model object itself
        pass

    def sleep(self) -> None:
        pass

    def close(self) -> None:
        pass


def generate(model, tokenizer, prompts: Sequence[str], *, num_samples: int, max_new_tokens: int,
             temperature: float, top_p: float = 1.0, top_k: int = 0, batch_size: int = 32,
             on_batch: Callable[[int], None] | None = None, share_prompt_prefill: bool = True,
             seed: int | None = None, prompt_ids: Sequence[int] | None = None,
             preallocate_cache: bool = True, negative_prompts: Sequence[str] | None = None,
             guidance_weight: float = 0.0) -> list[list[str]]:
    """Sample ``num_samples`` completions for each prompt with transformers ``generate``.

    Prompts are left-padded and batched, up to ``batch_size`` sequences per ``generate`` call; completions
    are decoded without special tokens, after the prompt. ``temperature == 0`` means greedy decoding (then
    all samples of a prompt are the same).

    Sampling applies ``temperature``, then ``top_k`` (0: off), then ``top_p``, as transformers does, and
    draws each token by inverse transform from a uniform number keyed by ``(seed, prompt_ids[i], sample
    index, step)``. So a sample does not depend on its batch: ``batch_size``, ``share_prompt_prefill``
    and the split of the prompts across processes leave the programs unchanged (up to float rounding
    between batch shapes, which moves a draw only when it falls within ~1e-7 of a token boundary).
    ``seed=None`` draws the seed from torch's global generator, so ``torch.manual_seed`` still decides
    the samples and two calls differ. ``prompt_ids`` (default ``0..len(prompts)-1``) name the prompts in
    the caller's numbering; give the global index when a process samples a share of the prompts. Other
    sampling filters in the model's ``generation_config`` (``min_p``, ``typical_p``, ...) are not
    applied; repetition penalties and the like are.

    If a batch raises ``torch.OutOfMemoryError``, it is retried in halves and later batches are no larger:
    the same samples, a logged warning, and no lost work. Only a single sequence that does not fit raises.

    With ``share_prompt_prefill`` (and several samples per prompt) each prompt is encoded once and its
    key/value cache copied to its samples, instead of ``generate`` encoding every copy: the same
    samples, and 1.6x the samples per second for the built-in default's ~30-token prompts (more for
    longer prompts; ``benchmarks/sampling.py``). Models whose forward pass or cache cannot do this fall
    back to plain ``generate``. With the shared prefill, ``preallocate_cache`` writes each step's keys and
    values into a cache allocated once for the whole completion (transformers' ``StaticCache``), where a
    growing cache allocates and copies itself at every step: the same samples, in about two thirds of the
    time in ``leti train``'s built-in default (whose sampling that copying dominated; ``benchmarks/sampling.py``
    compares both). Layers a static cache cannot hold keep the growing one.

    ``guidance_weight > 0`` guides each step by ``negative_prompts`` (one per prompt): the scores become
    ``log p(·|prompt) + w · (log p(·|prompt) − log p(·|negative prompt))`` before sampling, the negative
    prompt continued with the same tokens (``ContrastiveGuidance``). For LeTI the prompt carries the good
    token and the negative one the bad token: classifier-free guidance on LeTI's own condition. Each step
    then runs the model twice.
    """
    import torch

    if prompt_ids is None:
        prompt_ids = range(len(prompts))
    if len(prompt_ids) != len(prompts):
        raise ValueError(f"prompt_ids has {len(prompt_ids)} ids for {len(prompts)} prompts; give one id per prompt.")
    if guidance_weight < 0:
        raise ValueError(f"`guidance_weight` must be >= 0 (0: off), got {guidance_weight}")
    if guidance_weight > 0 and (negative_prompts is None or len(negative_prompts) != len(prompts)):
        raise ValueError("guidance needs one negative prompt per prompt (`negative_prompts`)")
    if seed is None and temperature > 0:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    call = _GenerateCall(model, tokenizer, prompts, prompt_ids, seed, temperature, top_p, top_k, max_new_tokens,
                         shared=share_prompt_prefill and num_samples > 1, preallocate=preallocate_cache,
                         negative_prompts=negative_prompts if guidance_weight > 0 else None,
                         guidance_weight=guidance_weight)
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    try:
        with torch.no_grad():
            _run_batches(_plan(len(prompts), num_samples, max(1, batch_size)), call, max(1, batch_size), on_batch)
    finally:
        model.train(was_training)
    return [[call.texts[p, s] for s in range(num_samples)] for p in range(len(prompts))]


class _GenerateCall:
    """One ``generate`` call per batch of (prompt, sample) rows; the decoded texts collect in ``texts``."""

    def __init__(self, model, tokenizer, prompts, prompt_ids, seed, temperature, top_p, top_k, max_new_tokens,
                 shared: bool, preallocate: bool = True, negative_prompts=None, guidance_weight: float = 0.0):
        self.model, self.tokenizer, self.prompts, self.prompt_ids, self.seed = model, tokenizer, prompts, prompt_ids, seed
        self.negative_prompts, self.guidance_weight = negative_prompts, guidance_weight
        self.temperature, self.top_p, self.top_k, self.shared = temperature, top_p, top_k, shared
        self.max_new_tokens, self.preallocate = max_new_tokens, preallocate
        self.device = next(model.parameters()).device
        # Greedy search over scores whose maximum is the sampled token: transformers' own sampler (and its
        # global generator) never runs, and no sampling flag of the model's generation_config is inherited.
        self.kwargs = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id, "use_cache": True,
                       "do_sample": False, **_NEUTRAL_SAMPLING_FLAGS}
        self.texts: dict[tuple[int, int], str] = {}

    def __call__(self, batch: _Batch) -> int:
        from transformers import LogitsProcessorList

        encoded = self.tokenizer([self.prompts[i] for i in batch.prompts], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
        copies = len(batch.samples)
        cache = _prompt_cache(self.model, encoded) if self.shared else None
        if cache is not None and self.preallocate:
            cache = _preallocated(self.model, cache, copies, encoded["input_ids"].shape[1] + self.max_new_tokens)
        elif cache is not None:
            cache.batch_repeat_interleave(copies)
        inputs = {k: v.repeat_interleave(copies, dim=0) for k, v in encoded.items()}
        rows = [(p, s) for p in batch.prompts for s in batch.samples]
        extra: dict[str, Any] = {} if cache is None else {"cache": cache}
        processors = []
        if self.negative_prompts is not None:
            negative = self.tokenizer([self.negative_prompts[i] for i in batch.prompts], return_tensors="pt",
                                      padding=True, add_special_tokens=False).to(self.device)
            processors.append(ContrastiveGuidance(self.model, negative["input_ids"].repeat_interleave(copies, dim=0),
                                                  negative["attention_mask"].repeat_interleave(copies, dim=0),
                                                  self.guidance_weight))
        if self.temperature > 0:
            keys = [(_prompt_key(self.seed, self.prompt_ids[p]), s) for p, s in rows]
            processors.append(KeyedSampler(keys, self.temperature, self.top_p, self.top_k))
        if processors:
            extra["logits_processor"] = LogitsProcessorList(processors)
        generated = self.model.generate(**inputs, **self.kwargs, **extra)
        decoded = self.tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        self.texts.update(zip(rows, decoded))
        return len(rows)


def _run_batches(plan: list[_Batch], run: Callable[[_Batch], int], batch_size: int,
                 on_batch: Callable[[int], None] | None) -> None:
    """Run every batch of ``plan``; on out-of-memory, retry the batch in halves and keep later ones as small."""
    import torch

    queue = deque(plan)
    limit = batch_size
    while queue:
        batch = queue.popleft()
        if batch.rows > limit:
            queue.extendleft(reversed(batch.split()))
            continue
        try:
            done = run(batch)
        except torch.OutOfMemoryError:
            if batch.rows == 1:
                raise
            done = 0
        if done:
            if on_batch is not None:
                on_batch(done)
            continue
        limit = batch.rows // 2  # outside the except block, so the failed call's tensors are freed
        _release_memory(torch)
        logger.warning("Out of memory sampling %d sequences at once; retrying with %d (set "
                       "generation_batch_size to at most %d to skip the retries).", batch.rows, limit, limit)
        queue.appendleft(batch)


class KeyedSampler:
    """A logits processor that turns greedy search into sampling with per-sequence random numbers.

    For each sequence it applies temperature, top-k and top-p (transformers' warpers, in transformers'
    order), then picks the token whose cumulative probability first exceeds ``u``, a uniform number
    hashed from the sequence's key and the step. It returns scores that are ``0`` at that token and
    ``-inf`` elsewhere, so greedy search takes it: exact sampling from the filtered distribution.

    Args:
        keys: One ``(prompt_key, sample_index)`` pair per row of the batch, each a 32-bit integer.
        temperature, top_p, top_k: As in ``generate`` (``top_k=0`` and ``top_p=1`` are off).
    """

    def __init__(self, keys: Sequence[tuple[int, int]], temperature: float, top_p: float = 1.0, top_k: int = 0):
        from transformers import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                  TopPLogitsWarper)

        if temperature <= 0:
            raise ValueError(f"KeyedSampler samples; temperature must be > 0, got {temperature} (0 is greedy search).")
        self.keys = keys
        warpers = [] if temperature == 1.0 else [TemperatureLogitsWarper(temperature)]
        if top_k > 0:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warpers = LogitsProcessorList(warpers)
        self._start: int | None = None
        self._rows = None

    def __call__(self, input_ids, scores):
        import torch

        if self._start is None:  # the prompt's length (padding included) is the same at every step
            self._start = input_ids.shape[1]
            self._rows = torch.tensor(self.keys, dtype=torch.int64, device=scores.device)
        step = input_ids.shape[1] - self._start
        u = uniform(self._rows[:, 0], self._rows[:, 1], step)
        probs = torch.softmax(self.warpers(input_ids, scores).to(torch.float64), dim=-1)
        cdf = probs.cumsum(-1)
        token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).clamp_(max=scores.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, token, 0.0)


class ContrastiveGuidance:
    """A logits processor: ``log p(·|x) + w · (log p(·|x) − log p(·|x'))``, classifier-free guidance of the
    prompt ``x`` against a negative prompt ``x'`` continued with the same tokens.

    LeTI trains ``<|good|>`` and ``<|bad|>`` as conditions; guiding the good condition away from the bad one
    at sampling pushes what separates them (``LetiConfig.guidance_weight``). The negative stream keeps its
    own key/value cache; its positions count real tokens only, as ``generate`` counts the main stream's for
    left-padded prompts. ``w = 0`` gives the unguided distribution.

    Args:
        model: The model both streams run on.
        input_ids, attention_mask: The negative prompts, one row per sequence of the batch (left-padded).
        weight: ``w``.
    """

    def __init__(self, model, input_ids, attention_mask, weight: float):
        self.model, self.weight = model, float(weight)
        self.pending_ids, self.mask = input_ids, attention_mask
        self.cache = None
        self.cache_argument = _cache_argument(model)  # read once: inspect.signature costs more than a decode step

    def __call__(self, input_ids, scores):
        import torch

        if self.cache is None:
            ids = self.pending_ids
            positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        else:  # the token the main stream just took
            ids = input_ids[:, -1:]
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
            positions = self.mask.sum(-1, keepdim=True) - 1
        out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **({} if self.cache is None else {self.cache_argument: self.cache}))
        self.cache = out.get("cache") if hasattr(out, "get") and out.get("cache") is not None else out.past_key_values
        negative = torch.log_softmax(out.logits[:, -1, : scores.shape[-1]].float(), dim=-1)
        positive = torch.log_softmax(scores.float(), dim=-1)
        return (positive + self.weight * (positive - negative)).to(scores.dtype)


def _cache_argument(model) -> str:
    """The forward's name for the key/value cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the wrapped model's
    forward = getattr(base, "forward", None)
    try:
        return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
    except (TypeError, ValueError):
        return "past_key_values"


def uniform(prompt_keys, sample_indices, step: int):
    """Uniform numbers in (0, 1), float64, one per row: a hash of (prompt key, sample index, step).

    Integer tensors of values below 2**32; the arithmetic stays below 2**63, so no int64 overflows.
    """
    import torch

    h = _fmix32(prompt_keys ^ _fmix32(_mul32(sample_indices & _M32, 0x9E3779B1) ^ (step & _M32)))
    h = _fmix32(h ^ 0x5BD1E995)  # a second round: low-entropy keys still give well-mixed numbers
    return (h.to(torch.float64) + 0.5) / 2.0**32


def _mul32(x, c: int):
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` in two 16-bit halves of ``c``, without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _fmix32(h):
    """MurmurHash3's 32-bit finalizer: each input bit flips each output bit with probability ~1/2."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _prompt_key(seed: int, prompt_id: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{prompt_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class _Batch:
    """Some prompts (indices), each with the same range of sample indices: one ``generate`` call."""

    prompts: tuple[int, ...]
    samples: range

    @property
    def rows(self) -> int:
        return len(self.prompts) * len(self.samples)

    def split(self) -> list[_Batch]:
        """Two halves: of the prompts if there are several, else of the samples."""
        if len(self.prompts) > 1:
            half = len(self.prompts) // 2
            return [_Batch(self.prompts[:half], self.samples), _Batch(self.prompts[half:], self.samples)]
        half = len(self.samples) // 2
        return [_Batch(self.prompts, self.samples[:half]), _Batch(self.prompts, self.samples[half:])]


def _plan(num_prompts: int, num_samples: int, batch_size: int) -> list[_Batch]:
    """Whole prompts per call while they fit; a prompt's samples over several calls when they do not."""
    per_call = max(1, batch_size // num_samples)
    chunk = min(num_samples, batch_size)
    return [_Batch(tuple(range(start, min(start + per_call, num_prompts))), range(done, min(done + chunk, num_samples)))
            for start in range(0, num_prompts, per_call) for done in range(0, num_samples, chunk)]


def _release_memory(torch) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _preallocated(model, cache, copies: int, length: int):
    """``cache`` repeated for each of its prompt's ``copies`` samples, in a cache that holds ``length`` tokens.

    Why: a ``DynamicCache`` grows by concatenation, so every decoding step copies the whole cache; for the
    built-in default's small model that copying was over half of sampling's time. A ``StaticCache`` is
    written in place. Models whose layers a static cache cannot hold (sliding windows, linear attention)
    keep the dynamic cache.
    """
    from transformers import StaticCache
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers) or not hasattr(model, "config"):
        cache.batch_repeat_interleave(copies)
        return cache
    try:
        static = StaticCache(config=model.config, max_cache_len=length)
    except (ValueError, KeyError, TypeError, AttributeError):
        cache.batch_repeat_interleave(copies)
        return cache
    if len(static.layers) != len(layers):
        cache.batch_repeat_interleave(copies)
        return cache
    for target, layer in zip(static.layers, layers):
        target.update(layer.keys.repeat_interleave(copies, dim=0), layer.values.repeat_interleave(copies, dim=0))
    return static


def _prompt_cache(model, encoded):
    """The key/value cache of every prompt token but the last (which ``generate`` then feeds), or ``None``.

    Position ids count real tokens only, as ``generate`` counts them for left-padded prompts, so the cached
    prefix is exactly the one ``generate`` would have computed.
    """
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if ids.shape[1] < 2:
        return None
    prefix = mask[:, :-1]
    try:
        out = model(input_ids=ids[:, :-1], attention_mask=prefix, position_ids=(prefix.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True, logits_to_keep=1)
    except TypeError:  # a forward without position ids or logits_to_keep
        return None
    cache = out.get("cache") if hasattr(out, "get") else None
    if cache is None:  # a model (remote code) whose output still names it the old way
        cache = getattr(out, "past_key_values", None)
    return cache if hasattr(cache, "batch_repeat_interleave") else None
