"""Multi-turn GRPO for tool-calling chat models: the model calls leti's `run_tests(code)` tool and retries.

    python examples/grpo_tool_env.py --model_name_or_path Qwen/Qwen3-0.6B --output_dir runs/grpo-tools \
        --num_generations 8 --max_completion_length 1024 --per_device_train_batch_size 8 --max_turns 3

The programs run in this process's sandbox, or with `--server_url http://127.0.0.1:8000` in a `leti serve`
of the same tasks (OpenEnv: another process or machine; start it with `--max_turns` at least `--max_turns`):

    leti serve --env LETI-MBPP --split train --max_turns 3 --port 8000 &
    python examples/grpo_tool_env.py --server_url http://127.0.0.1:8000 ...

The model's chat template must support tool calls; `--chat_template qwen3` takes one of TRL's templates
(`trl/chat_templates/<name>.jinja`) for a model whose own does not. Smoke run on a CPU (tiny offline model):

    python examples/grpo_tool_env.py --model_name_or_path tiny --chat_template qwen3 --max_train_tasks 2 \
        --max_steps 1 --num_generations 4 --per_device_train_batch_size 4 --max_completion_length 24 \
        --report_to none --bf16 false --use_cpu true --output_dir runs/grpo-tools-smoke
"""

from dataclasses import dataclass, field


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(default="tiny", metadata={"help": "Model id or path; `tiny` builds a tiny offline model."})
    env_id: str = field(default="LETI-MBPP", metadata={"help": "Registered leti environment of the tasks."})
    split: str = field(default="train", metadata={"help": "Split of the tasks."})
    max_train_tasks: int | None = field(default=None, metadata={"help": "Use only the first N tasks."})
    max_turns: int = field(default=3, metadata={"help": "run_tests calls allowed per episode."})
    reward: str = field(default="final", metadata={"help": "final, best or first_try attempt's verdict."})
    chat_template: str | None = field(default=None, metadata={"help": "A TRL chat template to use (e.g. qwen3)."})
    server_url: str | None = field(default=None, metadata={"help": "Run the programs on this `leti serve` (OpenEnv)."})


def main(script_args: ScriptArguments, config) -> None:
    from pathlib import Path

    import trl
    from transformers import AutoTokenizer
    from trl import GRPOTrainer
    from trl.chat_template_utils import add_response_schema

    from leti_env import load_tasks
    from trainers.tiny import tiny_model_path
    from trainers.tool_env import code_tool_task

    model = tiny_model_path(script_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model)
    if script_args.chat_template:
        tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / f"{script_args.chat_template}.jinja").read_text()
        tokenizer = add_response_schema(tokenizer)
    # 1. Chat prompts with a task_id column, an environment whose run_tests is the tool, and its reward
    tasks = load_tasks(script_args.env_id, script_args.split, script_args.max_train_tasks)
    spec = code_tool_task(tasks, max_turns=script_args.max_turns, reward=script_args.reward,
                          server_url=script_args.server_url)
    # 2. TRL runs the tool loop and masks the tool replies out of the loss
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, args=config, train_dataset=spec.train_dataset,
                          environment_factory=spec.environment_factory, reward_funcs=spec.reward_funcs)
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-1].items()})


def make_parser():
    from trl import GRPOConfig, TrlParser

    return TrlParser((ScriptArguments, GRPOConfig))


if __name__ == "__main__":
    script_args, config = make_parser().parse_args_and_config()
    main(script_args, config)
