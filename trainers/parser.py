"""The one command-line parser of LeTI training: ``leti train`` and ``examples/train_leti.py`` both use
``make_parser()``, as TRL's scripts share theirs. Its flags are TRL's (``SFTConfig`` and ``ModelConfig``:
a TRL user's flags and YAML work unchanged), LeTI's (``LetiConfig``) and the script's (``ScriptArguments``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from leti_env.argparsing import StrictErrors, nearest, strict_argument_parser  # noqa: F401 (leti's one copy)


@dataclass
class ScriptArguments:
    """What a LeTI training script needs besides the config: the tasks, and the console."""

    env_id: str = field(default="LETI-Arith", metadata={"help": "Registered leti environment of the tasks."})
    train_split: str | None = field(default="train", metadata={"help": "Split of the training tasks (`none` for "
                                                                     "environments without splits, e.g. LETI-HumanEval)."})
    eval_split: str | None = field(default="heldout", metadata={"help": "Split of the evaluation tasks (`none`: no "
                                                                      "evaluation in `leti train`)."})
    env_kwargs: str | None = field(default=None, metadata={
        "help": "Options of the environment, as JSON (a mapping in a YAML --config), for both splits: e.g. "
                "'{\"test_order\": \"hidden_first\"}' for LETI-Arith, '{\"data_path\": \"mbpp.jsonl\"}' for LETI-MBPP."})
    max_train_tasks: int | None = field(default=None, metadata={"help": "Use only the first N training tasks."})
    max_eval_tasks: int | None = field(default=None, metadata={"help": "Use only the first N evaluation tasks."})
    default_model_seed: int = field(default=0, metadata={"help": "Seed of the built-in default model "
                                                                 "(`--model_name_or_path default`)."})
    default_model_size: str = field(default="small", metadata={"help": "Size of the built-in default model: small "
                                                                       "(~0.9 M parameters, the default) or medium (~5 M)."})
    default_model_corpus: str = field(default="programs", metadata={
        "help": "Pre-training corpus of the built-in default model: programs (the default) or feedback (also wrong "
                "programs followed by their execution feedback, so that the model can read feedback).",
        "choices": ["programs", "feedback"]})
    cpu_kernels: str = field(default="portable", metadata={
        "help": "CPU kernels: portable (ATen and MKL at AVX2 width on any x86 CPU that has it, so that CPUs with "
                "and without AVX-512 compute the same bits; set before torch computes, and only where "
                "ATEN_CPU_CAPABILITY / MKL_CBWR are unset) or native (the widest this CPU has). Read from the "
                "command line or --config before torch is imported (trainers.machine.requested_cpu_kernels).",
        "choices": ["portable", "native"]})
    verbose: bool = field(default=False, metadata={"help": "Also show transformers', datasets' and bitsandbytes' own "
                                                           "logging, progress bars and deprecation notices."})

    def environment_options(self) -> dict[str, Any]:
        """``env_kwargs`` as a dict (from JSON on the command line, or a YAML mapping)."""
        return parse_env_kwargs(self.env_kwargs)


def parse_env_kwargs(value: Any) -> dict[str, Any]:
    """An environment's options from ``--env_kwargs``: a JSON object, or a mapping already (YAML)."""
    import json

    if value in (None, ""):
        return {}
    if isinstance(value, dict):
        return dict(value)
    try:
        options = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--env_kwargs must be a JSON object such as '{{\"test_order\": \"hidden_first\"}}', "
                         f"got {value!r} ({exc.msg})") from None
    if not isinstance(options, dict):
        raise ValueError(f"--env_kwargs must be a JSON object (a mapping of option to value), got {value!r}")
    return options


def make_parser(prog: str = "leti train", **defaults: Any):
    """A ``TrlParser`` over ``(ScriptArguments, LetiConfig)``; ``defaults`` replace field defaults (a YAML
    ``--config`` and the command line still override them). Old field names fail with the new name, a
    mistyped one (on the command line or in the YAML) with the nearest valid one."""
    from trl import TrlParser

    from .leti_config import LetiConfig, refuse_renamed

    class LetiParser(StrictErrors, TrlParser):
        def parse_args_and_config(self, args: Iterable[str] | None = None, **kwargs):
            import sys

            import yaml

            args = list(sys.argv[1:] if args is None else args)
            refuse_renamed([a[2:].split("=")[0] for a in args if a.startswith("--")], "command line: ")
            if "--config" in args and args.index("--config") + 1 < len(args):
                path = args[args.index("--config") + 1]
                try:
                    with open(path) as f:
                        recipe = yaml.safe_load(f)
                except OSError as exc:
                    raise ValueError(f"cannot read the --config file: {exc}") from None
                if isinstance(recipe, dict):
                    refuse_renamed(recipe, f"{path}: ")
                    known = {action.dest for action in self._actions} | {"config"}
                    for key in recipe:
                        if key not in known:
                            raise ValueError(f"{path}: unknown key {key!r}{nearest(str(key), known)}")
            try:
                return super().parse_args_and_config(args, **kwargs)
            except ValueError as exc:  # HfArgumentParser's word for what argparse calls unrecognized
                if "not used by the HfArgumentParser: " not in str(exc):
                    raise
                import ast

                self.error("unrecognized arguments: " + " ".join(ast.literal_eval(str(exc).split("HfArgumentParser: ", 1)[1])))

    parser = LetiParser((ScriptArguments, LetiConfig), prog=prog)
    if defaults:
        parser.set_defaults(**defaults)
    return parser
