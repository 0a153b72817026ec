"""Command line for leti_env: list environments, run one end to end, show the sandbox.

    python -m leti_env envs
    python -m leti_env demo --env LETI-MBPP --num-tasks 5
    python -m leti_env sandbox
    python -m leti_env serve --env LETI-MBPP --split test --port 8000     # (pip install "leti[serve]")
    python -m leti_env serve --env none --host 10.0.0.5 --timeout 30       # execution only, for remote trainers
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .argparsing import StrictArgumentParser


def _envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import leti_env  # noqa: F401 - registers the ids

    for env_id in sorted(i for i in gym.registry if i.startswith("LETI-")):
        try:
            env = gym.make(env_id).unwrapped
            size = f"{len(env.tasks)} tasks"
        except (FileNotFoundError, ImportError, ValueError) as exc:
            size = f"unavailable: {exc}"
        print(f"{env_id:20s} {size}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Run the first tasks of an environment twice: the reference solution, then a broken one."""
    import gymnasium as gym

    import leti_env  # noqa: F401

    env = gym.make(args.env, **json.loads(args.env_kwargs))
    tasks = env.unwrapped.tasks[: args.num_tasks]
    print(f"{args.env}: {len(env.unwrapped.tasks)} tasks; running {len(tasks)} of them twice\n")
    start = time.monotonic()
    rewards = []
    for task in tasks:
        for label, completion in (("reference", task.reference_solution), ("broken", _break(task))):
            prompt, info = env.reset(options={"task_id": task.task_id})
            feedback, reward, terminated, truncated, info = env.step(completion)
            rewards.append(reward)
            print(f"[{task.task_id}] {label:9s} reward={reward:.0f} status={info['status']}")
            if feedback:
                print("    " + feedback.rstrip("\n").replace("\n", "\n    "))
    print(f"\nmean reward {sum(rewards) / len(rewards):.2f} over {len(rewards)} episodes in {time.monotonic() - start:.1f} s")
    return 0


def _break(task) -> str:
    """A plausible wrong completion: the reference with its first `return` changed."""
    completion = task.reference_solution
    if "return " in completion:
        return completion.replace("return ", "return None and ", 1)
    return completion + "\nraise NotImplementedError('broken on purpose')\n"


def _sandbox(args: argparse.Namespace) -> int:
    """Print each protection (active or missing, and why), then run the safe self-test."""
    import warnings

    from leti_env.execution.pool import PROTECTIONS, SandboxUnavailableError, sandbox_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            report = sandbox_report(self_test=not args.no_self_test)
        except SandboxUnavailableError as exc:
            print(f"REFUSED: {exc}")
            return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, meaning in PROTECTIONS:
        value = report.get(key)
        state = value if isinstance(value, str) else ("active" if value else "MISSING")
        print(f"{key:24s} {state!s:18s} {meaning}")
    for note in report.get("notes", []):
        print(f"why: {note}")
    failed = 0
    if "self_test" in report:
        print("\nself-test (safe probes; canaries only):")
        for check in report["self_test"]:
            failed += not check["ok"]
            print(f"  {'ok  ' if check['ok'] else 'FAIL'} {check['class']:55s} {check['detail'][:160]}")
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    """Serve one environment over OpenEnv until interrupted; the sandbox workers stop with the server."""
    import logging

    try:
        import uvicorn

        from leti_env.server import make_app
    except ImportError as exc:
        print(f"error: `serve` needs OpenEnv and uvicorn ({exc}); install them with: pip install \"leti[serve]\"",
              file=sys.stderr)
        return 2
    from leti_env.execution.pool import SandboxUnavailableError

    import os
    import socket

    kwargs = json.loads(args.env_kwargs)
    token = args.token if args.token is not None else os.environ.get("LETI_SERVER_TOKEN") or None
    try:  # bound before anything starts: a port in use is one clear line, not a server that half started
        listener = socket.create_server((args.host, args.port), family=socket.AF_INET6 if ":" in args.host
                                        else socket.AF_INET, reuse_port=False)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        print(f"error: cannot listen on {args.host}:{args.port} ({reason}): pick another --port, or stop "
              "what holds it", file=sys.stderr)
        return 1
    env_id = None if args.env.lower() == "none" else args.env
    try:
        app, runner = make_app(env_id, args.split, max_turns=args.max_turns, max_concurrent=args.max_concurrent,
                               workers=args.workers, timeout=args.timeout, token=token, **kwargs)
    except SandboxUnavailableError as exc:
        listener.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pool = runner.pool()
    logging.getLogger("openenv").setLevel(logging.WARNING)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on")
    server = uvicorn.Server(config)  # stops gracefully on SIGINT/SIGTERM; the app's shutdown closes the pool
    limits = runner.limits
    execution = (f"execution for remote trainers: /execute /capacity, at most {limits.timeout:g} s and "
                 f"{limits.memory_mb} MiB per program")
    served = (f"execution only, on http://{args.host}:{args.port} ({execution})" if env_id is None else
              f"{args.env}{f' ({args.split})' if args.split else ''}, {app.state.leti_tasks} tasks, on "
              f"http://{args.host}:{args.port} (OpenEnv: WebSocket /ws, HTTP /reset /step /schema; {execution})")
    sessions = "" if env_id is None else f"; up to {args.max_concurrent} sessions, {args.max_turns} turn(s) each"
    print(f"serving {served}; {pool.num_workers} sandbox workers, {pool.protections().get('mode')} mode{sessions}; "
          f"{'a token required' if token else 'no token required'}. Ctrl-C stops it.", flush=True)
    import signal

    # Uvicorn shuts down gracefully on SIGINT and SIGTERM, then raises the signal again with the handler that
    # was there before it: Python's own turns SIGINT into KeyboardInterrupt, but the default SIGTERM action
    # killed the process (exit code 143, no "stopped" line). Both are a normal stop here.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.close()
    print("stopped; the sandbox workers are closed", flush=True)
    return 0


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: ``leti serve`` stops like an interrupted server (exit 0, workers closed)."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, prog: str = "python -m leti_env") -> int:
    parser = StrictArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("envs", help="list the registered environments and their sizes").set_defaults(func=_envs)
    demo = sub.add_parser("demo", help="run a few tasks end to end (reference and broken solutions)")
    demo.add_argument("--env", default="LETI-MBPP", help="environment id (default: LETI-MBPP)")
    demo.add_argument("--num-tasks", type=int, default=5, help="how many tasks (default: 5)")
    demo.add_argument("--env-kwargs", default="{}", help='JSON keyword arguments for gym.make, e.g. \'{"split": "train"}\'')
    demo.set_defaults(func=_demo)
    sandbox = sub.add_parser("sandbox", help="show which isolation the executor applies here, and self-test it")
    sandbox.add_argument("--no-self-test", action="store_true", help="only list the protections")
    sandbox.add_argument("--json", action="store_true", help="print the report as JSON")
    sandbox.set_defaults(func=_sandbox)
    serve = sub.add_parser("serve", help="serve an environment over OpenEnv (HTTP + WebSocket) for other trainers")
    serve.add_argument("--env", default="LETI-MBPP", help="environment id (default: LETI-MBPP), or none: execution "
                                                            "only (/execute and /capacity, for trainers on other "
                                                            "machines; no dataset needed)")
    serve.add_argument("--split", default=None, help="its split (default: the environment's own default)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; a private network's "
                            "address serves trainers on other machines: never a public one, and set a --token)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max_concurrent", "--max-concurrent", type=int, default=32,
                       help="most sessions (WebSocket connections) at once (default: 32)")
    serve.add_argument("--max_turns", "--max-turns", type=int, default=1,
                       help="attempts per episode; more than 1 gives LeTI's refinement episodes (default: 1)")
    serve.add_argument("--workers", type=int, default=None, help="sandbox workers shared by every session "
                                                                  "(default: one per core)")
    serve.add_argument("--timeout", type=float, default=None,
                       help="seconds per program (default: the environment's); also the most a remote trainer's "
                            "programs get (/execute caps every limit a client asks at this server's)")
    serve.add_argument("--token", default=None,
                       help="require 'Authorization: Bearer TOKEN' on every route but /health (default: "
                            "LETI_SERVER_TOKEN if set, else none; the variable keeps it out of the process list)")
    serve.add_argument("--env_kwargs", "--env-kwargs", default="{}",
                       help='JSON keyword arguments for the environment, e.g. \'{"data_path": "mbpp.jsonl"}\'')
    serve.add_argument("--log_level", "--log-level", default="warning", help="uvicorn's log level (default: warning)")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    from gymnasium.error import Error as GymnasiumError

    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, GymnasiumError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
