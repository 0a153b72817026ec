"""QLoRA memory and speed, and rollouts/s of transformers vs vLLM, for a 350M-class model with random weights.

    python benchmarks/gpu.py                       # CUDA: 350M-class Llama, QLoRA vs bf16 LoRA, HF vs vLLM
    python benchmarks/gpu.py --tiny --device cpu   # a smoke run of the same code on a CPU (seconds)

Random weights are enough for speed and memory: the shapes are what cost. The model is a Llama with
CodeGen-350M's scale (hidden 1024, 24 layers, 16 heads, vocabulary 51,200, tied embeddings: ~355M
parameters), saved once to a temporary folder with a byte-level tokenizer trained on the standard library.

Training: one ``LetiTrainer._fit`` (exactly one iteration's training phase) on the same LeTI rows, for
QLoRA (4-bit NF4 base, double quantisation, bf16 compute) and, as the baseline in the same run, LoRA on
a bf16 base (LoRA weights in fp32 in both, PEFT's default). Printed: tokens/s (non-pad tokens / wall time of the training call) and peak GPU memory
(``torch.cuda.max_memory_allocated``), with the QLoRA / bf16 ratios.

Sampling: the same prompts and ``--samples`` per prompt at temperature 1 from the bf16 model, with
``trainers.sampling.generate`` (transformers, shared prompt prefill) and, if vLLM is installed, with
``trainers.vllm_backend.VLLMSampler`` (the engine ``generation_backend="vllm"`` uses; its first call, which
builds the engine, is timed separately). Printed: rollouts/s of each and the vLLM / transformers ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path


def build_model(folder: Path, tiny: bool) -> Path:
    """A random Llama at CodeGen-350M's scale (or a tiny one), with a tokenizer, saved to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainers.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(vocab_size=2048 if tiny else 51200)
    hidden, layers, heads, intermediate = (64, 2, 4, 192) if tiny else (1024, 24, 16, 2816)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
          f"(hidden {hidden}, {layers} layers, vocabulary {len(tokenizer)})", flush=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="leti-gpu-"))
    try:
        return _measure(argv, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a 355M model and two trainers' outputs


def _measure(argv: list[str] | None, work: Path) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="A tiny model: a smoke run of this script.")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--rows", type=int, default=512, help="LeTI training rows.")
    parser.add_argument("--batch", type=int, default=16, help="Training batch size.")
    parser.add_argument("--prompts", type=int, default=64, help="Sampling prompts (MBPP training tasks).")
    parser.add_argument("--samples", type=int, default=16, help="Samples per prompt.")
    parser.add_argument("--max_new_tokens", type=int, default=256)
    args = parser.parse_args(argv)

    import torch

    import leti_env
    from trainers import LetiConfig, LetiTrainer, Rollout
    from trainers.sampling import generate
    from trainers.sequences import inference_prompt

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("no CUDA device visible; use --device cpu (with --tiny) for a smoke run")
    model_dir = build_model(work / "model", args.tiny)
    tasks = leti_env.load_mbpp("train")
    feedback = 'Traceback (most recent call last):\n  File "<string>", line 9, in <module>\n    assert f(1) == 2\nAssertionError\n'
    rollouts = [Rollout(t.task_id, t.prompt, t.reference_solution, float(i % 2), "passed" if i % 2 else "failed",
                        "" if i % 2 else feedback) for i in range(args.rows) for t in [tasks[i % len(tasks)]]]
    common = dict(per_device_train_batch_size=args.batch, num_train_epochs=1, learning_rate=1e-4, logging_steps=1000,
                  activation_checkpointing=False, report_to="none", save_strategy="no", disable_tqdm=True,
                  max_length=1024, use_cpu=not cuda, bf16=True, num_generations_per_prompt=args.samples,
                  max_new_tokens=args.max_new_tokens, dtype="bfloat16")
    results: dict = {}

    def peak_reset():
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib():
        return torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")

    trainers = {}
    for name, four_bit in (("bf16 LoRA", False), ("QLoRA 4-bit", True)):
        peak_reset()
        config = LetiConfig(output_dir=str(work / name.split()[0]), load_in_4bit=four_bit, **common)
        trainer = LetiTrainer(str(model_dir), config, train_tasks=tasks[:8])  # base bf16 (as saved) or 4-bit
        rows = trainer.training_rows(rollouts, 1)
        tokens = sum(len(r["input_ids"]) for r in rows)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer._fit(rows, work / name.split()[0] / "fit")
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        results[name] = {"tokens_per_s": tokens / seconds, "peak_gib": peak_gib(), "tokens": tokens}
        peak = f"peak {peak_gib():.2f} GiB" if cuda else "peak memory: CUDA only"
        print(f"train {name}: {tokens / seconds:,.0f} tok/s, {peak} ({len(rows)} rows, {tokens} tokens)", flush=True)
        trainers[name] = trainer
    base, qlora = results["bf16 LoRA"], results["QLoRA 4-bit"]
    memory = f", peak memory {qlora['peak_gib'] / base['peak_gib']:.2f}x" if cuda else ""
    print(f"QLoRA / bf16 LoRA: tokens/s {qlora['tokens_per_s'] / base['tokens_per_s']:.2f}x{memory}", flush=True)
    del trainers["QLoRA 4-bit"]

    trainer = trainers["bf16 LoRA"]
    prompts = [inference_prompt(t.prompt, trainer.args, "good", trainer.tokenizer) for t in tasks[:args.prompts]]
    count = len(prompts) * args.samples
    start = time.perf_counter()
    generate(trainer.model, trainer.tokenizer, prompts, num_samples=args.samples, max_new_tokens=args.max_new_tokens,
             temperature=1.0, batch_size=max(args.samples, 64))
    hf = count / (time.perf_counter() - start)
    results["hf rollouts_per_s"] = hf
    print(f"sample transformers generate: {hf:,.1f} rollouts/s ({count} rollouts, {args.max_new_tokens} new tokens max)",
          flush=True)
    if importlib.util.find_spec("vllm") is None or not cuda:
        print("sample vLLM: skipped (" + ("vLLM is not installed" if cuda else "needs CUDA") + ")")
        return results
    from trainers.sampling import SamplingParams
    from trainers.vllm_backend import VLLMSampler

    sampler = VLLMSampler(work / "vllm-model", gpu_memory_utilization=0.5)
    start = time.perf_counter()
    sampler.generate(trainer.model, trainer.tokenizer, prompts[:1], SamplingParams(1, 8, 1.0), seed=0)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    sampler.generate(trainer.model, trainer.tokenizer, prompts, SamplingParams(args.samples, args.max_new_tokens, 1.0),
                     seed=1)
    vllm = count / (time.perf_counter() - start)
    start = time.perf_counter()
    sampler.sleep()
    sampler.weights_changed()
    sampler.generate(trainer.model, trainer.tokenizer, prompts[:1], SamplingParams(1, 8, 1.0), seed=0)
    reload = time.perf_counter() - start
    results.update({"vllm rollouts_per_s": vllm, "vllm setup_s": setup, "vllm reload_s": reload})
    print(f"sample vLLM: {vllm:,.1f} rollouts/s; engine setup {setup:.1f} s (export + start), weight reload "
          f"{reload:.1f} s (sleep, export, wake, reload)", flush=True)
    print(f"vLLM / transformers rollouts/s: {vllm / hf:.2f}x")
    return results


if __name__ == "__main__":
    main()
