"""Execution on `leti serve` servers: programs/s with two servers of 1 worker each against one, same run.

    python benchmarks/remote_execution.py              # 3 rounds: MBPP test references (500), CPU-bound, waiting
    python benchmarks/remote_execution.py --quick      # the pipeline only: 1 round, 40 programs a set (the suite runs it)

Starts two `leti serve` processes on loopback, 1 sandbox worker each, server A pinned to the first core and B to
the second (two CPU machines would each have their own; unpinned, both pools would pin their one worker to
the first core), then, per round, runs the same programs through ``TaskRunner(limits, servers=[A])`` and
``TaskRunner(limits, servers=[A, B])``, and through this process's own pool of 1 and of 2 workers (the
reference: the same sandbox without HTTP). The client itself is not pinned. Printed per round: programs/s of
each and the two-server/one-server ratio; then the median over rounds, and whether the two servers gave
exactly the verdicts of local execution on the MBPP test references (every ``ExecutionResult`` field but the
timings).

Three sets: the MBPP test references (what a trainer checks; most take a few milliseconds, so the sandbox's
per-run cost, much of it in the kernel, is most of their time), CPU-bound programs (a pure-Python loop of about
50 ms each, as a sampled program that does real work), and programs that wait 50 ms (no CPU to speak of: the
fleet's own scaling, which a machine whose cores are shared with other work cannot hide; on such a machine the
first two sets scale only as far as its free cores let the local pool scale, which the same rounds measure).
Servers allow 30 s per program, so that a loaded machine cannot turn a slow reference (MBPP/123, 2-3 s alone)
into a timeout on one side only. Needs ``leti[serve]`` and MBPP (``LETI_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import warnings

TIMINGS = ("duration_s", "cpu_s")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # `-m leti_env` is this checkout's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``python -m leti_env serve`` on loopback, with 1 worker, pinned to ``cpu`` (None: not pinned)."""

    def __init__(self, cpu: int | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cpu = cpu
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leti_env", "serve", "--env", "LETI-MBPP", "--split", "test", "--workers", "1",
             "--timeout", "30", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
            start_new_session=True,  # its own session (and scheduling autogroup), as on a machine of its own
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)

    def wait(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"leti serve exited: {self.proc.communicate()[1][-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("leti serve did not come up in 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_bound(n: int) -> list:
    """``n`` distinct pure-Python programs of about 50 ms each (a loop whose result the program asserts)."""
    from leti_env import Program

    cycle = [i * i % 7 for i in range(7)]  # i * i % 7 repeats every 7: the expected total without the loop

    def total(m: int) -> int:
        return sum(cycle) * (m // 7) + sum(cycle[:m % 7])

    return [Program(f"total = 0\nfor i in range({300_000 + k}):\n    total += i * i % 7\n"
                    f"assert total == {total(300_000 + k)}\n") for k in range(n)]


def waiting(n: int) -> list:
    """``n`` distinct programs that wait 50 ms (and use almost no CPU): the fleet's own scaling, whatever else
    the machine's cores are doing."""
    from leti_env import Program

    return [Program(f"import time\ntime.sleep(0.05)\nassert {k} >= 0\n") for k in range(n)]


def rate(run, programs) -> tuple[float, list]:
    start = time.perf_counter()
    results = run(programs)
    return len(programs) / (time.perf_counter() - start), results


def verdict(result) -> dict:
    return {k: v for k, v in dataclasses.asdict(result).items() if k not in TIMINGS}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the pipeline only: 1 round, 40 programs a set")
    args = parser.parse_args(argv)
    rounds, size = (1, 40) if args.quick else (args.rounds, None)

    import leti_env
    from leti_env import ExecutorPool, TaskRunner

    warnings.simplefilter("ignore", leti_env.SandboxWarning)
    tasks = leti_env.load_tasks("LETI-MBPP", "test")
    limits = tasks.limits.override(timeout=30.0)
    references = [t.program(t.reference_solution) for t in tasks][:size]
    sets = {f"MBPP test references ({len(references)})": references}
    heavy = cpu_bound(size or 120)
    sets[f"CPU-bound, ~50 ms each ({len(heavy)})"] = heavy
    idle = waiting(size or 120)
    sets[f"waiting, 50 ms each ({len(idle)})"] = idle
    cores = sorted(os.sched_getaffinity(0))
    pins = cores[:2] if len(cores) >= 2 else [None, None]
    servers = [LocalServer(cpu) for cpu in pins]
    try:
        for server in servers:
            server.wait()
        one = TaskRunner(limits, servers=[servers[0].url])
        two = TaskRunner(limits, servers=[s.url for s in servers])
        pools = {1: ExecutorPool(1, cpus=pins[:1] if pins[0] is not None else None),
                 2: ExecutorPool(2, cpus=pins if pins[0] is not None else None)}
        mode = pools[1].protections().get("mode")
        for runner in (one, two):
            runner.run_programs(["pass"] * 8)  # connections and workers warm, outside the timed region
        for pool in pools.values():
            pool.run(["pass"] * 8)
        print(f"sandbox: {mode} mode; servers A and B, 1 worker each, pinned to cores {pins[0]} and {pins[1]}; "
              f"this machine: {len(cores)} cores", flush=True)
        rows = {name: {"local 1": [], "1 server": [], "2 servers": [], "local 2": []} for name in sets}
        for round_index in range(rounds):
            for name, programs in sets.items():
                row = rows[name]
                row["local 1"].append(rate(lambda p: pools[1].run(p, limits), programs)[0])
                row["1 server"].append(rate(one.run_programs, programs)[0])
                row["2 servers"].append(rate(two.run_programs, programs)[0])
                row["local 2"].append(rate(lambda p: pools[2].run(p, limits), programs)[0])
                print(f"round {round_index + 1} {name}: local pool 1 worker {row['local 1'][-1]:6.1f} prog/s | "
                      f"1 server {row['1 server'][-1]:6.1f} | 2 servers {row['2 servers'][-1]:6.1f} "
                      f"({row['2 servers'][-1] / row['1 server'][-1]:.2f}x) | local pool 2 workers "
                      f"{row['local 2'][-1]:6.1f}", flush=True)
        # the verdicts: two servers against this process's pool, every MBPP test reference
        here = pools[2].run(references, limits)
        there = two.run_programs(references)
        differ = sum(verdict(a) != verdict(b) for a, b in zip(here, there))
        for pool in pools.values():
            pool.close()
    finally:
        for server in servers:
            server.stop()

    summary: dict = {"sets": {}, "same_verdicts": differ == 0, "verdicts_compared": len(references)}
    print("\nmedian over rounds:")
    for name, row in rows.items():
        ratios = [b / a for a, b in zip(row["1 server"], row["2 servers"])]
        local = [b / a for a, b in zip(row["local 1"], row["local 2"])]
        against_local = [a / b for a, b in zip(row["2 servers"], row["local 2"])]  # what HTTP costs
        medians = {k: statistics.median(v) for k, v in row.items()}
        summary["sets"][name] = {**medians, "ratio": statistics.median(ratios), "ratios": ratios,
                                 "local_ratio": statistics.median(local),
                                 "two_servers_over_local_two": statistics.median(against_local)}
        print(f"  {name}: 1 server {medians['1 server']:.1f} prog/s, 2 servers {medians['2 servers']:.1f} prog/s: "
              f"{statistics.median(ratios):.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}x); local pool "
              f"{medians['local 1']:.1f} prog/s with 1 worker, {medians['local 2']:.1f} with 2 "
              f"({statistics.median(local):.2f}x); 2 servers / local pool of 2: {statistics.median(against_local):.2f}")
    print(f"same verdicts as local on the MBPP references: {'yes' if differ == 0 else 'no'} "
          f"({len(references) - differ} of {len(references)} identical)")
    return summary


if __name__ == "__main__":
    main()
