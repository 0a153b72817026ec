"""trainers: LeTI on TRL (``LetiConfig``, ``LetiTrainer``) and adapters for TRL's own trainers.

Imports are lazy: ``import trainers`` does not import torch or trl until a name is used.
"""

_EXPORTS = {
    "LetiConfig": "leti_config",
    "LetiTrainer": "leti_trainer",
    "Rollout": "rollouts",
    "RolloutCollector": "rollouts",
    "Sampler": "sampling",
    "SamplingParams": "sampling",
    "TransformersSampler": "sampling",
    "make_parser": "parser",
    "load_rollouts": "rollouts",
    "save_rollouts": "rollouts",
    "training_text": "sequences",
    "ExecutionReward": "rewards",
    "rollouts_to_sft_dataset": "rewards",
    "tasks_to_dataset": "rewards",
    "refinement_rollout": "grpo",
    "RolloutReward": "grpo",
    "code_tool_task": "tool_env",
    "CodeToolEnv": "tool_env",
    "generate": "sampling",
    "export_merged_model": "export",
    "VLLMSampler": "vllm_backend",
    "build_tiny_model": "tiny",
    "keep_4bit_weights_trainable": "model_setup",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'trainers' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
