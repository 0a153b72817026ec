"""Sampling programs from a model, and pass@k evaluation with LeTI's conditioning and post-processing."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence

from leti_env import CodeTask, pass_at_k

# Where a completion is cut when post-processing (the authors' lists, matched as plain substrings).
MBPP_STOP_WORDS = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/")
HUMANEVAL_STOP_WORDS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def stop_words_for(task: CodeTask) -> tuple[str, ...]:
    if task.task_id.startswith("MBPP/"):
        return MBPP_STOP_WORDS
    if task.task_id.startswith("HumanEval/"):
        return HUMANEVAL_STOP_WORDS
    return tuple(task.metadata.get("stop_words", ()))


def postprocess_for(task: CodeTask, completion: str) -> str:
    """Post-process with the task's own rule: a stop regex (EAE) or its stop words (MBPP/HumanEval)."""
    pattern = task.metadata.get("stop_regex")
    if pattern:
        return re.split(pattern, completion, maxsplit=1)[0]
    return postprocess(completion, stop_words_for(task))


def postprocess(completion: str, stop_words: Sequence[str]) -> str:
    """Cut ``completion`` at the first stop word.

    Unlike the authors' code, the stop words are plain substrings (their MBPP regex contained an
    unescaped ``|`` and so also cut at every ``/``), and a completion without a stop word is kept whole
    (their HumanEval version returned ``""``).
    """
    cut = len(completion)
    for word in stop_words:
        index = completion.find(word)
        if index != -1:
            cut = min(cut, index)
    return completion[:cut]


def generate(model, tokenizer, prompts: Sequence[str], *, num_samples: int, max_new_tokens: int,
             temperature: float, top_p: float = 1.0, top_k: int = 0, batch_size: int = 32,
             on_batch: Callable[[int], None] | None = None, share_prompt_prefill: bool = True) -> list[list[str]]:
    """Sample ``num_samples`` completions for each prompt with transformers ``generate``.

    Prompts are left-padded and batched; completions are decoded without special tokens, after the prompt.
    ``temperature == 0`` means greedy decoding (then all samples of a prompt are the same).

    With ``share_prompt_prefill`` (and several samples per prompt) each prompt is encoded once and its
    key/value cache copied to its samples, instead of ``generate`` encoding every copy: the same
    distribution, and 1.6x the samples per second for the built-in default's ~30-token prompts (more
    for longer prompts; ``benchmarks/sampling.py``). Models whose forward pass or cache cannot do this
    fall back to plain ``generate``.
    """
    import torch

    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    kwargs = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id, "use_cache": True}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
    else:
        kwargs.update(do_sample=False)
    device = next(model.parameters()).device

    def run(encoded, copies: int, cache=None) -> None:
        inputs = {k: v.repeat_interleave(copies, dim=0) for k, v in encoded.items()}
        generated = model.generate(**inputs, **kwargs, **({"past_key_values": cache} if cache is not None else {}))
        outputs.extend(tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        if on_batch is not None:
            on_batch(len(generated))

    try:
        with torch.no_grad():
            shared = share_prompt_prefill and num_samples > 1
            step = max(1, batch_size // num_samples) if shared else max(1, batch_size)
            flat = list(prompts) if shared else [p for p in prompts for _ in range(num_samples)]
            for start in range(0, len(flat), step):
                encoded = tokenizer(flat[start:start + step], return_tensors="pt", padding=True,
                                    add_special_tokens=False).to(device)
                cache = _prompt_cache(model, encoded) if shared else None
                if cache is None:
                    run(encoded, num_samples if shared else 1)
                    continue
                chunk = min(num_samples, max(1, batch_size))  # a prompt's samples, several batches if n > batch_size
                for done in range(0, num_samples, chunk):
                    copies = min(chunk, num_samples - done)
                    piece = copy.deepcopy(cache) if done + copies < num_samples else cache
                    piece.batch_repeat_interleave(copies)
                    run(encoded, copies, piece)
    finally:
        model.train(was_training)
    return [outputs[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]


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
    cache = getattr(out, "past_key_values", None)
    return cache if hasattr(cache, "batch_repeat_interleave") else None


def pass_at_k_report(tasks: Sequence[CodeTask], completions: Sequence[Sequence[str]], ks: Sequence[int],
                     run_many: Callable[[list], list]) -> dict[str, float]:
    """pass@k over tasks, for raw completions and post-processed ones (``*/postprocessed``)."""
    report: dict[str, float] = {}
    for label, transform in (("", lambda task, c: c), ("/postprocessed", postprocess_for)):
        pairs = [(task, transform(task, c)) for task, samples in zip(tasks, completions) for c in samples]
        results = run_many(pairs)
        index = 0
        per_task = []
        for samples in completions:
            per_task.append((len(samples), sum(r.passed for r in results[index:index + len(samples)])))
            index += len(samples)
        for k in ks:
            scores = [pass_at_k(n, c, k) for n, c in per_task]
            report[f"pass@{k}{label}"] = sum(scores) / len(scores) if scores else 0.0
        report[f"sample_pass_rate{label}"] = sum(c for _, c in per_task) / max(1, sum(n for n, _ in per_task))
    return report
