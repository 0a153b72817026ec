"""GRPO with leti's sandboxed execution reward: TRL's GRPOTrainer on MBPP tasks.

    python examples/grpo_execution_reward.py --model_name_or_path Qwen/Qwen2.5-Coder-0.5B --output_dir runs/grpo \
        --num_generations 8 --max_completion_length 256 --per_device_train_batch_size 8

Smoke run on a CPU (tiny offline model):

    python examples/grpo_execution_reward.py --model_name_or_path tiny --max_train_tasks 4 --max_steps 1 \
        --num_generations 4 --per_device_train_batch_size 4 --max_completion_length 16 --report_to none \
        --bf16 false --use_cpu true --output_dir runs/grpo-smoke
"""

from dataclasses import dataclass, field


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(default="tiny", metadata={"help": "Model id or path; `tiny` builds a tiny offline model."})
    max_train_tasks: int | None = field(default=None, metadata={"help": "Use only the first N MBPP training tasks."})
    execution_servers: list[str] | None = field(default=None, metadata={
        "help": "`leti serve` URLs that execute the completions instead of this machine (token: LETI_SERVER_TOKEN)."})


def main(script_args: ScriptArguments, config) -> None:
    from trl import GRPOTrainer

    import leti_env
    from trainers import ExecutionReward, tasks_to_dataset
    from trainers.tiny import tiny_model_path

    # 1. A dataset of prompts with a task_id column: ExecutionReward looks the tests up by id
    tasks = leti_env.load_tasks("LETI-MBPP", "train", script_args.max_train_tasks)
    dataset = tasks_to_dataset(tasks)
    # 2. The reward: 1.0 if the completion passes the task's tests in the sandbox (under the environment's
    #    limits, which the tasks carry: LETI-MBPP's 5 s), here or on --execution_servers; feedback is logged
    reward = ExecutionReward(tasks, servers=script_args.execution_servers)
    # 3. TRL's own trainer does the rest
    trainer = GRPOTrainer(model=tiny_model_path(script_args.model_name_or_path), reward_funcs=[reward], args=config,
                          train_dataset=dataset)
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-1].items()})


def make_parser():
    from trl import GRPOConfig, TrlParser

    return TrlParser((ScriptArguments, GRPOConfig))


if __name__ == "__main__":
    script_args, config = make_parser().parse_args_and_config()
    main(script_args, config)
