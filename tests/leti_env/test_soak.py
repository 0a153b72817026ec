"""10,000 mixed programs through one pool: every verdict right, nothing left running or on disk."""

from __future__ import annotations

import os
import random
import time

import pytest

from leti_env import Program
from tests.conftest import leftover_processes

TESTS = "assert f(2) == 4\nassert f(3) == 9\n"
KINDS = {  # kind -> (solution, expected status); weights favour the common cases, as in training
    "pass": ("def f(x):\n    return x * x\n", "passed", 60),
    "wrong": ("def f(x):\n    return x + x\n", "failed", 20),
    "syntax": ("def f(x)\n    return x\n", "syntax_error", 8),
    "raise": ("def f(x):\n    return [][x]\n", "error", 6),
    "print": ("print('x' * 1000)\ndef f(x):\n    return x * x\n", "passed", 3),
    "orphan": ("import os, time\nif os.fork() == 0:\n    time.sleep(5)\n    os._exit(0)\ndef f(x):\n    return x * x\n", "passed", 1),
    "exit": ("import sys\nsys.exit(0)\n", "exited_early", 1),
    "file": ("open('out.txt', 'w').write('x')\ndef f(x):\n    return x * x\n", "passed", 1),
}


@pytest.mark.slow
def test_ten_thousand_mixed_programs(pool):
    rng = random.Random(0)
    names = list(KINDS)
    kinds = rng.choices(names, weights=[KINDS[k][2] for k in names], k=10_000)
    kinds += ["loop"] * 10  # a few timeouts, as real rollouts have
    programs = [Program(KINDS[k][0], TESTS) if k != "loop" else Program("while True:\n    pass\n", TESTS) for k in kinds]
    tmp_before = set(os.listdir("/tmp"))
    start = time.monotonic()
    results = pool.run(programs, timeout=1.0)
    elapsed = time.monotonic() - start
    wrong = [(k, r.status) for k, r in zip(kinds, results) if r.status != (KINDS[k][1] if k != "loop" else "timeout")]
    assert not wrong, wrong[:10]
    time.sleep(0.3)
    for worker in pool._workers:
        assert not leftover_processes(worker.proc.pid), "processes survived their runs"
    assert not {n for n in set(os.listdir("/tmp")) - tmp_before if n.startswith("leti")}
    print(f"10,010 programs in {elapsed:.1f} s ({len(programs) / elapsed:.0f} programs/s)")
