"""Multi-turn GRPO on leti's feedback, for base models as in LeTI: program, feedback, program again.

The interpreter's feedback is appended as Python comments (and the prompt again) after a failed attempt;
the model tries again, up to --max_turns times. The feedback tokens carry no loss (TRL's env_mask).

    python examples/grpo_refinement.py --model_name_or_path Qwen/Qwen2.5-Coder-0.5B --output_dir runs/grpo-refine \
        --num_generations 8 --max_completion_length 512 --per_device_train_batch_size 8 --max_turns 2

Add --use_vllm true --vllm_mode colocate (a CUDA machine with vLLM) to sample every turn with TRL's vLLM engine.

Smoke run on a CPU (tiny offline model, LETI-Arith tasks):

    python examples/grpo_refinement.py --model_name_or_path tiny --env_id LETI-Arith --max_train_tasks 2 \
        --max_steps 1 --num_generations 4 --per_device_train_batch_size 4 --max_completion_length 96 \
        --max_new_tokens 12 --report_to none --bf16 false --use_cpu true --output_dir runs/grpo-refine-smoke
"""

import os
from dataclasses import dataclass, field

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.16


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(default="tiny", metadata={"help": "Model id or path; `tiny` builds a tiny offline model."})
    env_id: str = field(default="LETI-MBPP", metadata={"help": "Registered leti environment of the tasks."})
    split: str = field(default="train", metadata={"help": "Split of the tasks."})
    max_train_tasks: int | None = field(default=None, metadata={"help": "Use only the first N tasks."})
    max_turns: int = field(default=2, metadata={"help": "Attempts per episode (the first, plus retries after feedback)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Tokens per attempt (default: "
                                                                      "max_completion_length // max_turns)."})
    reward: str = field(default="final", metadata={"help": "final, best or first_try attempt's verdict."})
    execution_servers: list[str] | None = field(default=None, metadata={
        "help": "`leti serve` URLs that execute the attempts instead of this machine (token: LETI_SERVER_TOKEN)."})


def main(script_args: ScriptArguments, config) -> None:
    from trl import GRPOTrainer

    from leti_env import load_tasks
    from trainers import tasks_to_dataset
    from trainers.grpo import RolloutReward, refinement_rollout
    from trainers.tiny import tiny_model_path

    # 1. Plain-text prompts with a task_id column, from the environment
    tasks = load_tasks(script_args.env_id, script_args.split, script_args.max_train_tasks)
    # 2. The rollout: attempt, sandboxed verdict, feedback as comments, attempt again
    rollout = refinement_rollout(tasks, max_turns=script_args.max_turns, reward=script_args.reward,
                                 max_new_tokens=script_args.max_new_tokens, servers=script_args.execution_servers)
    # 3. TRL's GRPO on those episodes; the reward is the episode's verdict
    trainer = GRPOTrainer(model=tiny_model_path(script_args.model_name_or_path), args=config,
                          train_dataset=tasks_to_dataset(tasks), rollout_func=rollout, reward_funcs=[RolloutReward()])
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-1].items()})


def make_parser():
    from trl import GRPOConfig, TrlParser

    return TrlParser((ScriptArguments, GRPOConfig))


if __name__ == "__main__":
    script_args, config = make_parser().parse_args_and_config()
    main(script_args, config)
