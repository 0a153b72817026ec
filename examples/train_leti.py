"""LeTI on a code environment: sample, execute, fine-tune on execution feedback (QLoRA by default).

    python examples/train_leti.py --model_name_or_path Salesforce/codegen-350M-mono --env_id LETI-MBPP \
        --output_dir runs/mbpp-leti --num_iterations 10 --learning_rate 1e-5

Sampling with vLLM on a CUDA GPU (`pip install -e ".[vllm]"`; a model vLLM can load, CodeGen is not one):

    python examples/train_leti.py --model_name_or_path Qwen/Qwen2.5-Coder-0.5B --env_id LETI-MBPP \
        --output_dir runs/mbpp-leti-vllm --generation_backend vllm --vllm_gpu_memory_utilization 0.5

Smoke run on a CPU (tiny offline model, four tasks, seconds):

    python examples/train_leti.py --model_name_or_path tiny --max_train_tasks 4 --max_eval_tasks 2 \
        --num_iterations 1 --num_generations_per_prompt 2 --max_new_tokens 16 --eval_num_samples 2 --eval_k 1 \
        --load_in_4bit false --output_dir runs/smoke
"""

from dataclasses import dataclass, field


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(default="tiny", metadata={"help": "Model id or path; `tiny` builds a tiny offline model."})
    env_id: str = field(default="LETI-MBPP", metadata={"help": "Registered leti environment of the tasks."})
    train_split: str = field(default="train", metadata={"help": "Split of the training tasks (MBPP: train; `none` for "
                                                               "environments without splits, e.g. LETI-HumanEval)."})
    eval_split: str = field(default="test", metadata={"help": "Split of the evaluation tasks (MBPP: test; `none`: no splits)."})
    max_train_tasks: int | None = field(default=None, metadata={"help": "Use only the first N training tasks."})
    max_eval_tasks: int | None = field(default=None, metadata={"help": "Use only the first N evaluation tasks."})


def main(script_args: ScriptArguments, config) -> None:
    from leti_env import load_tasks
    from trainers import LetiTrainer
    from trainers.tiny import tiny_model_path

    # 1. Tasks come from the environment: prompts and tests
    train_tasks = load_tasks(script_args.env_id, script_args.train_split, script_args.max_train_tasks)
    eval_tasks = load_tasks(script_args.env_id, script_args.eval_split, script_args.max_eval_tasks)
    # 2. The trainer: QLoRA/LoRA settings live in the config (load_in_4bit, lora_r, ...)
    trainer = LetiTrainer(tiny_model_path(script_args.model_name_or_path), config, train_tasks=train_tasks,
                          eval_tasks=eval_tasks)
    # 3. Each iteration: sample -> execute -> LeTI rows -> SFT steps -> save -> pass@k
    metrics = trainer.train()
    print({k: v for k, v in metrics.items() if not k.startswith("rollout/status/")})


def make_parser():
    from trl import TrlParser

    from trainers import LetiConfig

    return TrlParser((ScriptArguments, LetiConfig))


if __name__ == "__main__":
    script_args, config = make_parser().parse_args_and_config()
    main(script_args, config)
