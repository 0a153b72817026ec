"""Sampling with a shared prompt prefill gives what plain ``generate`` gives."""

from __future__ import annotations

import pytest

PROMPTS = ["def add(a, b):\n", '"""Return the largest of three numbers."""\ndef largest(a, b, c):\n', "x"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("batch_size", [64, 4, 2])  # several prompts per call; one; one prompt's samples split
def test_shared_prefill_matches_plain_generate_greedy(model_and_tokenizer, batch_size):
    from trainers.sampling import generate

    model, tokenizer = model_and_tokenizer
    kwargs = dict(num_samples=3, max_new_tokens=12, temperature=0.0, batch_size=batch_size)
    plain = generate(model, tokenizer, PROMPTS, share_prompt_prefill=False, **kwargs)
    shared = generate(model, tokenizer, PROMPTS, share_prompt_prefill=True, **kwargs)
    assert shared == plain
    assert [len(s) for s in shared] == [3, 3, 3]
    assert any(c.strip() for s in shared for c in s)  # the random model does write something


def test_shared_prefill_through_peft_and_sampling(model_and_tokenizer, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainers.sampling import _prompt_cache, generate

    _, tokenizer = model_and_tokenizer
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    encoded = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, add_special_tokens=False)
    assert _prompt_cache(model, encoded) is not None  # the shared path is really taken through PEFT
    greedy = dict(num_samples=2, max_new_tokens=10, temperature=0.0, batch_size=8)
    assert generate(model, tokenizer, PROMPTS, share_prompt_prefill=True, **greedy) == \
        generate(model, tokenizer, PROMPTS, share_prompt_prefill=False, **greedy)
    torch.manual_seed(0)
    sampled = generate(model, tokenizer, PROMPTS[:2], num_samples=16, max_new_tokens=10, temperature=1.0, batch_size=8)
    assert [len(s) for s in sampled] == [16, 16]
    assert len(set(sampled[0])) > 1  # copies of one prompt's cache still sample independently
    assert model.training  # the caller's mode is restored


def test_one_token_prompts_fall_back_to_plain_generate(model_and_tokenizer):
    from trainers.sampling import _prompt_cache, generate

    model, tokenizer = model_and_tokenizer
    encoded = tokenizer(["x", "y"], return_tensors="pt", padding=True, add_special_tokens=False)
    assert encoded["input_ids"].shape[1] == 1 and _prompt_cache(model, encoded) is None
    out = generate(model, tokenizer, ["x", "y"], num_samples=2, max_new_tokens=5, temperature=0.0, batch_size=8)
    assert [len(s) for s in out] == [2, 2]


def test_prompt_cache_counts_positions_like_generate(model_and_tokenizer):
    """The next-token logits from the cached prefix equal a full forward with generate's position ids."""
    import torch

    from trainers.sampling import _prompt_cache

    model, tokenizer = model_and_tokenizer
    encoded = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    assert (mask == 0).any()  # left padding is present, so positions matter
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
        cache = _prompt_cache(model, encoded)
        last = model(input_ids=ids[:, -1:], attention_mask=mask, cache=cache,
                     position_ids=(mask.sum(-1, keepdim=True) - 1)).logits[:, -1]
    torch.testing.assert_close(last, full, atol=1e-4, rtol=1e-4)


def test_samples_do_not_depend_on_batching(model_and_tokenizer):
    """Each token of each sample is drawn from its own keyed uniform number: the batch size, the shared
    prefill and a split of the prompts (with their global ids) leave every sample unchanged."""
    import torch

    from trainers.sampling import generate

    model, tokenizer = model_and_tokenizer
    kwargs = dict(num_samples=5, max_new_tokens=12, temperature=1.0, seed=3)
    reference = generate(model, tokenizer, PROMPTS, batch_size=64, **kwargs)
    assert len(set(reference[1])) > 1  # really sampled
    for batch_size, share in ((64, False), (4, True), (2, True), (1, False)):
        assert generate(model, tokenizer, PROMPTS, batch_size=batch_size, share_prompt_prefill=share,
                        **kwargs) == reference, (batch_size, share)
    # a process that samples prompts 1 and 2 of the list, named by their ids there
    assert generate(model, tokenizer, PROMPTS[1:], prompt_ids=[1, 2], batch_size=3, **kwargs) == reference[1:]
    assert generate(model, tokenizer, PROMPTS, batch_size=64, **{**kwargs, "seed": 4}) != reference
    # without a seed, torch's global generator picks one: reproducible with manual_seed, fresh otherwise
    torch.manual_seed(0)
    first = generate(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=8, temperature=1.0, seed=None)
    again = generate(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=8, temperature=1.0, seed=None)
    torch.manual_seed(0)
    assert generate(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=8, temperature=1.0, seed=None) == first
    assert again != first


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.5, 3, 0.9), (2.0, 2, 1.0)])
def test_keyed_sampler_draws_from_the_filtered_distribution(temperature, top_k, top_p):
    """40,000 keyed draws from one set of logits match transformers' filtered distribution."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from trainers.sampling import KeyedSampler

    n = 40_000
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                                  + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
    expected = torch.softmax(warpers(torch.zeros(1, 1, dtype=torch.long), logits.clone()), -1)[0]
    sampler = KeyedSampler([(12345, i) for i in range(n)], temperature, top_p=top_p, top_k=top_k)
    scores = sampler(torch.zeros(n, 3, dtype=torch.long), logits.repeat(n, 1))
    assert ((scores == 0).sum(-1) == 1).all() and torch.isinf(scores).sum() == n * 4  # one token per row
    frequencies = torch.bincount(scores.argmax(-1), minlength=5).double() / n
    assert (frequencies[expected == 0] == 0).all()  # filtered tokens are never drawn
    torch.testing.assert_close(frequencies, expected.double(), atol=0.01, rtol=0)
    # the next step draws anew: a different token for a sizeable share of rows
    later = sampler(torch.zeros(n, 4, dtype=torch.long), logits.repeat(n, 1)).argmax(-1)
    assert (later != scores.argmax(-1)).float().mean() > 0.2


def test_out_of_memory_halves_the_batch_and_keeps_the_samples(model_and_tokenizer, monkeypatch, caplog):
    """A generate call of more than 4 sequences runs out of memory: the calls are retried in halves,
    later calls are no larger, and the samples are those of a run without the fault."""
    import torch

    from trainers.sampling import generate

    model, tokenizer = model_and_tokenizer
    kwargs = dict(num_samples=3, max_new_tokens=10, temperature=1.0, seed=11, batch_size=64)
    expected = generate(model, tokenizer, PROMPTS, **kwargs)
    real, sizes = model.generate, []

    def generate_with_little_memory(*args, **kw):
        sizes.append(kw["input_ids"].shape[0])
        if sizes[-1] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kw)

    monkeypatch.setattr(model, "generate", generate_with_little_memory)
    done = []
    with caplog.at_level("WARNING", logger="trainers.sampling"):
        assert generate(model, tokenizer, PROMPTS, on_batch=done.append, **kwargs) == expected
    assert sizes[0] == 9 and max(sizes[1:]) <= 4 and sum(done) == 9  # 9, then 4 and at most 4 per call
    assert sizes.count(9) == 1 and "generation_batch_size to at most 4" in caplog.text
    sizes.clear()
    monkeypatch.setattr(model, "generate", lambda *a, **kw: (_ for _ in ()).throw(torch.OutOfMemoryError("one")))
    with pytest.raises(torch.OutOfMemoryError):  # not even one sequence fits: the error is the user's to see
        generate(model, tokenizer, PROMPTS[:1], **kwargs)


def test_preallocated_cache_samples_what_the_growing_cache_samples(model_and_tokenizer, monkeypatch):
    """The shared prefill's cache is copied into a StaticCache (written in place, never regrown): the
    path is really taken, and sampled and greedy programs are those of the growing DynamicCache."""
    from transformers import StaticCache

    import trainers.sampling as sampling

    model, tokenizer = model_and_tokenizer
    made = []
    real = sampling._preallocated
    monkeypatch.setattr(sampling, "_preallocated", lambda *a: made.append(real(*a)) or made[-1])
    for temperature in (1.0, 0.0):
        kwargs = dict(num_samples=4, max_new_tokens=12, temperature=temperature, batch_size=8, seed=3)
        growing = sampling.generate(model, tokenizer, PROMPTS, preallocate_cache=False, **kwargs)
        assert not made
        preallocated = sampling.generate(model, tokenizer, PROMPTS, **kwargs)
        assert made and all(isinstance(cache, StaticCache) for cache in made)
        assert preallocated == growing
        made.clear()


def test_reward_token_guidance_is_the_guided_distribution_step_by_step(model_and_tokenizer):
    """Greedy decoding with ``guidance_weight`` w takes, at every step, the argmax of
    ``log p(·|x) + w (log p(·|x) − log p(·|x'))`` computed from scratch on both full sequences (no cache,
    unpadded): the negative stream's cache and positions are right under left padding, for prompts of
    different lengths and with the shared prefill on or off; w = 0 is plain decoding."""
    import torch

    from trainers.sampling import generate

    model, tokenizer = model_and_tokenizer
    negatives = ["# wrong\n" + p for p in PROMPTS[:2]] + ["y = 1\n"]
    steps, w = 8, 1.5

    def reference(prompt: str, negative: str) -> list[int]:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        neg = tokenizer(negative, add_special_tokens=False)["input_ids"]
        out: list[int] = []
        with torch.no_grad():
            for _ in range(steps):
                lp = torch.log_softmax(model(torch.tensor([ids + out])).logits[0, -1].float(), -1)
                ln = torch.log_softmax(model(torch.tensor([neg + out])).logits[0, -1].float(), -1)
                out.append(int(torch.argmax(lp + w * (lp - ln))))
        return out

    expected = [tokenizer.decode(reference(p, n), skip_special_tokens=True) for p, n in zip(PROMPTS, negatives)]
    for shared in (False, True):
        guided = generate(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=steps, temperature=0.0,
                          share_prompt_prefill=shared, negative_prompts=negatives, guidance_weight=w)
        assert [s[0] for s in guided] == expected and all(s[0] == s[1] for s in guided)
    plain = generate(model, tokenizer, PROMPTS, num_samples=1, max_new_tokens=steps, temperature=0.0)
    assert generate(model, tokenizer, PROMPTS, num_samples=1, max_new_tokens=steps, temperature=0.0,
                    negative_prompts=negatives, guidance_weight=0.0) == plain
    assert [s[0] for s in plain] != expected  # the guidance changed what this model writes
    sampled = [generate(model, tokenizer, PROMPTS, num_samples=3, max_new_tokens=steps, temperature=1.0, seed=5,
                        batch_size=b, negative_prompts=negatives, guidance_weight=w) for b in (64, 2)]
    assert sampled[0] == sampled[1]  # keyed draws: the same guided samples at any batch size
    with pytest.raises(ValueError, match="negative prompt"):
        generate(model, tokenizer, PROMPTS, num_samples=1, max_new_tokens=2, temperature=0.0, guidance_weight=1.0)
