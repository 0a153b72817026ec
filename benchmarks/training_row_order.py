"""Training-phase speed of one LeTI iteration's rows: shuffled vs shuffled-and-batched-by-length.

    .venv/bin/python benchmarks/training_row_order.py --run runs/leti-default --iteration 6

Reads a finished run of the built-in default (its model and rollouts), builds that
iteration's rows, and times `LetiTrainer._fit` for one epoch with `train_sampling_strategy="random"`
(the baseline) and `"group_by_length"` (the default recipe), alternating, in the same process.
Prints real tokens/s and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="folder of a finished `leti train` run")
    parser.add_argument("--iteration", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from leti_env.tasks.arith import load_arith
    from trainers import LetiTrainer, load_rollouts
    from trainers.cli import DEFAULT_CONFIG
    from trainers.parser import make_parser

    run = Path(args.run)
    _, base = make_parser().parse_args_and_config(
        ["--config", str(DEFAULT_CONFIG), "--output_dir", tempfile.mkdtemp(), "--num_train_epochs", "1"])
    model = run / f"iteration-{args.iteration - 1}" / "model" if args.iteration > 1 else None
    if model is None:
        raise SystemExit("use --iteration 2 or later (iteration 1 trains the cached default model)")
    rollouts = load_rollouts(run / f"iteration-{args.iteration}" / "rollouts")
    results: dict[str, list[float]] = {"random": [], "group_by_length": []}
    for _ in range(args.rounds):
        for order in results:
            config = dataclasses.replace(base, train_sampling_strategy=order)
            trainer = LetiTrainer(str(model), config, train_tasks=load_arith("train"))
            rows = trainer.training_rows(rollouts, args.iteration)
            tokens = sum(len(r["input_ids"]) for r in rows)
            start = time.perf_counter()
            trainer._fit(rows, Path(config.output_dir))
            results[order].append(tokens / (time.perf_counter() - start))
    for order, speeds in results.items():
        print(f"{order:16s} {max(speeds):8.0f} real tokens/s (best of {args.rounds})")
    print(f"ratio group_by_length / random: {max(results['group_by_length']) / max(results['random']):.2f}x")


if __name__ == "__main__":
    main()
