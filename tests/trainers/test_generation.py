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
    from trainers.evaluation import generate

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

    from trainers.evaluation import _prompt_cache, generate

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
    from trainers.evaluation import _prompt_cache, generate

    model, tokenizer = model_and_tokenizer
    encoded = tokenizer(["x", "y"], return_tensors="pt", padding=True, add_special_tokens=False)
    assert encoded["input_ids"].shape[1] == 1 and _prompt_cache(model, encoded) is None
    out = generate(model, tokenizer, ["x", "y"], num_samples=2, max_new_tokens=5, temperature=0.0, batch_size=8)
    assert [len(s) for s in out] == [2, 2]


def test_prompt_cache_counts_positions_like_generate(model_and_tokenizer):
    """The next-token logits from the cached prefix equal a full forward with generate's position ids."""
    import torch

    from trainers.evaluation import _prompt_cache

    model, tokenizer = model_and_tokenizer
    encoded = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    assert (mask == 0).any()  # left padding is present, so positions matter
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
        cache = _prompt_cache(model, encoded)
        last = model(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=cache,
                     position_ids=(mask.sum(-1, keepdim=True) - 1)).logits[:, -1]
    torch.testing.assert_close(last, full, atol=1e-4, rtol=1e-4)
