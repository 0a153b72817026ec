"""Configuration of the LeTI trainer (``LetiTrainer``).

About 400 lines, most of them the documentation of each field (TRL's style: one docstring entry and one
help string per field), kept next to the field it describes."""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

from trl import ModelConfig, SFTConfig

from .sequences import PromptFormat

if typing.TYPE_CHECKING:
    from leti_env import ExecutionLimits

# Fields whose names changed to TRL's ModelConfig names, refused with the new name for one release (0.2)
RENAMED_FIELDS = {"bnb_4bit_use_double_quant": "use_bnb_nested_quant", "bnb_4bit_compute_dtype": "dtype"}


def refuse_renamed(names, where: str = "") -> None:
    """A one-line error naming the new field for any old field name in ``names``."""
    old = [name for name in names if name in RENAMED_FIELDS]
    if old:
        moves = ", ".join(f"`{name}` is now `{RENAMED_FIELDS[name]}`" for name in old)
        raise ValueError(f"{where}{moves} (the name TRL's ModelConfig uses, so TRL's flags and YAML work unchanged). "
                         "Rename it; the value means the same, and `dtype` also sets the dtype the model loads in.")


@dataclass
class LetiConfig(SFTConfig, ModelConfig):
    r"""
    Configuration for [`LetiTrainer`]: TRL's [`~trl.SFTConfig`] (training) and [`~trl.ModelConfig`] (the model,
    LoRA and quantization: a TRL script's flags and YAML work unchanged), with LeTI's fields and defaults.
    Only LeTI's own fields and changed defaults are listed; see those two classes for the rest. Defaults
    follow the authors' code (``docs/recipe.md``); every deviation is an option.

    Parameters:
        > Parameters that control the LeTI loop

        num_iterations (`int`, *optional*, defaults to `10`):
            LeTI iterations (sample, execute, fine-tune). The authors' 2B script runs 10 (results at 6).
        num_generations_per_prompt (`int`, *optional*, defaults to `128`):
            Programs sampled for each training prompt in every iteration.
        condition_first_iteration (`bool`, *optional*, defaults to `False`):
            Prefix prompts with the good token already in iteration 1. The paper samples iteration 1 without it.

        > Parameters that control sampling

        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature for training rollouts.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling for training rollouts.
        top_k (`int`, *optional*, defaults to `0`):
            Top-k sampling for training rollouts (`0`: off).
        max_new_tokens (`int`, *optional*, defaults to `384`):
            New tokens per sampled program (the paper's 512 total minus a 128-token padded prompt).
        generation_batch_size (`int`, *optional*, defaults to `32`):
            Sequences generated per `generate` call.
        share_prompt_prefill (`bool`, *optional*, defaults to `True`):
            Encode each prompt once and copy its key/value cache to its samples, instead of encoding every copy
            (same distribution, fewer FLOPs; falls back to plain `generate` for models that cannot).
        generation_backend (`str`, *optional*, defaults to `"hf"`):
            `"hf"` (transformers `generate`) or `"vllm"`: a colocated vLLM engine (CUDA, one process) that samples
            rollouts and evaluation programs from a merged export of the current weights and sleeps while the
            trainer trains (`trainers/vllm_backend.py`).
        vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.5`):
            Share of GPU memory the vLLM engine may take while sampling (weights and KV cache).
        vllm_max_model_len (`int` or `None`, *optional*, defaults to `None`):
            Prompt + completion tokens vLLM plans for (`None`: the model's maximum; lower it to save memory).
        vllm_enable_sleep_mode (`bool`, *optional*, defaults to `True`):
            Release vLLM's GPU memory while training.
        vllm_dtype (`str`, *optional*, defaults to `"auto"`):
            dtype of the exported weights and of vLLM (`"auto"`: the model's, or a 4-bit model's compute dtype;
            vLLM runs fp32 checkpoints in half precision unless this says `"float32"`).

        > Parameters that control execution

        execution_timeout (`float` or `None`, *optional*, defaults to `None`):
            Seconds per program. `None`: the environment's own (`ExecutionLimits`: LeTI's 5 s for MBPP and
            HumanEval, 30 s for EAE, 1 s for Arith); a value overrides it for every task of the run.
        execution_memory_mb (`int` or `None`, *optional*, defaults to `None`):
            Memory cap per program (MiB). `None`: the environment's own (1024).
        execution_workers (`int` or `None`, *optional*, defaults to `None`):
            Sandbox workers (default: one per core).
        max_feedback_chars (`int` or `None`, *optional*, defaults to `None`):
            Feedback longer than this keeps its head and tail. `None`: the environment's own (4096).
        deduplicate_execution (`bool`, *optional*, defaults to `True`):
            Execute each distinct (task, program) pair once per run and give every copy its result, in this
            iteration and later ones. Runs are deterministic (fresh process, seeded `random`), so verdicts are the
            same as running every sample (the authors' code does); small models repeat themselves a lot, within
            an iteration and across iterations, so this saves much of the time.
        execution_servers (`list[str]` or `None`, *optional*, defaults to `None`):
            `leti serve` URLs (`http://10.0.0.5:8000 ...`) that execute the run's programs instead of this machine's
            cores: the trainer on a GPU node, the sandboxes on CPU machines. Each batch is shared over them in
            proportion to their free workers; one that fails mid-batch has its unanswered programs run on the
            others. Each server caps the limits at its own (start it with `--timeout` at least the run's). The
            servers' token, if they require one, is read from `LETI_SERVER_TOKEN`. `None`: this machine's sandbox
            pool (`execution_workers`).

        > Parameters that control the training rows

        feedback_mode (`str`, *optional*, defaults to `"text"`):
            `"text"`: reward token plus the interpreter's feedback (LeTI). `"binary"`: reward token only (the
            paper's ablation). `"none"`: no tokens, passing programs only (rejection-sampling fine-tuning).
            Controls for what the text adds (not in the paper): `"dummy"`, a constant span carrying no
            information, as long as the real feedback (`dummy_feedback_length`); `"shuffled"`, real feedback
            taken from another failed program of the same iteration (the form kept, the information removed).
        dummy_feedback_length (`str`, *optional*, defaults to `"tokens"`):
            How the `"dummy"` span matches the real feedback: in `"tokens"` (the same sequence length, so the
            same compute per row) or in `"characters"` (leti 0.1; the dummy text tokenizes longer).
        train_on (`str`, *optional*, defaults to `"rollouts"`):
            `"rollouts"`: each iteration trains on its sampled programs (LeTI). `"references"`: on the tasks'
            reference programs instead, as if each had been sampled and passed (supervised fine-tuning on
            ground truth, the paper's comparison; the sampling still runs, for the sampled pass rate). Every
            task needs a reference program.
        sequence_order (`str`, *optional*, defaults to `"feedback_first"`):
            `"feedback_first"`: reward token, feedback, prompt, program (the authors' code).
            `"feedback_last"`: reward token, prompt, program, feedback (the order the paper's text describes).
        reward_token_position (`str`, *optional*, defaults to `"start"`):
            Where the reward token goes in a row and in the prompts sampled from: `"start"`, the row's first
            token (the authors' code); `"before_program"`, between the prompt and the program (not in the
            paper), next to what it conditions, so a small model need not carry it across the feedback and
            the prompt. Prompts at inference then end with the good token, and from a prompt without one (the
            `none` condition) the model writes a reward token itself before its program.
        bad_token (`str`, *optional*, defaults to `"<|bad|>"`):
            Reward token of failing programs.
        good_token (`str`, *optional*, defaults to `"<|good|>"`):
            Reward token of passing programs; also the prefix of prompts at inference.
        feedback_start_token (`str`, *optional*, defaults to `"<|lang_feedback|>"`):
            Opens the feedback span.
        feedback_end_token (`str`, *optional*, defaults to `"<|/lang_feedback|>"`):
            Closes the feedback span.
        postprocess_rollouts (`bool`, *optional*, defaults to `False`):
            Cut sampled programs at the task's stop strings before executing and training on them. The
            authors do this for EAE (at a triple quote, "class", "print" or "#"; leti cuts only where they start
            a line, unless the task asks for the authors' split) and not for MBPP.
        append_eos (`bool`, *optional*, defaults to `False`):
            Append EOS to training rows (the authors' code does not).
        reward_token_target (`bool`, *optional*, defaults to `True`):
            Put one pad token (label -100) before each row, so that the model learns to predict the reward
            token from it, as it did in the authors' left-padded batches. `False`: the reward token is the
            row's first token, an input the loss never covers.
        keep_passing (`str`, *optional*, defaults to `"all"`):
            `"all"` passing samples (paper), or only `"distinct"` passing programs per prompt.
        passing_copies (`int`, *optional*, defaults to `1`):
            Repeat each kept passing sample this many times (the paper: 1). Gives the few early positives weight.
        max_failures_per_prompt (`int` or `None`, *optional*, defaults to `None`):
            Keep at most this many failing samples per prompt, chosen at random (`None`: all, as the paper).
        failure_loss_weight (`float`, *optional*, defaults to `1.0`):
            The weight of a failing program's row in the loss, relative to a passing one's (the paper: 1.0, every
            row alike). Between 0 and 1 the failing rows still teach the feedback and the bad condition, with
            less pull on the model's own programs; the optimizer steps stay the same. 0 keeps the rows in the
            batches but learns nothing from them (to drop them, use `max_failures_per_prompt=0`).
        replay_passing (`bool`, *optional*, defaults to `False`):
            A prompt none of whose samples passed this iteration trains on its passing programs from the latest
            earlier iteration that had any (the paper trains on the current iteration's samples only). Keeps a
            solution the model found once from being forgotten when it is not sampled again.

        > Parameters that control the pre-training mix (regularisation)

        pretrain_dataset (`str` or `None`, *optional*, defaults to `None`):
            A dataset of plain text/code (Hub id or local path loadable by `datasets.load_dataset`, or a
            folder saved with `save_to_disk`). `None`: no mix. The paper uses 50k Python files of The Stack.
            Every optimizer step on LeTI rows is followed by one on pre-training blocks (the paper's 1:1),
            so an epoch takes twice the optimizer steps. `max_steps` counts both kinds: with it set, the
            mix trains on half as many LeTI steps as the same run without the mix.
        pretrain_data_dir (`str` or `None`, *optional*, defaults to `None`):
            `data_dir` of a Hub pre-training dataset (The Stack: `data/python`).
        pretrain_revision (`str` or `None`, *optional*, defaults to `None`):
            Revision of a Hub pre-training dataset, so that the same documents come first every time (the
            authors used The Stack v1.1: `"v1.1"`). `None`: the dataset's main branch.
        pretrain_max_documents (`int` or `None`, *optional*, defaults to `None`):
            Read at most this many documents, streaming Hub datasets (the paper: the first 50,000 files).
        pretrain_text_field (`str`, *optional*, defaults to `"content"`):
            Text column of `pretrain_dataset`.
        pretrain_block_size (`int` or `None`, *optional*, defaults to `None`):
            Tokens per pre-training block (`None`: `max_length`).
        pretrain_max_blocks (`int` or `None`, *optional*, defaults to `None`):
            Use at most this many blocks (`None`: all).
        pretrain_test_size (`float` or `None`, *optional*, defaults to `0.1`):
            As the authors: `train_test_split(test_size=0.1, seed=42)` of the documents read, keeping the
            shuffled train part. `None`: every document, in the order read. The blocks are built once
            per run (int32, in `<output_dir>/pretraining-blocks`), by the main process; every process
            reads the same ones.

        > Parameters that control the model and QLoRA (TRL's `ModelConfig` fields, with LeTI's defaults)

        model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            The model `leti train` and the example script load (`LetiTrainer` takes its `model` argument).
        dtype (`str` or `None`, *optional*, defaults to `None`):
            `"auto"`, `"bfloat16"`, `"float16"` or `"float32"`: the dtype the model loads in, and the compute
            dtype of 4-bit layers (as in TRL). `None`: 4-bit layers compute in bfloat16 and keep the
            checkpoint's dtype elsewhere, full fine-tuning loads float32 (fp32 master weights), LoRA on
            an unquantized model keeps the checkpoint's dtype.
        use_peft (`bool`, *optional*, defaults to `True`):
            Train LoRA adapters (one PEFT model reused across iterations) instead of all weights (TRL: `False`).
        load_in_4bit (`bool`, *optional*, defaults to `True`):
            Load the base model in 4-bit (QLoRA, bitsandbytes; TRL: `False`). `load_in_8bit` loads it in 8-bit.
        bnb_4bit_quant_type (`str`, *optional*, defaults to `"nf4"`):
            `"nf4"` or `"fp4"` (as TRL, checked here also when it comes from a YAML file).
        use_bnb_nested_quant (`bool`, *optional*, defaults to `True`):
            Quantise the quantisation constants too (double quantisation; TRL: `False`).
        bnb_4bit_quant_storage (`str` or `None`, *optional*, defaults to `None`):
            Storage dtype of the packed 4-bit weights (`None`: bitsandbytes' `uint8`).
        lora_target_modules (`list[str]` or `None`, *optional*, defaults to `["all-linear"]`):
            Modules to adapt (TRL: `None`, PEFT's per-model defaults).
        adapter_dtype (`str`, *optional*, defaults to `"float32"`):
            Storage dtype of the trainable parameters (LoRA A/B, new-token rows, saved modules) of a 4-bit model.
            `"float32"` keeps fp32 master weights (compute still runs in the 4-bit compute `dtype`/autocast):
            at QLoRA learning rates (1e-5, 5e-6) AdamW's updates are below bf16's resolution, and most bf16
            weights would never change. `"bfloat16"`: what TRL's `SFTTrainer` does to quantized models.
        new_token_rows (`str`, *optional*, defaults to `"auto"`):
            How the four new tokens' embedding rows are trained. `"trainable_tokens"`: only those rows
            (PEFT `trainable_token_indices`). `"embeddings"`: the whole input and output embeddings
            (`modules_to_save`). `"frozen"`: not trained. `"auto"`: `trainable_tokens`, or `embeddings` for models
            with tied input/output embeddings, where TRL 1.16's fused LM head cannot use trainable tokens.
        train_output_head (`bool` or `None`, *optional*, defaults to `None`):
            With `new_token_rows="trainable_tokens"` and an untied output head (CodeGen), train the head
            too (`modules_to_save`): the feedback tokens are loss targets, and their output rows would
            otherwise never learn. `None`: on where the head is untied. The authors trained every weight.

        > Parameters that control evaluation

        eval_num_samples (`int`, *optional*, defaults to `16`):
            Programs sampled per evaluation task (the paper: 16 on MBPP).
        eval_temperature (`float`, *optional*, defaults to `0.1`):
            Evaluation sampling temperature (`0`: greedy).
        eval_top_p (`float`, *optional*, defaults to `1.0`):
            Evaluation nucleus sampling.
        eval_max_new_tokens (`int`, *optional*, defaults to `384`):
            New tokens per evaluation sample.
        eval_k (`list[int]`, *optional*, defaults to `[1, 10]`):
            The k of the reported pass@k; each needs `eval_num_samples >= k`.
        eval_condition (`str`, *optional*, defaults to `"good"`):
            Prompt prefix at evaluation: `"good"` (LeTI), `"none"` or `"bad"`.
        guidance_weight (`float`, *optional*, defaults to `0.0`):
            Reward-token guidance wherever a prompt is conditioned on the good token (rollouts from iteration 2
            on, evaluation): each step samples from `log p(·|good) + w · (log p(·|good) − log p(·|bad))`,
            classifier-free guidance on LeTI's own condition (not in the paper; 0 is off). Each step runs
            the model twice; the transformers backend only.
        eval_max_turns (`int`, *optional*, defaults to `1`):
            `2`: each evaluation adds one refinement turn, where the feedback is an input: every failed
            attempt and its feedback are shown to the model (`leti_env.refinement_prompt`'s format), which
            writes a new attempt. Logged as `eval/turn2/pass@k` and `eval/repair_rate`.
        eval_extra_conditions (`list[str]`, *optional*, defaults to `[]`):
            Also evaluate under these prefixes each time (any of `"good"`, `"none"`, `"bad"`), logged as
            `eval/<condition>/pass@k`: whether the reward token separates good programs from bad ones, which
            LeTI's claim that it conditions on the feedback needs. Each costs one more evaluation.
        eval_max_tasks (`int` or `None`, *optional*, defaults to `None`):
            Evaluate on at most this many tasks (`None`: all).
        eval_before_training (`bool`, *optional*, defaults to `True`):
            Also evaluate the model before the first iteration (iteration 0).

        > Parameters that control the Hub (with TRL's `push_to_hub`, `hub_model_id`, `hub_token`, `hub_private_repo`)

        hub_strategy (`str`, *optional*, defaults to `"end"`):
            When `push_to_hub` uploads the run (`trainers/hub.py`). `"end"`: once, after the last iteration.
            `"every_save"`: after every iteration (each iteration is LeTI's save), so a long run is on the Hub as it
            goes. `"all_checkpoints"`: after every iteration, keeping every iteration's model under `iteration-N/`.
            `"checkpoint"` (transformers' resumable `last-checkpoint/`) is refused: a LeTI run resumes from its run
            folder. transformers' default is `"every_save"`; leti's keeps one upload per run.
        hub_revision (`str` or `None`, *optional*, defaults to `None`):
            The branch both repos (model and rollouts) are pushed to, created if missing (`None`: `main`).
        hub_license (`str` or `None`, *optional*, defaults to `None`):
            The license on the model and rollouts cards. `None`: `apache-2.0`, leti's own license and that of its
            built-in models; set the base model's license (e.g. `"llama3.1"`, `"bsd-3-clause"`) when it is another.

    > [!NOTE]
    > Changed defaults of the parent: `learning_rate` 1e-5 (the paper, 350M), `lr_scheduler_type` `"constant"`,
    > `weight_decay` 0.01, `max_grad_norm` 0 (no clipping), `max_length` 2048, `train_sampling_strategy`
    > `"sequential"` (the authors' code does not shuffle; the pre-training mix relies on order), `save_strategy`
    > `"no"` (the trainer saves each iteration itself), `hub_strategy` `"end"` (one upload per run), `report_to` `"none"`, `project` `"leti"` (the
    > trackers' project; LeTI logs one tracker run per LeTI run, for every `report_to` tracker, see
    > `trainers/tracking.py`). `use_cpu` is set automatically
    > when no GPU/XPU/MPS is available.
    """

    # Parent defaults changed to the paper's
    learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate (the paper: 1e-5 for 350M, 5e-6 for 2B)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Learning-rate schedule (the paper: constant)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (the paper: 0.01)."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm; 0 disables it (the paper)."})
    max_length: int | None = field(default=2048, metadata={"help": "Longest training row in tokens (the paper: 2048)."})
    train_sampling_strategy: str = field(default="sequential", metadata={"help": "Row order; `sequential` as the paper."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing inside an iteration (the trainer saves every iteration)."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers (accelerate's: tensorboard, trackio, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab), one run per LeTI run; several: comma-separated, e.g. tensorboard,trackio."})
    project: str = field(default="leti", metadata={"help": "Project of the run's trackers: trackio's project, wandb's (unless WANDB_PROJECT is set), MLflow's experiment (transformers' default: huggingface)."})
    # TRL turns checkpointing on by default under transformers' old name, which transformers 5 deprecates with a
    # FutureWarning on every config; leti leaves the old name unset (`activation_checkpointing` decides, on).
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated name of `activation_checkpointing` (transformers 5)."})

    # Parameters that control the LeTI loop
    num_iterations: int = field(default=10, metadata={"help": "LeTI iterations (sample, execute, fine-tune)."})
    num_generations_per_prompt: int = field(default=128, metadata={"help": "Programs sampled per training prompt per iteration."})
    condition_first_iteration: bool = field(
        default=False, metadata={"help": "Prefix prompts with the good token in iteration 1 too (the paper does not)."})

    # Parameters that control sampling
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature for rollouts."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling for rollouts."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling for rollouts (0: off)."})
    max_new_tokens: int = field(default=384, metadata={"help": "New tokens per sampled program."})
    generation_batch_size: int = field(default=32, metadata={"help": "Sequences per generate call."})
    share_prompt_prefill: bool = field(default=True, metadata={"help": "Encode each prompt once for all its samples."})
    generation_backend: Literal["hf", "vllm"] = field(default="hf", metadata={"help": "Rollout backend: hf or vllm."})
    vllm_gpu_memory_utilization: float = field(default=0.5, metadata={"help": "GPU memory share of the vLLM engine."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "Prompt + completion tokens vLLM plans for."})
    vllm_enable_sleep_mode: bool = field(default=True, metadata={"help": "Release vLLM's GPU memory while training."})
    vllm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(default="auto", metadata={"help": "dtype of the vLLM export and engine (auto, bfloat16, float16, float32)."})

    # Parameters that control execution
    execution_timeout: float | None = field(
        default=None, metadata={"help": "Seconds per program (default: the environment's own: 5, EAE 30, Arith 1)."})
    execution_memory_mb: int | None = field(
        default=None, metadata={"help": "Memory cap per program in MiB (default: the environment's own)."})
    execution_workers: int | None = field(default=None, metadata={"help": "Sandbox workers (default: one per core)."})
    max_feedback_chars: int | None = field(
        default=None, metadata={"help": "Longest feedback kept, head and tail (default: the environment's own)."})
    deduplicate_execution: bool = field(
        default=True, metadata={"help": "Execute each distinct (task, program) pair once per run (same verdicts)."})
    execution_servers: list[str] | None = field(
        default=None, metadata={"help": "`leti serve` URLs that execute the programs instead of this machine "
                                        "(e.g. http://10.0.0.5:8000 http://10.0.0.6:8000; token: LETI_SERVER_TOKEN)."})

    # Parameters that control the training rows
    feedback_mode: Literal["text", "binary", "none", "dummy", "shuffled"] = field(
        default="text", metadata={"help": "text (LeTI), binary (reward token only), none (passing programs only), or the "
                                          "controls dummy (an information-free span) and shuffled (another program's feedback)."})
    train_on: Literal["rollouts", "references"] = field(
        default="rollouts", metadata={"help": "rollouts (LeTI) or references: the tasks' reference programs (SFT on ground truth)."})
    dummy_feedback_length: Literal["tokens", "characters"] = field(
        default="tokens", metadata={"help": "The dummy span matches the feedback in tokens (same row length) or characters."})
    sequence_order: Literal["feedback_first", "feedback_last"] = field(
        default="feedback_first", metadata={"help": "Where the feedback span goes: before the prompt (authors' code) or after the program."})
    reward_token_position: Literal["start", "before_program"] = field(
        default=PromptFormat.reward_token_position, metadata={"help": "Where the reward token goes: the row's start (authors' code) or just before "
                                           "the program; prompts at inference then end with it."})
    bad_token: str = field(default=PromptFormat.bad_token, metadata={"help": "Reward token of failing programs."})
    good_token: str = field(default=PromptFormat.good_token,
                            metadata={"help": "Reward token of passing programs and inference prefix."})
    feedback_start_token: str = field(default="<|lang_feedback|>", metadata={"help": "Opens the feedback span."})
    feedback_end_token: str = field(default="<|/lang_feedback|>", metadata={"help": "Closes the feedback span."})
    postprocess_rollouts: bool = field(
        default=False, metadata={"help": "Cut sampled programs at the task's stop strings before execution (EAE: on)."})
    append_eos: bool = field(default=False, metadata={"help": "Append EOS to training rows (the paper does not)."})
    reward_token_target: bool = field(
        default=PromptFormat.reward_token_target,
        metadata={"help": "Start each row with a pad token (label -100) so the reward token is predicted, as in the "
                          "authors' left-padded batches; False: it is only an input."})
    keep_passing: Literal["all", "distinct"] = field(
        default="all", metadata={"help": "Keep all passing samples (paper) or distinct passing programs only."})
    passing_copies: int = field(default=1, metadata={"help": "Repeat each kept passing sample this many times (paper: 1)."})
    max_failures_per_prompt: int | None = field(
        default=None, metadata={"help": "Keep at most this many failing samples per prompt (None: all, as the paper)."})
    failure_loss_weight: float = field(
        default=1.0, metadata={"help": "Loss weight of failing programs' rows, relative to passing ones (paper: 1.0)."})
    replay_passing: bool = field(
        default=False, metadata={"help": "Prompts with no pass this iteration reuse their latest earlier passing programs."})

    # Parameters that control the pre-training mix
    pretrain_dataset: str | None = field(default=None, metadata={"help": "Plain text/code dataset for the 1:1 step mix (None: off)."})
    pretrain_data_dir: str | None = field(default=None, metadata={"help": "data_dir of a Hub pre-training dataset."})
    pretrain_revision: str | None = field(default=None, metadata={"help": "Revision of a Hub pre-training dataset (The Stack: v1.1)."})
    pretrain_max_documents: int | None = field(
        default=None, metadata={"help": "Read at most this many pre-training documents (the paper: 50,000)."})
    pretrain_text_field: str = field(default="content", metadata={"help": "Text column of the pre-training dataset."})
    pretrain_block_size: int | None = field(default=None, metadata={"help": "Tokens per pre-training block (None: max_length)."})
    pretrain_max_blocks: int | None = field(default=None, metadata={"help": "At most this many pre-training blocks (None: all)."})
    pretrain_test_size: float | None = field(
        default=0.1, metadata={"help": "As the authors: train_test_split(test_size, seed=42) of the documents, keep the "
                                       "shuffled train part (None: every document, in file order)."})

    # Parameters that control the model and QLoRA: TRL's ModelConfig fields, with LeTI's defaults
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = field(
        default=None, metadata={"help": "Load dtype and 4-bit compute dtype (None: bfloat16 compute for 4-bit, float32 "
                                        "for full fine-tuning, the checkpoint's otherwise)."})
    use_peft: bool = field(default=True, metadata={"help": "Train LoRA adapters instead of all weights."})
    load_in_4bit: bool = field(default=True, metadata={"help": "Load the base model in 4-bit (QLoRA)."})
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = field(default="nf4", metadata={"help": "4-bit quantisation type."})
    use_bnb_nested_quant: bool = field(default=True, metadata={"help": "Double quantisation."})
    bnb_4bit_quant_storage: Literal["uint8", "bfloat16", "float16", "float32"] | None = field(
        default=None, metadata={"help": "Storage dtype of the 4-bit weights (None: bitsandbytes' uint8)."})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "LoRA target modules (all-linear, or module names)."})
    adapter_dtype: Literal["float32", "bfloat16"] = field(
        default="float32", metadata={"help": "Storage dtype of a 4-bit model's trainable parameters (float32: master weights)."})
    new_token_rows: Literal["auto", "trainable_tokens", "embeddings", "frozen"] = field(
        default="auto", metadata={"help": "How the new tokens' embedding rows are trained."})
    train_output_head: bool | None = field(
        default=None, metadata={"help": "Also train an untied output head with trainable_tokens (None: yes where untied)."})

    # Parameters that control evaluation
    eval_num_samples: int = field(default=16, metadata={"help": "Samples per evaluation task."})
    eval_temperature: float = field(default=0.1, metadata={"help": "Evaluation temperature (0: greedy)."})
    eval_top_p: float = field(default=1.0, metadata={"help": "Evaluation nucleus sampling."})
    eval_max_new_tokens: int = field(default=384, metadata={"help": "New tokens per evaluation sample."})
    eval_k: list[int] = field(default_factory=lambda: [1, 10], metadata={"help": "k values of the reported pass@k."})
    eval_condition: Literal["good", "none", "bad"] = field(default="good", metadata={"help": "Evaluation prompt prefix."})
    guidance_weight: float = field(default=0.0, metadata={"help": "Reward-token guidance w: log p(good) + w (log p(good) - log p(bad)) (0: off)."})
    eval_max_turns: int = field(default=1, metadata={"help": "2: evaluation adds a refinement turn (feedback as input)."})
    eval_extra_conditions: list[str] = field(
        default_factory=list, metadata={"help": "Also evaluate under these prefixes (good, none, bad), logged as "
                                                "eval/<condition>/pass@k; comma-separated on the command line."})
    eval_max_tasks: int | None = field(default=None, metadata={"help": "Evaluate on at most this many tasks."})
    eval_before_training: bool = field(default=True, metadata={"help": "Also evaluate before the first iteration."})

    # Parameters that control the Hub
    hub_strategy: str = field(
        default="end", metadata={"help": "When push_to_hub uploads: end (once), every_save (after every iteration), "
                                         "all_checkpoints (after every iteration, every iteration's model kept)."})
    hub_license: str | None = field(
        default=None, metadata={"help": "License on the Hub cards (None: apache-2.0; set the base model's when it differs)."})

    def __new__(cls, *args, **kwargs):
        refuse_renamed(kwargs, f"{cls.__name__}: ")  # before the generated __init__'s "unexpected keyword"
        return super().__new__(cls)

    def __post_init__(self):
        if not self.use_cpu and not _has_accelerator():
            self.use_cpu = True  # a laptop run should not need to know transformers' flag for it
        if self.gradient_checkpointing is None:
            if getattr(self, "activation_checkpointing", False) is None:
                self.activation_checkpointing = True  # TRL's default, under transformers 5's name
            elif not hasattr(self, "activation_checkpointing"):  # transformers 4
                self.gradient_checkpointing = True
        if isinstance(self.report_to, str) and "," in self.report_to:  # the command line: --report_to tensorboard,trackio
            self.report_to = [name.strip() for name in self.report_to.split(",") if name.strip()]
        strategy = getattr(self.hub_strategy, "value", self.hub_strategy)
        if strategy == "checkpoint":
            raise ValueError("hub_strategy='checkpoint' (a resumable last-checkpoint/ folder) is not supported: a LeTI run "
                             "resumes from its run folder. Use 'every_save' to push after every iteration, or "
                             "'all_checkpoints' to also keep every iteration's model.")
        super().__post_init__()
        ModelConfig.__post_init__(self)  # TrainingArguments' __post_init__ does not chain to it
        if isinstance(self.lora_target_modules, str) and "," in self.lora_target_modules:  # leti 0.1's "q_proj,v_proj"
            self.lora_target_modules = [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]
        if isinstance(self.eval_k, str):  # from the command line: "1,10"
            self.eval_k = [int(k) for k in self.eval_k.split(",") if k]
        if isinstance(self.eval_extra_conditions, str):  # "bad,none"
            self.eval_extra_conditions = [self.eval_extra_conditions]
        # the command line gives a list: `bad none` or `bad,none`
        self.eval_extra_conditions = [c.strip() for item in self.eval_extra_conditions for c in str(item).split(",")
                                      if c.strip()]
        if self.guidance_weight < 0:
            raise ValueError(f"`guidance_weight` must be >= 0 (0: off), got {self.guidance_weight}")
        if self.guidance_weight > 0 and self.generation_backend == "vllm":
            raise ValueError("`guidance_weight` > 0 needs generation_backend='hf': vLLM samples each sequence alone")
        if self.eval_max_turns not in (1, 2):
            raise ValueError(f"`eval_max_turns` must be 1 or 2 (one refinement turn), got {self.eval_max_turns}")
        unknown = [c for c in self.eval_extra_conditions if c not in ("good", "none", "bad")]
        if unknown:
            raise ValueError(f"`eval_extra_conditions` takes good, none or bad; got {unknown}")
        for name, choices in _closed_sets().items():  # every Literal-typed field (a YAML value skips argparse's check)
            if getattr(self, name) not in choices:
                raise ValueError(f"`{name}` must be one of {list(choices)}, got {getattr(self, name)!r}.")
        for name in ("num_iterations", "num_generations_per_prompt", "max_new_tokens", "generation_batch_size",
                     "eval_num_samples", "eval_max_new_tokens", "lora_r", "passing_copies"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")
        for name in ("temperature", "eval_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be non-negative, got {getattr(self, name)}.")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(f"`vllm_gpu_memory_utilization` must be in (0, 1], got {self.vllm_gpu_memory_utilization}.")
        if self.execution_timeout is not None and not self.execution_timeout > 0:
            raise ValueError(f"`execution_timeout` must be positive (or None: the environment's own), got "
                             f"{self.execution_timeout}.")
        if self.execution_memory_mb is not None and self.execution_memory_mb < 32:
            raise ValueError(f"`execution_memory_mb` must be at least 32 (or None: the environment's own), got "
                             f"{self.execution_memory_mb}.")
        from leti_env.execution.remote import parse_servers

        self.execution_servers = parse_servers(self.execution_servers)  # a URL that is none fails here, not later
        if self.execution_servers and self.execution_workers is not None:
            raise ValueError("`execution_workers` sizes this machine's sandbox pool, and `execution_servers` runs the "
                             "programs on the servers' workers instead (leti serve --workers): set one or the other.")
        if self.max_feedback_chars is not None and self.max_feedback_chars < 1:
            raise ValueError(f"`max_feedback_chars` must be at least 1 (or None: the environment's own), got "
                             f"{self.max_feedback_chars}.")
        too_big = [k for k in self.eval_k if k > self.eval_num_samples or k < 1]
        if too_big:
            raise ValueError(
                f"pass@k needs 1 <= k <= eval_num_samples, but eval_k={self.eval_k} and eval_num_samples="
                f"{self.eval_num_samples}. Raise `eval_num_samples` to at least {max(too_big)} or drop k={too_big}."
            )
        tokens = [self.bad_token, self.good_token, self.feedback_start_token, self.feedback_end_token]
        if any(not t for t in tokens) or len(set(tokens)) != 4:
            raise ValueError(f"the four LeTI tokens must be distinct and non-empty, got {tokens}.")
        if self.quantized and not self.use_peft:
            bits = "load_in_4bit" if self.load_in_4bit else "load_in_8bit"
            raise ValueError(f"`{bits}=True` needs `use_peft=True`: quantized weights cannot be trained directly (QLoRA "
                             f"trains LoRA adapters on top). Set use_peft=True, or {bits}=False for full fine-tuning.")
        if self.pretrain_dataset and self.train_sampling_strategy != "sequential":
            raise ValueError(f"the pre-training mix alternates optimizer steps by row order, which "
                             f"train_sampling_strategy={self.train_sampling_strategy!r} would shuffle. Set "
                             "train_sampling_strategy='sequential' (the default), or drop pretrain_dataset.")
        if self.max_failures_per_prompt is not None and self.max_failures_per_prompt < 0:
            raise ValueError(f"`max_failures_per_prompt` must be >= 0 or None, got {self.max_failures_per_prompt}.")
        if not self.failure_loss_weight >= 0:
            raise ValueError(f"`failure_loss_weight` must be >= 0 (1.0: the paper), got {self.failure_loss_weight}.")
        if self.failure_loss_weight != 1.0 and self.feedback_mode == "none":
            raise ValueError("`failure_loss_weight` weighs failing rows, which feedback_mode='none' has none of: "
                             "leave it at 1.0, or pick another feedback_mode.")

    def execution_limits(self, limits: ExecutionLimits) -> ExecutionLimits:
        """The limits of this run's programs: the tasks' own (``limits``, from their environment), with the
        execution fields this config sets (``execution_timeout``, ...) in their place."""
        return limits.override(timeout=self.execution_timeout, memory_mb=self.execution_memory_mb,
                               max_feedback_chars=self.max_feedback_chars)

    @property
    def quantized(self) -> bool:
        """Whether the base model loads quantized (bitsandbytes 4-bit or 8-bit)."""
        return bool(self.load_in_4bit or self.load_in_8bit)

    @property
    def special_tokens(self) -> list[str]:
        """The four LeTI tokens, in the order the authors add them to the tokenizer."""
        return [self.bad_token, self.good_token, self.feedback_start_token, self.feedback_end_token]


@functools.cache
def _closed_sets() -> dict[str, tuple]:
    """``{field: allowed values}`` for LetiConfig's ``Literal`` fields: the type hint is the one list."""
    namespace = {**vars(typing), **globals()}
    found = {}
    for name, annotation in LetiConfig.__annotations__.items():
        hint = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307 - our own hints
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        literal = [o for o in options if typing.get_origin(o) is Literal]
        if literal:  # `Literal[...] | None`: None is allowed too
            found[name] = typing.get_args(literal[0]) + ((None,) if type(None) in options else ())
    return found


def _has_accelerator() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool((xpu is not None and xpu.is_available()) or (mps is not None and mps.is_available()))
