"""The ``leti`` command: ``leti train``, ``leti eval``, ``leti export``, ``leti push``, ``leti serve``, ``leti envs``.

    leti train                                   # the built-in default: learns on 2 CPU cores in about 6 minutes
    leti train --config examples/configs/codegen-350M-mbpp.yaml --output_dir runs/mbpp
    leti eval --model runs/leti-default/iteration-6/model --env LETI-Arith --split heldout   # + samples.jsonl
    leti export --model runs/leti-default/iteration-6/model --output merged/   # one plain checkpoint
    leti push --run runs/leti-default --repo you/leti-arith   # card, model, rollouts to the Hub (--iterations all)
    leti serve --env LETI-MBPP --split test --port 8000   # OpenEnv server (pip install "leti[serve]")
    leti envs
    leti build-default-model --size small        # the shipped default model's recipe, run here (~2 minutes)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .console import SETUP_ERRORS, quiet_unless, setup_failed
from .parser import strict_argument_parser

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "default.yaml"


def _tasks(env_id: str, split: str | None, limit: int | None, env_kwargs: dict | None = None):
    from leti_env import load_tasks

    return load_tasks(env_id, split, limit, **(env_kwargs or {}))


def _model_path(name: str, seed: int, size: str = "small", corpus: str = "programs") -> str:
    if name == "default":
        from .default_model import default_model_path

        return default_model_path(seed=seed, size=size, corpus=corpus)
    from .tiny import tiny_model_path

    return tiny_model_path(name)


def train(argv: list[str]) -> int:
    from .machine import portable_cpu_kernels, requested_cpu_kernels

    if requested_cpu_kernels(argv) == "portable":  # before anything imports torch
        portable_cpu_kernels()
    quiet_unless("--verbose" in argv or "--verbose=true" in argv)  # before TrlParser imports the libraries
    from .distributed import Processes
    from .leti_trainer import LetiTrainer
    from .parser import make_parser
    from .report import write_report

    if "--config" not in argv:  # no recipe given: the built-in default, with any overrides on top
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    try:  # set-up: a bad value or a missing dependency is reported as one line naming the fix
        script, config = make_parser(model_name_or_path="default").parse_args_and_config(argv)
        options = script.environment_options()
        train_tasks = _tasks(script.env_id, script.train_split, script.max_train_tasks, options)
        eval_tasks = _tasks(script.env_id, script.eval_split, script.max_eval_tasks, options) \
            if script.eval_split not in (None, "none") else None
        with Processes().main_first():  # under a multi-process launcher, the main process builds a missing model
            model_path = _model_path(config.model_name_or_path or "default", script.default_model_seed,
                                     script.default_model_size, script.default_model_corpus)
        trainer = LetiTrainer(model_path, config, train_tasks=train_tasks, eval_tasks=eval_tasks)
        trainer.run_info = {"env_id": script.env_id, "env_kwargs": options, "train_split": script.train_split,
                            "eval_split": script.eval_split}
    except SETUP_ERRORS as exc:
        return setup_failed("train", exc)
    from .hub import HubError

    try:
        trainer.train()
    except HubError as exc:  # push_to_hub: the run is complete on disk, only the upload failed
        print(f"leti train: error: the run in {config.output_dir} is complete, but pushing it failed: {exc}; then "
              f"`leti push --run {config.output_dir} --repo <you/name>`", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume from {config.output_dir} "
              f"(completed iterations: {sorted(trainer.completed_iterations())})", file=sys.stderr)
        return 130
    if trainer.distributed.is_main:
        plot, report = write_report(config.output_dir, f"LeTI on {script.env_id}")
        print(f"run folder: {config.output_dir}\n  {plot}\n  {report}")
    return 0


def evaluate(argv: list[str]) -> int:
    from .eval_command import main as eval_main

    return eval_main(argv)


def export(argv: list[str]) -> int:
    parser = strict_argument_parser(prog="leti export", description="write a LeTI adapter merged into its base model "
                                     "as one transformers checkpoint (loads with from_pretrained, vLLM, TGI, ...)")
    parser.add_argument("--model", required=True, help="an iteration-N/model folder of a LeTI run (or any model path)")
    parser.add_argument("--output", required=True, help="folder to write (replaced if it exists)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weight dtype (default: the base model's)")
    parser.add_argument("--verbose", action="store_true", help="also show the libraries' own logging and warnings")
    args = parser.parse_args(argv)
    quiet_unless(args.verbose)
    if not Path(args.model).exists():
        parser.error(f"--model {args.model!r} does not exist (expected a LeTI run's iteration-N/model folder)")
    from .export import export_merged_model

    from .run_folder import load_model

    try:
        model, tokenizer = load_model(args.model)
    except SETUP_ERRORS as exc:
        return setup_failed("export", exc)
    folder = export_merged_model(model, tokenizer, args.output, dtype=args.dtype)
    print(f"merged checkpoint: {folder}")
    return 0


def envs(argv: list[str]) -> int:
    from leti_env.__main__ import main as leti_env_main

    return leti_env_main(["envs", *argv])


def push(argv: list[str]) -> int:
    """Upload a finished (or interrupted) run folder: what ``push_to_hub=True`` does at the end of training.

    The token is ``HF_TOKEN``'s or the one ``hf auth login`` saved (not a flag: it would land in the shell's
    history). A Hub that cannot be reached or refuses the token is reported in one line with the fix."""
    from .hub import HubError, push_run, write_model_card
    from .run_folder import is_run_folder

    parser = strict_argument_parser(prog="leti push", description=push.__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the run folder (leti train's --output_dir)")
    parser.add_argument("--repo", required=True, help="the model repo, e.g. you/leti-mbpp (the rollouts go to <repo>-rollouts)")
    parser.add_argument("--iterations", choices=("last", "all"), default="last",
                        help="the last iteration's model at the repo's root, or also every iteration's in iteration-N/")
    parser.add_argument("--private", action="store_true", help="create the repos private")
    parser.add_argument("--revision", default=None, help="the branch to push to, created if missing (default: main)")
    parser.add_argument("--license", default=None, help="the cards' license (default: the run's hub_license, else "
                        "apache-2.0; set the base model's when it is another)")
    args = parser.parse_args(argv)
    if not is_run_folder(args.run):
        print(f"leti push: error: {args.run} is not a leti run folder (no config.json): pass leti train's --output_dir",
              file=sys.stderr)
        return 2
    try:
        # the run folder's card names the repo it is pushed to, and its rollouts dataset
        rollouts = any(Path(args.run).glob("iteration-*/rollouts/dataset_info.json"))
        write_model_card(args.run, args.repo, dataset_name=f"{args.repo}-rollouts" if rollouts else None,
                         license=args.license)
        uploaded = push_run(args.run, args.repo, iterations=args.iterations, private=args.private or None,
                            revision=args.revision, license=args.license)
    except (ValueError, HubError) as exc:
        if os.environ.get("LETI_TRACEBACK"):
            raise
        print(f"leti push: error: {exc}", file=sys.stderr)
        return 2
    for repo, files in uploaded.items():
        if files:
            print(f"{repo}: {len(files)} files")
    return 0


def build_default_model(argv: list[str]) -> int:
    """Run the default model's recipe here and say whether the result is the shipped model, bit for bit."""
    from .default_model import CORPORA, SHIPPED, SIZES, build_default_model as build, cached_model_folder, file_sha256, \
        shipped_name

    parser = strict_argument_parser(prog="leti build-default-model", description=build_default_model.__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="small (~0.9 M parameters) or medium (~5 M)")
    parser.add_argument("--corpus", choices=CORPORA, default="programs", help="pre-training corpus: programs, or "
                        "feedback (also wrong programs followed by their execution feedback)")
    parser.add_argument("--seed", type=int, default=0, help="the recipe's seed (the shipped models are seed 0)")
    parser.add_argument("--output_dir", default=None, help="where to write it (default: the cache, where "
                        "`leti train --default_model_seed SEED --default_model_corpus CORPUS` finds it)")
    parser.add_argument("--pretrain_steps", type=int, default=None, help="fewer pre-training steps than the recipe's "
                        "800, for a quick look (the result is then not the shipped model)")
    args = parser.parse_args(argv)
    folder = Path(args.output_dir) if args.output_dir else cached_model_folder(args.seed, args.size, args.corpus)
    quiet_unless(False)
    build(folder, seed=args.seed, size=args.size, corpus=args.corpus,
          **({"pretrain_steps": args.pretrain_steps} if args.pretrain_steps else {}))
    name = shipped_name(args.size, args.corpus)
    if args.seed != 0 or name not in SHIPPED:
        print(f"built {folder} (seed {args.seed} of {name}: no shipped model to compare with)")
        return 0
    shipped = SHIPPED[name]
    differ = [name for name in ("model.safetensors", "tokenizer.json") if file_sha256(folder / name) != shipped[name]]
    if differ:
        print(f"built {folder}: differs from the shipped {name} model ({', '.join(differ)}): this CPU's "
              f"kernels round differently; the shipped model is what `leti train` uses")
    else:
        print(f"built {folder}: bit-identical to the shipped {name} model "
              f"(model.safetensors sha256 {shipped['model.safetensors'][:12]})")
    return 0


def serve(argv: list[str]) -> int:
    from leti_env.__main__ import main as leti_env_main

    return leti_env_main(["serve", *argv], prog="leti")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train, "eval": evaluate, "export": export, "push": push, "serve": serve, "envs": envs,
                "build-default-model": build_default_model}
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv[0] not in commands:
        from .parser import nearest

        print(f"leti: unknown command {argv[0]!r}{nearest(argv[0], commands)} (commands: {', '.join(commands)}; "
              "`leti --help` describes them)", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
