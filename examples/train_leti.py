"""LeTI on a code environment: sample, execute, fine-tune on execution feedback (QLoRA by default).

    python examples/train_leti.py --model_name_or_path Salesforce/codegen-350M-mono --env_id LETI-MBPP \
        --output_dir runs/mbpp-leti --num_iterations 10 --learning_rate 1e-5

Sampling with vLLM on a CUDA GPU (`pip install -e ".[vllm]"`; a model vLLM can load, CodeGen is not one):

    python examples/train_leti.py --model_name_or_path Qwen/Qwen2.5-Coder-0.5B --env_id LETI-MBPP \
        --output_dir runs/mbpp-leti-vllm --generation_backend vllm --vllm_gpu_memory_utilization 0.5

Trackers and the Hub: `--report_to tensorboard,trackio` logs the whole LeTI run as one tracker run (curves
at the cumulative optimizer step, LeTI's metrics and a table of sampled programs per iteration);
`--push_to_hub --hub_model_id you/leti-mbpp` uploads the model card, the model and the rollouts.

Smoke run on a CPU (tiny offline model, four tasks, seconds):

    python examples/train_leti.py --model_name_or_path tiny --max_train_tasks 4 --max_eval_tasks 2 \
        --num_iterations 1 --num_generations_per_prompt 2 --max_new_tokens 16 --eval_num_samples 2 --eval_k 1 \
        --eval_max_new_tokens 8 --load_in_4bit false --activation_checkpointing false --bf16 false \
        --report_to tensorboard,trackio --output_dir runs/smoke

The flags are `leti train`'s (one parser, `trainers.parser.make_parser`): TRL's SFTConfig and ModelConfig
flags (`--lora_r`, `--load_in_4bit`, `--dtype`, ...), LeTI's, and the tasks'. Only the defaults differ:
here MBPP's train/test splits and the tiny model.
"""

from trainers.parser import ScriptArguments


def main(script_args: ScriptArguments, config) -> None:
    from leti_env import load_tasks
    from trainers import LetiTrainer
    from trainers.tiny import tiny_model_path

    # 1. Tasks come from the environment: prompts and tests
    train_tasks = load_tasks(script_args.env_id, script_args.train_split, script_args.max_train_tasks)
    eval_tasks = load_tasks(script_args.env_id, script_args.eval_split, script_args.max_eval_tasks)
    # 2. The trainer: model, QLoRA/LoRA settings (TRL's ModelConfig fields) and LeTI's live in the config
    trainer = LetiTrainer(tiny_model_path(config.model_name_or_path), config, train_tasks=train_tasks,
                          eval_tasks=eval_tasks)
    # 3. Each iteration: sample -> execute -> LeTI rows -> SFT steps -> save -> pass@k
    metrics = trainer.train()
    print({k: v for k, v in metrics.items() if not k.startswith("rollout/status/")})


def make_parser():
    from trainers.parser import make_parser as leti_parser

    return leti_parser(model_name_or_path="tiny", env_id="LETI-MBPP", eval_split="test")


if __name__ == "__main__":
    import sys

    from trainers.machine import portable_cpu_kernels, requested_cpu_kernels

    if requested_cpu_kernels(sys.argv[1:]) == "portable":  # as `leti train`: before torch computes anything
        portable_cpu_kernels()
    script_args, config = make_parser().parse_args_and_config()
    main(script_args, config)
