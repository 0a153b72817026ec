"""Rollout sampling speed: plain `generate` vs a shared prompt prefill (each prompt encoded once).

    .venv/bin/python benchmarks/sampling.py            # the built-in default model, LETI-Arith train prompts
    .venv/bin/python benchmarks/sampling.py --model PATH --env LETI-MBPP --samples 8 --max-new-tokens 128

Samples `--samples` programs for each of `--prompts` training prompts at T=1 with
`trainers.evaluation.generate`, alternating `share_prompt_prefill=False` (the baseline: transformers
`generate` encodes every copy of a prompt) and `True`, in the same process. Prints samples/s and the
ratio, and checks that greedy decoding gives identical completions both ways.
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
    from trainers.evaluation import generate

    path = default_model_path() if args.model == "default" else args.model
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    prompts = [t.prompt for t in gym.make(args.env).unwrapped.tasks[: args.prompts]]
    common = dict(num_samples=args.samples, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    greedy = {share: generate(model, tokenizer, prompts[:64], temperature=0.0, share_prompt_prefill=share, **common)
              for share in (False, True)}
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for share in (False, True):
            torch.manual_seed(0)
            start = time.perf_counter()
            generate(model, tokenizer, prompts, temperature=1.0, share_prompt_prefill=share, **common)
            rates[share].append(len(prompts) * args.samples / (time.perf_counter() - start))
    best = {share: max(r) for share, r in rates.items()}
    print(f"model {path} on {device}, {args.env}: {len(prompts)} prompts x {args.samples} samples, "
          f"<= {args.max_new_tokens} new tokens, batches of {args.batch_size}, best of {args.rounds}")
    print(f"  plain generate (baseline): {best[False]:8.0f} samples/s")
    print(f"  shared prompt prefill:     {best[True]:8.0f} samples/s   ratio {best[True] / best[False]:.2f}x")
    print(f"  greedy completions identical: {greedy[False] == greedy[True]}")


if __name__ == "__main__":
    main()
