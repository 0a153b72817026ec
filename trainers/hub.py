"""A LeTI run on the Hugging Face Hub: a model card (TRL's template, with LeTI's recipe, citation and
metrics per iteration), the adapter or model of the last or every iteration, and the rollouts as a
dataset with one split per iteration.

Every upload goes through one ``huggingface_hub.HfApi`` (``api=``), so a test can hand it a stand-in
that records the calls instead of uploading.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

LETI_CITATION = """@inproceedings{wang2024leti,
    title     = {{LeTI: Learning to Generate from Textual Interactions}},
    author    = {Xingyao Wang and Hao Peng and Reyhaneh Jabbarvand and Heng Ji},
    booktitle = {Findings of the Association for Computational Linguistics: NAACL 2024},
    year      = {2024},
    url       = {https://arxiv.org/abs/2305.10314}
}"""
RECIPE_KEYS = ("num_iterations", "num_generations_per_prompt", "temperature", "feedback_mode", "sequence_order",
               "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "use_peft",
               "load_in_4bit", "lora_r", "keep_passing", "replay_passing", "pretrain_dataset", "eval_num_samples")


def model_card(run_dir: str | Path, hub_model_id: str, base_model: str | None = None, dataset_name: str | None = None):
    """The run's model card (``huggingface_hub.ModelCard``): TRL's template, tags ``leti`` and ``trl``, the
    LeTI citation, the recipe's main settings and a metrics table per iteration with the plot."""
    from trl.trainer.utils import generate_model_card

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    card = generate_model_card(base_model=base_model or config.get("model_name_or_path"),
                               model_name=hub_model_id.split("/")[-1], hub_model_id=hub_model_id,
                               dataset_name=dataset_name, tags=["leti", "trl"], wandb_url=None, trackio_url=None,
                               trainer_name="LeTI", trainer_citation=LETI_CITATION,
                               paper_title="LeTI: Learning to Generate from Textual Interactions", paper_id="2305.10314")
    card.text += "\n" + _leti_section(run_dir, config)
    return card


def _leti_section(run_dir: Path, config: dict) -> str:
    lines = ["## LeTI run", "", "Recipe (the settings that differ between LeTI recipes; `config.json` has all):", ""]
    lines += [f"- `{k}`: `{config[k]}`" for k in RECIPE_KEYS if k in config]
    history = _history(run_dir)
    if history:
        keys = [k for k in ("rollout/pass_rate", "eval/pass@1", "eval/pass@1/postprocessed", "train/rows", "train/loss")
                if any(k in m for m in history)]
        lines += ["", "| iteration | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
        for m in history:
            cells = [f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys]
            lines.append(f"| {m['iteration']} | " + " | ".join(cells) + " |")
    if (run_dir / "pass_rate.png").exists():
        lines += ["", "![pass rate per iteration](pass_rate.png)"]
    return "\n".join(lines) + "\n"


def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    by_iteration: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_iteration[row["iteration"]] = row  # a resumed run may log an iteration again: the last counts
    return [by_iteration[i] for i in sorted(by_iteration)]


def write_model_card(run_dir: str | Path, hub_model_id: str | None = None) -> Path:
    """``run_dir/README.md``: the model card (``hub_model_id`` default: the folder's name)."""
    run_dir = Path(run_dir)
    path = run_dir / "README.md"
    model_card(run_dir, hub_model_id or run_dir.name).save(path)
    return path


def completed_iterations(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in run_dir.glob("iteration-*")
                  if p.name.split("-")[1].isdigit() and (p / "COMPLETE").exists())


def push_run(run_dir: str | Path, repo_id: str, *, iterations: Literal["last", "all"] = "last", private: bool | None = None,
             api: Any = None) -> dict[str, list[str]]:
    """Upload a run: the model repo ``repo_id`` gets the card, ``pass_rate.png`` and the last iteration's
    model at its root (``all``: also every iteration's under ``iteration-N/``); the dataset repo
    ``<repo_id>-rollouts`` gets the rollouts, one split per iteration. Returns what went where."""
    from huggingface_hub import HfApi

    if iterations not in ("last", "all"):
        raise ValueError(f"`iterations` must be 'last' or 'all', got {iterations!r}")
    run_dir, api = Path(run_dir), api if api is not None else HfApi()
    done = completed_iterations(run_dir)
    if not done:
        raise ValueError(f"{run_dir} has no complete iteration to push (an iteration-N folder with a COMPLETE marker).")
    uploaded: dict[str, list[str]] = {repo_id: [], f"{repo_id}-rollouts": []}
    api.create_repo(repo_id, exist_ok=True, private=private)
    with tempfile.TemporaryDirectory() as tmp:
        staged = _stage_model(run_dir, Path(tmp) / "model", repo_id, done, iterations)
        api.upload_folder(repo_id=repo_id, folder_path=str(staged), commit_message=f"LeTI run: iteration {done[-1]}")
        uploaded[repo_id] = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
        rollouts = _stage_rollouts(run_dir, Path(tmp) / "rollouts", done)
        if rollouts is not None:
            api.create_repo(f"{repo_id}-rollouts", repo_type="dataset", exist_ok=True, private=private)
            api.upload_folder(repo_id=f"{repo_id}-rollouts", repo_type="dataset", folder_path=str(rollouts),
                              commit_message="LeTI rollouts")
            uploaded[f"{repo_id}-rollouts"] = sorted(str(p.relative_to(rollouts)) for p in rollouts.rglob("*") if p.is_file())
    return uploaded


def _stage_model(run_dir: Path, staged: Path, repo_id: str, done: Sequence[int], iterations: str) -> Path:
    shutil.copytree(run_dir / f"iteration-{done[-1]}" / "model", staged)
    if iterations == "all":
        for n in done:
            shutil.copytree(run_dir / f"iteration-{n}" / "model", staged / f"iteration-{n}")
    for name in ("pass_rate.png", "metrics.jsonl", "config.json"):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, staged / ("leti_config.json" if name == "config.json" else name))
    model_card(run_dir, repo_id, dataset_name=f"{repo_id}-rollouts").save(staged / "README.md")
    return staged


def _stage_rollouts(run_dir: Path, staged: Path, done: Sequence[int]) -> Path | None:
    """Parquet files ``data/iteration_N.parquet`` (one split each), the layout the Hub's loader reads."""
    import datasets

    folders = [(n, run_dir / f"iteration-{n}" / "rollouts") for n in done]
    folders = [(n, f) for n, f in folders if (f / "dataset_info.json").exists()]
    if not folders:
        return None
    (staged / "data").mkdir(parents=True)
    for n, folder in folders:
        datasets.load_from_disk(str(folder)).to_parquet(str(staged / "data" / f"iteration_{n}.parquet"))
    return staged
