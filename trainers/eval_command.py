"""``leti eval``: pass@k of a model on an environment, through the trainer's own evaluation path, with
the samples written where a person or evalplus can read and re-score them.

    leti eval --model runs/x/iteration-6/model --env LETI-MBPP --split test --num_samples 16 --k 1 10
    leti eval --config eval.yaml                     # the same flags, as YAML keys
    leti eval --samples runs/x/iteration-6/eval-LETI-MBPP-test/samples.jsonl --env LETI-MBPP --split test

The output folder (``--output_dir``; default: beside the model when it is a run's ``iteration-N/model``,
else ``leti-eval/<env>-<split>``) gets ``samples.jsonl`` (evalplus's format: ``task_id``, ``solution`` is
prompt + completion, plus ``completion``, ``status``, ``feedback``, ``passed``) and ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from .parser import nearest, strict_argument_parser


def make_eval_parser() -> argparse.ArgumentParser:
    parser = strict_argument_parser(prog="leti eval", description="pass@k of a model (or a saved LeTI adapter) on an "
                                     "environment; writes samples.jsonl (evalplus format) and results.json")
    add = parser.add_argument
    add("--config", default=None, help="a YAML file whose keys are these flags (the command line overrides it)")
    add("--model", default=None, help="model id or path, or an iteration-N/model folder of a LeTI run")
    add("--samples", default=None, help="re-score a samples.jsonl (evalplus format) instead of sampling: no model")
    add("--env", default="LETI-MBPP", help="environment id (default: LETI-MBPP)")
    add("--split", default=None, help="split of the environment's tasks (e.g. test)")
    add("--env_kwargs", default=None, help="options of the environment, as JSON (e.g. '{\"test_order\": \"hidden_first\"}')")
    add("--max_tasks", type=int, default=None)
    add("--num_samples", type=int, default=16, help="samples per task (the paper: 16 on MBPP)")
    add("--k", type=int, nargs="+", default=[1], help="k values of pass@k")
    add("--temperature", type=float, default=0.1)
    add("--top_p", type=float, default=1.0)
    add("--max_new_tokens", type=int, default=384)
    add("--condition", choices=["good", "none", "bad"], default="good", help="reward-token prefix")
    add("--guidance_weight", type=float, default=0.0,
        help="reward-token guidance w under --condition good: log p(good) + w (log p(good) - log p(bad)) (0: off)")
    add("--max_turns", type=int, choices=[1, 2], default=1,
        help="2: one refinement turn after each failed attempt, with its feedback as input (turn2/pass@k, repair_rate)")
    add("--seed", type=int, default=0, help="sampling seed (each sample's draws are keyed by it)")
    add("--timeout", type=float, default=None,
        help="seconds per program (default: the environment's: 5 for MBPP/HumanEval, 30 for EAE, 1 for Arith)")
    add("--execution_servers", nargs="+", default=None, metavar="URL",
        help="`leti serve` URLs that execute the programs instead of this machine (e.g. http://10.0.0.5:8000; "
             "the servers' token, if any, from LETI_SERVER_TOKEN)")
    add("--batch_size", type=int, default=32, help="sequences per generate call (halved automatically on out-of-memory)")
    add("--generation_backend", choices=["hf", "vllm"], default="hf", help="hf (transformers) or vllm (CUDA)")
    add("--vllm_gpu_memory_utilization", type=float, default=0.5, help="GPU memory share of the vLLM engine")
    add("--output_dir", default=None, help="where samples.jsonl and results.json go")
    add("--cpu_kernels", choices=["portable", "native"], default="portable",
        help="CPU kernels, as in `leti train`: portable (AVX2 width: the same bits on CPUs with and without "
             "AVX-512) or native")
    add("--verbose", action="store_true", help="also show the libraries' own logging and warnings")
    return parser


def parse_eval_args(argv: list[str]) -> argparse.Namespace:
    parser = make_eval_parser()
    args = parser.parse_args(argv)
    if args.config:
        import yaml

        try:
            recipe = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            parser.error(f"cannot read --config {args.config}: {exc}")
        known = {a.dest for a in parser._actions} - {"help", "config"}
        unknown = sorted(set(recipe) - known) if isinstance(recipe, dict) else ["<not a mapping>"]
        if unknown:
            parser.error(f"{args.config}: unknown key {unknown[0]!r}{nearest(str(unknown[0]), known)} (the keys are the "
                         "flags of `leti eval --help`)")
        parser.set_defaults(**recipe)
        args = parser.parse_args(argv)
    _check(parser, args)
    return args


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.model is None) == (args.samples is None):
        parser.error("give --model (sample and score) or --samples (re-score a samples.jsonl), not both")
    if args.guidance_weight < 0 or (args.guidance_weight > 0 and args.condition != "good"):
        parser.error(f"--guidance_weight must be >= 0, and guides --condition good only; got {args.guidance_weight} "
                     f"with --condition {args.condition}")
    if args.max_turns == 2 and args.samples is not None:
        parser.error("--max_turns 2 needs --model: the refinement turn samples new attempts")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1; got {args.batch_size}")
    if args.timeout is not None and not args.timeout > 0:
        parser.error(f"--timeout must be positive; got {args.timeout}")
    from leti_env.execution.remote import parse_servers

    try:
        args.execution_servers = parse_servers(args.execution_servers)
    except (TypeError, ValueError) as exc:
        parser.error(f"--execution_servers: {exc}")
    bad_k = [k for k in args.k if k > args.num_samples]
    if bad_k and args.samples is None:
        parser.error(f"pass@k needs --num_samples >= k; got --num_samples {args.num_samples} and k={bad_k}")


def run_eval(args: argparse.Namespace) -> dict:
    """Sample (or read) the completions, score them, write the folder; returns ``results.json``'s content."""
    from leti_env import TaskRunner, load_env

    from .parser import parse_env_kwargs

    env = load_env(args.env, args.split, **parse_env_kwargs(args.env_kwargs))
    # the environment's own limits, unless --timeout says otherwise; here, or on the --execution_servers
    runner = TaskRunner(env.limits.override(timeout=args.timeout), servers=args.execution_servers)
    runner.check_servers()  # a stopped fleet fails now, not after sampling
    samples: list[dict] = []

    def record(variant, task, completion, result):
        if variant == "raw":
            samples.append({"task_id": evalplus_task_id(task.task_id), "solution": task.prompt + completion, "completion": completion,
                            "status": result.status, "feedback": result.feedback, "passed": result.passed})

    if args.samples:
        tasks, report = _rescore(args, env, runner, record)
    else:
        tasks, report = _sample_and_score(args, env, runner, record)
    results = {"env": args.env, "split": args.split, "tasks": len(tasks), "split_tasks": len(env.tasks), **report,
               "settings": {**{k: v for k, v in vars(args).items() if k not in ("verbose", "output_dir", "config")},
                            "limits": dataclasses.asdict(runner.limits)}}  # what the programs ran under
    folder = _output_folder(args)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    _write_atomic(folder / "results.json", json.dumps(results, indent=2))
    results["output_dir"] = str(folder)
    return results


def _sample_and_score(args, env, runner, record):
    from .rollouts import RolloutCollector
    from .run_folder import load_model, prompt_format_of_model
    from .sampling import SamplingParams, TransformersSampler
    from .sequences import inference_prompt

    model, tokenizer = load_model(args.model)
    tasks = env.tasks[: args.max_tasks]
    # the prompt starts as the run's training rows did (its reward tokens, the lead pad token or not)
    prompt_format = prompt_format_of_model(args.model)
    prompts = [inference_prompt(t.prompt, prompt_format, args.condition, tokenizer) for t in tasks]
    if args.generation_backend == "vllm":
        import tempfile

        from .vllm_backend import VLLMSampler, check_vllm_usable

        check_vllm_usable()
        sampler = VLLMSampler(Path(tempfile.mkdtemp(prefix="leti-eval-vllm-")) / "model", seed=args.seed,
                              gpu_memory_utilization=args.vllm_gpu_memory_utilization)
    else:
        sampler = TransformersSampler(args.batch_size)
    # the trainer's own evaluation path: same sampler, same executor, same report
    collector = RolloutCollector(sampler, runner)
    try:
        negative = [inference_prompt(t.prompt, prompt_format, "bad", tokenizer) for t in tasks] \
            if args.guidance_weight else None
        report = collector.evaluate(model, tokenizer, tasks, prompts,
                                    SamplingParams(args.num_samples, args.max_new_tokens, args.temperature, args.top_p,
                                                   guidance_weight=args.guidance_weight),
                                    args.k, seed=args.seed, label=f"evaluating {args.env}", record=record,
                                    max_turns=args.max_turns, negative_prompts=negative)
    finally:
        sampler.close()
    return tasks, report


def evalplus_task_id(task_id: str) -> str:
    """The id evalplus gives a task: ``Mbpp/11`` for leti's ``MBPP/11`` (HumanEval's ids are the same in
    both), so that a ``samples.jsonl`` of ``leti eval`` is one that evalplus reads, and back."""
    return "Mbpp/" + task_id.removeprefix("MBPP/") if task_id.startswith("MBPP/") else task_id


def _rescore(args, env, runner, record):
    """Completions from a samples file (``completion``, or ``solution`` minus the task's prompt). Task ids
    in either spelling (leti's ``MBPP/11``, evalplus's ``Mbpp/11``); a file that covers only some of the
    split's tasks is scored on those, with a warning."""
    from .rollouts import pass_at_k_report

    by_id = {key: t for t in env.tasks for key in {t.task_id, evalplus_task_id(t.task_id)}}
    completions: dict[str, list[str]] = {}
    path = Path(args.samples)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read --samples {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            task = by_id[row["task_id"]]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}, line {number}: expected a JSON object whose task_id is one of {args.env}'s "
                             f"(e.g. {next(iter(by_id))!r}), with a `completion` or `solution`. Check --env and "
                             "--split.") from None
        completion = row.get("completion")
        if completion is None:
            solution = row.get("solution", "")
            completion = solution.removeprefix(task.prompt) if solution.startswith(task.prompt) else "\n" + solution
        completions.setdefault(task.task_id, []).append(completion)
    tasks = [t for t in env.tasks if t.task_id in completions][: args.max_tasks]
    expected = len(env.tasks[: args.max_tasks])
    if len(tasks) < expected:
        print(f"leti eval: warning: {path} has samples for {len(tasks)} of the {expected} tasks of {args.env} "
              f"{args.split}; pass@k is over those {len(tasks)} (\"tasks\" in results.json)", file=sys.stderr)
    short = [t.task_id for t in tasks if len(completions[t.task_id]) < max(args.k)]
    if short:
        raise ValueError(f"pass@{max(args.k)} needs at least {max(args.k)} samples per task; {len(short)} tasks have "
                         f"fewer (e.g. {short[0]}). Lower --k.")
    report = pass_at_k_report(tasks, [completions[t.task_id] for t in tasks], args.k, runner.run, record)
    return tasks, report


def _output_folder(args) -> Path:
    if args.output_dir:
        return Path(args.output_dir)
    name = f"eval-{args.env}" + (f"-{args.split}" if args.split not in (None, "none") else "")
    source = Path(args.samples or args.model)
    if args.samples:
        return source.parent / "rescored"  # never over the file it reads
    if source.parent.name.startswith("iteration-") and source.exists():
        return source.parent / name  # beside the run's model: iteration-N/eval-<env>-<split>
    return Path("leti-eval") / name.removeprefix("eval-")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    from .console import SETUP_ERRORS, quiet_unless, setup_failed

    args = parse_eval_args(argv)
    if args.cpu_kernels == "portable":  # before torch computes anything: as the run being scored computed
        from .machine import portable_cpu_kernels

        portable_cpu_kernels()
    quiet_unless(args.verbose)
    try:
        results = run_eval(args)
    except SETUP_ERRORS as exc:
        return setup_failed("eval", exc)
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=2), file=sys.stdout)
    return 0
