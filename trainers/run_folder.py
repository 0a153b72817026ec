"""A LeTI run folder, read back: its recipe (``config.json``), its prompt format and its models.

``leti train`` writes ``<output_dir>/config.json`` and ``iteration-N/model``; ``leti eval``, ``leti export``,
``leti push`` and the model card read them here, so that each of them samples, loads and describes a
trained model the way the run trained it (its reward tokens, its 4-bit base).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: reading a run's config needs neither torch nor TRL
    from .sequences import PromptFormat


def run_config(run_dir: str | Path) -> dict:
    """The run's ``config.json`` (the recipe and what it trained on), or ``{}`` for a folder without one."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder ``leti train`` wrote (it has the run's ``config.json``)."""
    return Path(path, "config.json").is_file()


def config_of_model(model_dir: str | Path) -> dict:
    """The ``config.json`` of the run that wrote ``model_dir`` when it is a run's ``iteration-N/model``,
    else ``{}`` (any other model folder, a Hub id, or an unreadable file)."""
    folder = Path(model_dir)
    if not folder.parent.name.startswith("iteration-"):
        return {}
    try:
        return run_config(folder.parent.parent)
    except (OSError, ValueError):
        return {}


def prompt_format_of_model(model_dir: str | Path) -> PromptFormat:
    """How prompts must start for the model in ``model_dir``: as its run's training rows did (its reward
    tokens, the lead pad token or not); the defaults for a model that no run folder describes."""
    from .sequences import PromptFormat

    return PromptFormat.from_run_config(config_of_model(model_dir))


def load_model(path: str) -> tuple[Any, Any]:
    """The model and tokenizer at ``path`` (a run's ``iteration-N/model``, a model folder or a Hub id), for
    sampling (``leti eval``) or merging (``leti export``).

    An adapter is loaded on the base model its run trained, loaded as the run loaded it (4-bit for a QLoRA
    run: eval then scores the model that was trained), with the embedding grown only where the new tokens
    did not fit. On the first GPU when there is one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        if folder.exists():
            raise
        raise ValueError(f"no model at {path!r}: not a folder here, and not loadable as a Hub id ({exc}). Pass a "
                         "LeTI run's iteration-N/model folder, a model folder, or a Hub id.") from None
    if tokenizer.pad_token is None:  # CodeGen's: batched generation needs one (as in training)
        tokenizer.pad_token = tokenizer.eos_token
    import torch

    device = {"device_map": {"": "cuda:0"}} if torch.cuda.is_available() else {}
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        base_name = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = AutoModelForCausalLM.from_pretrained(base_name, **device, **base_loading_of_model(folder))
        # As the trainer did: grow the embedding only when the new tokens do not fit. Resizing to
        # len(tokenizer) unconditionally would shrink a padded vocabulary (Qwen, CodeGen), and the
        # saved embedding would no longer load.
        if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
            base.resize_token_embeddings(len(tokenizer))
        return PeftModel.from_pretrained(base, path), tokenizer
    return AutoModelForCausalLM.from_pretrained(path, **device), tokenizer


def base_loading_of_model(model_dir: str | Path) -> dict[str, Any]:
    """How the run that wrote ``model_dir`` (its ``iteration-N/model``) loaded the base model, as
    ``from_pretrained`` arguments: 4-bit when it trained QLoRA, so that eval scores the model that was
    trained. Other folders: ``{}`` (as saved)."""
    from types import SimpleNamespace

    from .model_setup import model_loading_kwargs

    run = config_of_model(model_dir)
    if not run:
        return {}
    nested = run.get("use_bnb_nested_quant", run.get("bnb_4bit_use_double_quant", True))  # (leti 0.1's name)
    kwargs = model_loading_kwargs(SimpleNamespace(**{**run, "use_bnb_nested_quant": nested}))
    if run.get("bnb_4bit_compute_dtype") and "quantization_config" in kwargs:  # a leti 0.1 run's compute dtype
        import torch

        kwargs["quantization_config"].bnb_4bit_compute_dtype = getattr(torch, run["bnb_4bit_compute_dtype"])
    return kwargs
