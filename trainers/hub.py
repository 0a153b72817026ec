"""A LeTI run on the Hugging Face Hub: a model card, the adapter or model of the last or every iteration,
and the rollouts as a dataset with one split per iteration.

The model card is a ``huggingface_hub.ModelCard`` whose metadata the Hub indexes: ``library_name``
(``peft`` for a LoRA adapter, ``transformers`` for a full model), the base model's Hub id, the datasets
(the rollouts and the environment's), the license, the ``leti`` tag and a ``model-index`` with the last
iteration's held-out pass@k. Its text says how to sample a ``<|good|>``-conditioned program, the recipe,
the metrics per iteration and the citation.

The rollouts are staged in the layout ``DatasetDict.push_to_hub`` writes (``data/<split>-00000-of-00001.parquet``
and a card whose ``configs:`` name each split), so ``load_dataset`` reads one split per iteration.

Every upload goes through one ``huggingface_hub.HfApi`` (``api=``), so a caller can hand it another client.
Hub failures (offline, not logged in, a refused token) become ``HubError``: one line that says the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .run_folder import run_config

if TYPE_CHECKING:
    import datasets
    from huggingface_hub import ModelCard

LETI_CITATION = """@inproceedings{wang2024leti,
    title     = {{LeTI: Learning to Generate from Textual Interactions}},
    author    = {Xingyao Wang and Hao Peng and Reyhaneh Jabbarvand and Heng Ji},
    booktitle = {Findings of the Association for Computational Linguistics: NAACL 2024},
    year      = {2024},
    url       = {https://arxiv.org/abs/2305.10314}
}"""
RECIPE_KEYS = ("num_iterations", "num_generations_per_prompt", "temperature", "feedback_mode", "sequence_order", "reward_token_position",
               "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "use_peft",
               "load_in_4bit", "lora_r", "keep_passing", "replay_passing", "pretrain_dataset", "eval_num_samples")
# The license of a card whose base model has none to inherit: leti's own, and that of its built-in models
DEFAULT_LICENSE = "apache-2.0"
# The Hub datasets leti's environments read their tasks from (the others are built by leti itself)
ENV_DATASETS = {"LETI-MBPP": "google-research-datasets/mbpp", "LETI-HumanEval": "openai/openai_humaneval"}
# task_id prefixes of each environment's tasks ("MBPP/11"), to name the environment of a Python API run
TASK_PREFIX_ENVS = {"MBPP": "LETI-MBPP", "HumanEval": "LETI-HumanEval", "EAE": "LETI-EAE", "Arith": "LETI-Arith"}
# --model_name_or_path values leti resolves to a model it builds itself: never a Hub id
LETI_MODEL_NAMES = ("default", "tiny")


class HubError(RuntimeError):
    """The Hub could not take the upload; the message is one line that says what to do."""


def base_model_hub_id(source: Any) -> str | None:
    """The Hub id of a base model (``"Salesforce/codegen-350M-mono"``), or ``None`` when it has none.

    So that a card's ``base_model`` links to the model it was trained from, and only to a real one:
    ``source`` may be a Hub id, a folder in the Hub cache (``.../models--org--name/snapshots/...``) or a
    loaded model (its ``name_or_path``). Local folders, leti's built-in default model and its tiny
    test models have no Hub id.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if source is not None and not isinstance(source, (str, os.PathLike)):
        source = getattr(source, "name_or_path", None)
    if not source:
        return None
    text = str(source)
    for part in reversed(Path(text).parts):
        if part.startswith("models--"):  # the Hub cache's folder of that repo
            return part[len("models--"):].replace("--", "/", 1)
    if text in LETI_MODEL_NAMES or Path(text).exists() or Path(text).is_absolute() or text.startswith((".", "~")):
        return None
    try:
        validate_repo_id(text)
    except HFValidationError:
        return None
    return text


def env_of_tasks(tasks: Iterable[Any]) -> str | None:
    """The leti environment the tasks come from, read off their ids (``"MBPP/11"``: ``LETI-MBPP``), or ``None``
    when they mix environments or come from elsewhere: a run from the Python API records it this way."""
    prefixes = {str(getattr(t, "task_id", "")).split("/")[0] for t in tasks}
    if len(prefixes) != 1:
        return None
    return TASK_PREFIX_ENVS.get(prefixes.pop())


def model_card(run_dir: str | Path, hub_model_id: str, base_model: str | None = None,
               dataset_name: str | None = None, license: str | None = None) -> ModelCard:
    """The run's model card (``huggingface_hub.ModelCard``), metadata and text.

    Args:
        run_dir: The run folder (``output_dir``).
        hub_model_id: The model repo the card describes (names the model and the usage snippet).
        base_model: The base model's Hub id (default: the one the run recorded, if any).
        dataset_name: The rollouts dataset repo, when the rollouts are pushed too.
        license: The card's license (default: the run's ``hub_license``, else ``apache-2.0``).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run_dir = Path(run_dir)
    config = run_config(run_dir)
    done = completed_iterations(run_dir)
    model_dir = run_dir / f"iteration-{done[-1]}" / "model" if done else None
    adapter = model_dir is not None and (model_dir / "adapter_config.json").exists() \
        or (model_dir is None and config.get("use_peft", True))
    base_model = base_model or _recorded_base_model(config, model_dir)
    env_id = config.get("env_id")
    datasets = [d for d in (dataset_name, ENV_DATASETS.get(env_id)) if d]
    history = _history(run_dir)
    evaluated = next((m for m in reversed(history) if _pass_at_k(m)), None)
    eval_results = None
    if evaluated is not None and evaluated is history[-1]:  # the last iteration's held-out pass@k
        eval_results = [EvalResult(task_type="text-generation", task_name="Code generation",
                                   dataset_type=ENV_DATASETS.get(env_id) or env_id or "code-tasks",
                                   dataset_name=env_id or "held-out code tasks",
                                   dataset_split=config.get("eval_split") or None, metric_type=name,
                                   metric_name=name, metric_value=value,
                                   metric_config=f"iteration {evaluated['iteration']}, "
                                                 f"{config.get('eval_num_samples', '?')} samples per task",
                                   source_name="leti", source_url="https://arxiv.org/abs/2305.10314")
                        for name, value in _pass_at_k(evaluated).items()]
    tags = ["leti", "trl", "code-generation", *(["lora"] if adapter else [])]
    data = ModelCardData(library_name="peft" if adapter else "transformers", base_model=base_model,
                         datasets=datasets or None, license=license or config.get("hub_license") or DEFAULT_LICENSE,
                         tags=tags, pipeline_tag="text-generation", model_name=hub_model_id.split("/")[-1],
                         eval_results=eval_results)
    text = _card_text(run_dir, config, hub_model_id, base_model, adapter, history, dataset_name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")


def _recorded_base_model(config: dict, model_dir: Path | None) -> str | None:
    """The base model's Hub id as the run recorded it (a run of leti 0.2 and later), else as its recipe or
    its adapter names it, when that is a Hub id."""
    if "base_model_hub_id" in config:
        return config["base_model_hub_id"]
    candidates = [config.get("model_name_or_path")]
    if model_dir is not None and (model_dir / "adapter_config.json").exists():
        candidates.append(json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path"))
    if isinstance(config.get("base_model"), dict):  # leti's built-in default model
        return None
    return next((found for found in map(base_model_hub_id, candidates) if found), None)


def _pass_at_k(metrics: dict) -> dict[str, float]:
    """``{"pass@1": 0.25, ...}``: the held-out pass@k under the run's evaluation condition."""
    return {k.removeprefix("eval/"): v for k, v in metrics.items()
            if k.startswith("eval/pass@") and k.removeprefix("eval/pass@").isdigit() and isinstance(v, (int, float))}


def _card_text(run_dir: Path, config: dict, repo_id: str, base_model: str | None, adapter: bool,
               history: list[dict], dataset_name: str | None) -> str:
    from .sequences import PromptFormat

    name = repo_id.split("/")[-1]
    env_id = config.get("env_id")
    tokens = PromptFormat.from_run_config(config)
    lines = [f"# {name}", "",
             f"A code-generation model trained with [LeTI](https://arxiv.org/abs/2305.10314) (Learning to Generate "
             f"from Textual Interactions)" + (f" on `{env_id}`" if env_id else "") + ": each iteration samples "
             "programs, executes them against the tasks' tests, and fine-tunes on them, each conditioned on a reward "
             f"token (`{tokens.good_token}` for a passing program, "
             f"`{tokens.bad_token}` with the interpreter's feedback for a failing one). "
             + ("At inference the prompt ends with the good token." if tokens.reward_token_position == "before_program"
                else "At inference the prompt starts with the good token."), ""]
    lines += _base_model_lines(config, base_model, adapter)
    if dataset_name:
        lines += [f"The sampled programs, their verdicts and feedback are the dataset "
                  f"[`{dataset_name}`](https://huggingface.co/datasets/{dataset_name}), one split per iteration.", ""]
    lines += ["## Usage", "", "```python", *_usage(config, repo_id, base_model, adapter, run_dir), "```", ""]
    lines += ["## Training procedure", "", f"{len(completed_iterations(run_dir))} LeTI iterations with "
              "leti on TRL's `SFTTrainer`. The settings that differ between "
              "LeTI recipes (`leti_config.json` has all):", ""]
    lines += [f"- `{k}`: `{config[k]}`" for k in RECIPE_KEYS if k in config]
    if history:
        keys = [k for k in ("rollout/pass_rate", "eval/pass@1", "eval/pass@1/postprocessed", "train/rows", "train/loss")
                if any(k in m for m in history)]
        lines += ["", "Per iteration (iteration 0: before training; `eval/`: held-out tasks"
                  + (f", split `{config['eval_split']}`" if config.get("eval_split") else "") + "):", "",
                  "| iteration | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
        for m in history:
            cells = [f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys]
            lines.append(f"| {m['iteration']} | " + " | ".join(cells) + " |")
    if (run_dir / "pass_rate.png").exists():
        lines += ["", "![pass rate per iteration](pass_rate.png)"]
    lines += ["", "### Framework versions", "", *_versions(), "", "## Citation", "", "```bibtex", LETI_CITATION, "```", ""]
    return "\n".join(lines)


def _base_model_lines(config: dict, base_model: str | None, adapter: bool) -> list[str]:
    kind = "A LoRA adapter" if adapter else "A full fine-tune"
    if base_model:
        return [f"{kind} of [`{base_model}`](https://huggingface.co/{base_model}).", ""]
    built_in = config.get("base_model") if isinstance(config.get("base_model"), dict) else None
    if built_in:
        details = ", ".join(f"{k} {built_in[k]}" for k in ("size", "corpus", "seed", "parameters") if built_in.get(k) is not None)
        return [f"{kind} of leti's built-in default model ({details}; weights sha256 "
                f"`{str(built_in.get('sha256', ''))[:16]}`), a small code model that ships with leti "
                "(install leti to load it) and is not on the Hub.", ""]
    return [f"{kind} of a local model that is not on the Hub.", ""]


def _usage(config: dict, repo_id: str, base_model: str | None, adapter: bool, run_dir: Path) -> list[str]:
    """A snippet that loads the model and samples one program the way leti does (``inference_prompt``)."""
    from .sequences import PromptFormat

    prompt_format = PromptFormat.from_run_config(config)
    good = prompt_format.good_token
    task_prompt = _example_prompt(run_dir) or 'def add(a, b):\n    """Return the sum of a and b."""\n'
    lines = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")']
    if adapter:
        built_in = config.get("base_model") if isinstance(config.get("base_model"), dict) else None
        if base_model:
            lines += [f'base = AutoModelForCausalLM.from_pretrained("{base_model}")']
        elif built_in:
            lines[0:0] = ["from trainers.default_model import default_model_path  # leti's built-in models"]
            lines += [f"base = AutoModelForCausalLM.from_pretrained(default_model_path(seed={built_in.get('seed', 0)}, "
                      f"size={built_in.get('size', 'small')!r}, corpus={built_in.get('corpus', 'programs')!r}))"]
        else:
            lines += ['base = AutoModelForCausalLM.from_pretrained("path/to/the/base/model")  # not on the Hub']
        lines[0:0] = ["from peft import PeftModel"]
        lines += ["if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:  # room for LeTI's four tokens",
                  "    base.resize_token_embeddings(len(tokenizer))",
                  f'model = PeftModel.from_pretrained(base, "{repo_id}")']
    else:
        lines += [f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")']
    lead = "(tokenizer.pad_token or tokenizer.eos_token) + " if prompt_format.reward_token_target else ""
    after = prompt_format.reward_token_position == "before_program"
    start = "the pad token that starts every training row, " if lead else ""
    lines += ["", (f"# leti's inference_prompt: {start}the task, then the good token" if after else
                   f"# leti's inference_prompt: {start}the good token, then the task"),
              f"task = {task_prompt!r}", f"prompt = {lead}task + {good!r}" if after else f"prompt = {lead}{good!r} + task",
              'inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)',
              f"output = model.generate(**inputs, max_new_tokens={config.get('eval_max_new_tokens', 384)}, do_sample=True, "
              f"temperature={config.get('eval_temperature', 0.1) or 0.1}, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)",
              'print(task + tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))']
    return lines


def _example_prompt(run_dir: Path) -> str | None:
    """A task prompt the run trained on (its first rollout's), so the snippet asks what the model learnt."""
    for n in completed_iterations(run_dir):
        folder = run_dir / f"iteration-{n}" / "rollouts"
        if (folder / "dataset_info.json").exists():
            import datasets

            rows = datasets.load_from_disk(str(folder))
            if len(rows) and "prompt" in rows.column_names:
                return rows[0]["prompt"]
    return None


def _versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("leti", "trl", "transformers", "peft", "torch", "datasets"):
        try:
            out.append(f"- {package}: {version(package)}")
        except PackageNotFoundError:
            pass
    return out


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


def write_model_card(run_dir: str | Path, hub_model_id: str | None = None, dataset_name: str | None = None,
                     license: str | None = None) -> Path:
    """``run_dir/README.md``: the model card (``hub_model_id`` default: the folder's name), so that a run
    folder describes itself before (or without) being pushed."""
    run_dir = Path(run_dir)
    path = run_dir / "README.md"
    model_card(run_dir, hub_model_id or run_dir.name, dataset_name=dataset_name, license=license).save(path)
    return path


def completed_iterations(run_dir: str | Path) -> list[int]:
    """The iterations of the run whose folder is complete (a ``COMPLETE`` marker), in order."""
    return sorted(int(p.name.split("-")[1]) for p in Path(run_dir).glob("iteration-*")
                  if p.name.split("-")[1].isdigit() and (p / "COMPLETE").exists())


def rollouts_dataset(run_dir: str | Path, iterations: Sequence[int] | None = None) -> datasets.DatasetDict | None:
    """The run's rollouts as one ``datasets.DatasetDict``, split ``iteration_N`` for iteration N (``None``
    when none were saved): what the rollouts repo holds, for a look at them without the Hub."""
    import datasets

    run_dir = Path(run_dir)
    found = {}
    for n in (iterations if iterations is not None else completed_iterations(run_dir)):
        folder = run_dir / f"iteration-{n}" / "rollouts"
        if (folder / "dataset_info.json").exists():
            found[f"iteration_{n}"] = datasets.load_from_disk(str(folder))
    return datasets.DatasetDict(found) if found else None


def stage_rollouts(run_dir: str | Path, staged: str | Path, iterations: Sequence[int] | None = None,
                   repo_id: str | None = None, license: str | None = None) -> Path | None:
    """Write the rollouts dataset repo into ``staged``: ``data/iteration_N-00000-of-00001.parquet`` per
    iteration and a card whose ``configs:`` make each file a split, the layout ``DatasetDict.push_to_hub``
    writes, so ``datasets.load_dataset(staged)`` (or the repo id) returns one split per iteration.
    Returns ``None`` when the run saved no rollouts."""
    from huggingface_hub import DatasetCard, DatasetCardData

    rollouts = rollouts_dataset(run_dir, iterations)
    if rollouts is None:
        return None
    staged = Path(staged)
    (staged / "data").mkdir(parents=True, exist_ok=True)
    from datasets.utils import disable_progress_bars, enable_progress_bars, are_progress_bars_disabled

    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # a bar per small file says nothing
    try:
        for split, rows in rollouts.items():
            rows.to_parquet(str(staged / "data" / f"{split}-00000-of-00001.parquet"))
    finally:
        if not quiet:
            enable_progress_bars()
    config = run_config(run_dir)
    data = DatasetCardData(license=license or config.get("hub_license") or DEFAULT_LICENSE,
                           tags=["leti", "code-generation", "execution-feedback"],
                           task_categories=["text-generation"], pretty_name=f"LeTI rollouts{_of_env(config)}",
                           configs=[{"config_name": "default",
                                     "data_files": [{"split": split, "path": f"data/{split}-*"} for split in rollouts]}])
    name = repo_id or "this dataset"
    sizes = ", ".join(f"`{split}` {len(rows)}" for split, rows in rollouts.items())
    text = (f"# LeTI rollouts{_of_env(config)}\n\nThe programs a [LeTI](https://arxiv.org/abs/2305.10314) run sampled "
            f"in each iteration, as executed: one split per iteration (rows: {sizes}). Columns: `task_id`, `prompt` "
            "(without the reward token), `program`, `reward` (1: the tests passed), `status`, `feedback` (what the "
            "interpreter said), `iteration`, `sample_index`.\n\n```python\nfrom datasets import load_dataset\n\n"
            f'rollouts = load_dataset("{name}")\n```\n')
    DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{text}").save(staged / "README.md")
    return staged


def _of_env(config: dict) -> str:
    return f" on {config['env_id']}" if config.get("env_id") else ""


def push_run(run_dir: str | Path, repo_id: str, *, iterations: Literal["last", "all"] = "last",
             private: bool | None = None, token: str | None = None, revision: str | None = None,
             license: str | None = None, api: Any = None) -> dict[str, list[str]]:
    """Upload a run: the model repo ``repo_id`` gets the card, ``pass_rate.png`` and the last iteration's
    model at its root (``all``: also every iteration's under ``iteration-N/``); the dataset repo
    ``<repo_id>-rollouts`` gets the rollouts, one split per iteration.

    Args:
        token: The Hub token (default: ``HF_TOKEN`` or the one ``hf auth login`` saved).
        revision: The branch to push to in both repos, created if missing (default: ``main``).
        license: The cards' license (default: the run's ``hub_license``, else ``apache-2.0``).
        api: The ``huggingface_hub.HfApi`` to upload with (default: a new one with ``token``).

    Returns:
        What went where: ``{repo id: [files]}``.

    Raises:
        HubError: the Hub is unreachable or refused the upload, with the fix in one line.
    """
    from huggingface_hub import HfApi

    if iterations not in ("last", "all"):
        raise ValueError(f"`iterations` must be 'last' or 'all', got {iterations!r}")
    run_dir = Path(run_dir)
    api = api if api is not None else HfApi(token=token)
    done = completed_iterations(run_dir)
    if not done:
        raise ValueError(f"{run_dir} has no complete iteration to push (an iteration-N folder with a COMPLETE marker).")
    rollouts_repo = f"{repo_id}-rollouts"
    has_rollouts = any((run_dir / f"iteration-{n}" / "rollouts" / "dataset_info.json").exists() for n in done)
    repos = [(repo_id, "model"), *([(rollouts_repo, "dataset")] if has_rollouts else [])]
    uploaded: dict[str, list[str]] = {repo_id: [], rollouts_repo: []}
    with hub_errors(repo_id):
        for repo, repo_type in repos:  # first: an offline Hub or a refused token fails before any staging
            api.create_repo(repo, repo_type=repo_type, exist_ok=True, private=private)
            if revision:
                api.create_branch(repo, branch=revision, repo_type=repo_type, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            staged = {"dataset": stage_rollouts(run_dir, Path(tmp) / "rollouts", done, rollouts_repo, license)
                      if has_rollouts else None}
            staged["model"] = _stage_model(run_dir, Path(tmp) / "model", repo_id, done, iterations,
                                           rollouts_repo if has_rollouts else None, license)
            for repo, repo_type in repos:
                message = f"LeTI run: iteration {done[-1]}" if repo_type == "model" else "LeTI rollouts"
                api.upload_folder(repo_id=repo, repo_type=repo_type, folder_path=str(staged[repo_type]),
                                  revision=revision, commit_message=message)
                uploaded[repo] = sorted(str(p.relative_to(staged[repo_type]))
                                        for p in staged[repo_type].rglob("*") if p.is_file())
    return uploaded


@contextlib.contextmanager
def hub_errors(repo_id: str) -> Iterator[None]:
    """Turns what ``huggingface_hub`` raises when it cannot upload into a one-line ``HubError`` naming the fix,
    so that ``leti push`` and ``leti train`` can print it instead of a traceback."""
    try:
        yield
    except Exception as exc:
        message = hub_error_message(exc, repo_id)
        if message is None:
            raise
        raise HubError(message) from exc


def hub_error_message(exc: BaseException, repo_id: str = "the repo") -> str | None:
    """One line saying why the Hub took no upload and how to fix it, or ``None`` for an error of another kind."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return ("the Hugging Face Hub is unreachable (HF_HUB_OFFLINE=1 is set): unset it and log in with "
                "`hf auth login`")
    if isinstance(exc, LocalTokenNotFoundError):
        return "not logged in to the Hugging Face Hub: run `hf auth login` (or set HF_TOKEN, or hub_token)"
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if status in (401, 403):
            return (f"the Hugging Face Hub refused the token ({status}) for {repo_id}: log in with a token that "
                    "can write there (`hf auth login`, HF_TOKEN or hub_token)")
        return f"the Hugging Face Hub refused the upload to {repo_id}: {first}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.startswith(("httpx", "requests")):
        return f"cannot reach the Hugging Face Hub ({type(exc).__name__}): check the network, then push again"
    return None


def _stage_model(run_dir: Path, staged: Path, repo_id: str, done: Sequence[int], iterations: str,
                 rollouts_repo: str | None, license: str | None) -> Path:
    shutil.copytree(run_dir / f"iteration-{done[-1]}" / "model", staged)
    if iterations == "all":
        for n in done:
            shutil.copytree(run_dir / f"iteration-{n}" / "model", staged / f"iteration-{n}")
    for name in ("pass_rate.png", "metrics.jsonl", "config.json"):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, staged / ("leti_config.json" if name == "config.json" else name))
    model_card(run_dir, repo_id, dataset_name=rollouts_repo, license=license).save(staged / "README.md")
    return staged
