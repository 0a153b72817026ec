"""Fine-tune with TRL's SFTTrainer on the rollouts a LeTI run saved (LeTI rows, any SFT recipe).

    python examples/sft_from_rollouts.py --rollouts runs/mbpp-leti/iteration-1/rollouts \
        --model_name_or_path Salesforce/codegen-350M-mono --output_dir runs/sft-from-rollouts

Smoke run on a CPU: first `python examples/train_leti.py ... --output_dir runs/smoke` (see that file), then

    python examples/sft_from_rollouts.py --rollouts runs/smoke/iteration-1/rollouts --model_name_or_path tiny \
        --output_dir runs/sft-smoke --max_steps 2 --per_device_train_batch_size 2 --load_in_4bit false --bf16 false \
        --activation_checkpointing false
"""

from dataclasses import dataclass, field


@dataclass
class ScriptArguments:
    rollouts: str = field(metadata={"help": "A rollouts folder saved by LetiTrainer (iteration-N/rollouts)."})


def main(script_args: ScriptArguments, config) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from trainers import rollouts_to_sft_dataset
    from trainers.tiny import tiny_model_path

    path = tiny_model_path(config.model_name_or_path)  # (a LetiConfig field: TRL's ModelConfig name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    # 1. LeTI's four tokens, then room for them in the embeddings
    tokenizer.add_tokens(config.special_tokens, special_tokens=True)
    model.resize_token_embeddings(len(tokenizer))
    # 2. The saved rollouts as pre-tokenized LeTI rows (reward token, feedback, prompt, program)
    dataset = rollouts_to_sft_dataset(script_args.rollouts, config, tokenizer=tokenizer)
    # 3. Plain SFT on them
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    print(f"trained on {len(dataset)} rows; loss {trainer.state.log_history[-1].get('train_loss')}")


def make_parser():
    from trl import TrlParser

    from trainers import LetiConfig

    parser = TrlParser((ScriptArguments, LetiConfig))
    parser.set_defaults(model_name_or_path="tiny")  # `tiny` builds a tiny offline model
    return parser


if __name__ == "__main__":
    script_args, config = make_parser().parse_args_and_config()
    main(script_args, config)
