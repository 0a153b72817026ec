"""Training-phase throughput: LetiTrainer vs a plain SFTTrainer on the same pre-built LeTI rows.

    python benchmarks/trainer_overhead.py                # tiny Llama on CPU, 3 alternating rounds
    python benchmarks/trainer_overhead.py --rows 512 --hidden 256 --layers 6

Both train the same LoRA configuration on the same rows (LeTI sequences built from synthetic rollouts:
half failing with a traceback, half passing) for one epoch. Printed per round: tokens/s of each
(non-pad tokens / wall time of the training call, dataset preparation included) and the ratio
LetiTrainer / SFTTrainer. The LeTI side is `LetiTrainer._fit`, i.e. exactly what one iteration runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="leti-overhead-"))
    try:
        _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a model and every round's trainer output


def _measure(args, work: Path) -> None:
    import datasets
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    import leti_env
    from trainers import LetiConfig, LetiTrainer, Rollout
    from trainers.tiny import build_tiny_model

    model_dir = build_tiny_model(work / "model", hidden_size=args.hidden, num_layers=args.layers)
    tasks = leti_env.load_mbpp("train")[:32]
    feedback = 'Traceback (most recent call last):\n  File "<string>", line 9, in <module>\n    assert f(1) == 2\nAssertionError\n'
    rollouts = [Rollout(t.task_id, t.prompt, t.reference_solution, float(i % 2), "passed" if i % 2 else "failed",
                        "" if i % 2 else feedback) for i in range(args.rows) for t in [tasks[i % len(tasks)]]]
    common = dict(per_device_train_batch_size=args.batch, num_train_epochs=1, learning_rate=1e-4, logging_steps=1000,
                  activation_checkpointing=False, bf16=False, report_to="none", save_strategy="no", disable_tqdm=True,
                  train_sampling_strategy="sequential", max_length=2048, use_cpu=True)

    config = LetiConfig(output_dir=str(work / "leti"), load_in_4bit=False, lora_r=16, **common)
    leti = LetiTrainer(str(model_dir), config, train_tasks=tasks)
    rows = leti.training_rows(rollouts, 1)
    tokens = sum(len(r["input_ids"]) for r in rows)
    print(f"{len(rows)} rows, {tokens} tokens, model {args.hidden}x{args.layers}")

    def plain_sft_model():
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.add_tokens(config.special_tokens, special_tokens=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        model.resize_token_embeddings(len(tokenizer))
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM",
                          trainable_token_indices={"embed_tokens": tokenizer.convert_tokens_to_ids(config.special_tokens)})
        return get_peft_model(model, lora), tokenizer

    sft_model, sft_tokenizer = plain_sft_model()
    ratios = []
    for round_index in range(args.rounds):
        start = time.perf_counter()
        SFTTrainer(model=sft_model, args=SFTConfig(output_dir=str(work / "sft"), **common),
                   train_dataset=datasets.Dataset.from_list(rows), processing_class=sft_tokenizer).train()
        sft_tps = tokens / (time.perf_counter() - start)
        start = time.perf_counter()
        leti._fit(rows, work / "leti" / f"round-{round_index}")
        leti_tps = tokens / (time.perf_counter() - start)
        ratios.append(leti_tps / sft_tps)
        print(f"round {round_index + 1}: SFTTrainer {sft_tps:,.0f} tok/s | LetiTrainer {leti_tps:,.0f} tok/s | "
              f"ratio {leti_tps / sft_tps:.3f}", flush=True)
    print(f"median ratio LetiTrainer / SFTTrainer: {statistics.median(ratios):.3f} "
          f"(per round {min(ratios):.3f}-{max(ratios):.3f}; target >= 0.95)")


if __name__ == "__main__":
    main()
