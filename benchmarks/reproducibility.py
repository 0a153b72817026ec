"""Does a LeTI CPU run give the same bits on every machine? The default recipe under several CPU kernel paths.

    python benchmarks/reproducibility.py                          # every path, 1 iteration each
    python benchmarks/reproducibility.py --iterations 6 --paths native portable avx2_cpu_portable
    python benchmarks/reproducibility.py --quick                  # the pipeline only (8 tasks, 8 steps)

Each path runs `leti train` (the built-in default: the shipped base model, LETI-Arith) in a fresh process
with its environment, and is compared with the first path. A path either asks torch and MKL for a kernel
width directly, or makes this CPU look like another one:

- `avx2_cpu_*`: what a CPU without AVX-512 runs: ATen at AVX2 (`ATEN_CPU_CAPABILITY`), MKL and oneDNN
  dispatching no further than AVX2 (`MKL_ENABLE_INSTRUCTIONS`, `ONEDNN_MAX_CPU_ISA`);
- `*_1_thread`: one intra-op thread (`OMP_NUM_THREADS=1`) instead of torch's default (one per core);
- `portable`: what `leti train` sets by default (`trainers.machine.PORTABLE_KERNELS`).

Printed per path: wall time and its ratio to the first path, the sha256 of the last iteration's weights,
whether they are bit-identical to the first path's, and held-out pass@1 / sampled pass rate per iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AVX2_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PORTABLE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
# name -> (environment, leti train's --cpu_kernels); "native" paths set nothing themselves
PATHS: dict[str, tuple[dict[str, str], str]] = {
    "native": ({}, "native"),
    "native_1_thread": ({"OMP_NUM_THREADS": "1"}, "native"),
    "aten_default": ({"ATEN_CPU_CAPABILITY": "default"}, "native"),
    "avx2_cpu": (AVX2_CPU, "native"),
    "mkl_cbwr_avx2": ({"MKL_CBWR": "AVX2"}, "native"),
    "portable": ({}, "portable"),
    "portable_1_thread": ({"OMP_NUM_THREADS": "1"}, "portable"),
    "avx2_cpu_portable": ({**AVX2_CPU, "MKL_CBWR": "AVX2"}, "portable"),
    "avx2_cpu_portable_1_thread": ({**AVX2_CPU, "MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "1"}, "portable"),
}
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
                    "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_path(name: str, iterations: int, out: Path, extra: list[str]) -> dict:
    from trainers.default_model import file_sha256

    env_vars, kernels = PATHS[name]
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}  # the path alone decides
    env.update(env_vars)
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "trainers.cli", "train", "--num_iterations", str(iterations),
           "--cpu_kernels", kernels, "--output_dir", str(folder), "--report_to", "none", *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: leti train failed:\n{proc.stderr[-3000:]}")
    weights = folder / f"iteration-{iterations}" / "model" / "model.safetensors"
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    machine = json.loads((folder / "config.json").read_text())["machine"]
    return {"path": name, "env": env_vars, "seconds": seconds, "sha256": file_sha256(weights),
            "capability": machine["torch"]["cpu_capability"], "threads": machine["torch"]["threads"],
            "heldout": [m.get("eval/pass@1") for m in history], "sampled": [m.get("rollout/pass_rate") for m in history
                                                                           if "rollout/pass_rate" in m]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                        help="the first is the reference (each at most once)")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="the pipeline only: 8 tasks, 8 optimizer steps")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    if len(set(args.paths)) != len(args.paths):
        parser.error("each path at most once (a path's runs share its folder)")
    extra = ["--max_train_tasks", "8", "--max_eval_tasks", "8", "--max_steps", "8",
             "--num_generations_per_prompt", "4"] if args.quick else []
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="leti-reproducibility-"))
    results = []
    try:
        for name in args.paths:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.append(run_path(name, args.iterations, out, extra))
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    first = results[0]
    print(f"| path | environment | ATen | threads | wall (s) | / {first['path']} | weights sha256 | same bits as "
          f"{first['path']} | held-out pass@1 | sampled pass rate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "-"
        curve = lambda values: " → ".join(f"{v:.4f}" for v in values if v is not None)  # noqa: E731
        print(f"| {r['path']} | {env} | {r['capability']} | {r['threads']} | {r['seconds']:.0f} | "
              f"{r['seconds'] / first['seconds']:.2f} | {r['sha256'][:12]} | "
              f"{'yes' if r['sha256'] == first['sha256'] else 'no'} | {curve(r['heldout'])} | {curve(r['sampled'])} |")
    return results


if __name__ == "__main__":
    main()
