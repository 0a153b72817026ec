"""Rollout sampling speed: transformers' own sampler vs leti's keyed sampler, without and with a shared
prompt prefill (each prompt encoded once).

    .venv/bin/python benchmarks/sampling.py            # the built-in default model, LETI-Arith train prompts
    .venv/bin/python benchmarks/sampling.py --model PATH --env LETI-MBPP --samples 8 --max-new-tokens 128

Samples `--samples` programs for each of `--prompts` training prompts at T=1, in the same process, in
alternating rounds:
- baseline: transformers `generate(do_sample=True)` on every copy of each prompt, in leti's batches (the
  global generator decides every token, so the programs depend on the batching);
- `trainers.sampling.generate` with `share_prompt_prefill=False` (per-sample keyed draws);
- the same with `share_prompt_prefill=True` and a growing (dynamic) key/value cache;
- the same with the cache preallocated for the whole completion (leti's default).
Prints samples/s and the ratios to the baseline, and checks that leti's samples are the same with and
without the shared prefill, with either cache, and at a quarter of the batch size.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="a model folder, or `default` (the built-in default)")
    parser.add_argument("--env", default="LETI-Arith")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import gymnasium as gym

    import leti_env  # noqa: F401 - registers the ids
    from trainers.default_model import default_model_path
    from trainers.sampling import _plan, generate

    path = default_model_path() if args.model == "default" else args.model
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    prompts = [t.prompt for t in gym.make(args.env).unwrapped.tasks[: args.prompts]]
    common = dict(num_samples=args.samples, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)

    def transformers_sampler() -> None:
        tokenizer.padding_side = "left"
        with torch.no_grad():
            for batch in _plan(len(prompts), args.samples, args.batch_size):
                encoded = tokenizer([prompts[i] for i in batch.prompts], return_tensors="pt", padding=True,
                                    add_special_tokens=False).to(device)
                inputs = {k: v.repeat_interleave(len(batch.samples), dim=0) for k, v in encoded.items()}
                model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=True, temperature=1.0,
                               top_p=1.0, top_k=0, pad_token_id=tokenizer.pad_token_id)

    runs = {"transformers' sampler, every copy encoded (baseline)": transformers_sampler,
            "keyed sampler, every copy encoded": lambda: generate(model, tokenizer, prompts, batch_size=args.batch_size,
                                                                  share_prompt_prefill=False, **common),
            "keyed sampler, shared prompt prefill, growing cache": lambda: generate(
                model, tokenizer, prompts, batch_size=args.batch_size, share_prompt_prefill=True,
                preallocate_cache=False, **common),
            "keyed sampler, shared prompt prefill, preallocated cache (default)": lambda: generate(
                model, tokenizer, prompts, batch_size=args.batch_size, share_prompt_prefill=True, **common)}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            torch.manual_seed(0)
            start = time.perf_counter()
            run()
            rates[name].append(len(prompts) * args.samples / (time.perf_counter() - start))
    few = prompts[:64]
    same = {(share, bs, pre): generate(model, tokenizer, few, batch_size=bs, share_prompt_prefill=share,
                                       preallocate_cache=pre, **common)
            for share, bs, pre in ((False, args.batch_size, True), (True, args.batch_size, False),
                                   (True, args.batch_size, True), (True, max(1, args.batch_size // 4), True))}
    best = {name: max(r) for name, r in rates.items()}
    baseline = best[next(iter(runs))]
    print(f"model {path} on {device}, {args.env}: {len(prompts)} prompts x {args.samples} samples, "
          f"<= {args.max_new_tokens} new tokens, batches of {args.batch_size}, best of {args.rounds}")
    for name, rate in best.items():
        print(f"  {name:55s} {rate:8.0f} samples/s   ratio {rate / baseline:.2f}x")
    print(f"  keyed samples identical with/without shared prefill, growing or preallocated cache, and at batch "
          f"{max(1, args.batch_size // 4)}: "
          f"{len({repr(v) for v in same.values()}) == 1}")


if __name__ == "__main__":
    main()
