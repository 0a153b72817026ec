"""The Hub: what a LeTI run hands to huggingface_hub, read back the way a user of the Hub reads it.

Only the Hub's own calls (``HfApi.create_repo``, ``create_branch``, ``upload_folder``) are replaced, by a
recorder that keeps a copy of each staged folder; the run, the staging, the cards and the datasets are real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainers.conftest import small_config
from trainers import LetiConfig, LetiTrainer


class RecordingApi:
    """huggingface_hub.HfApi's calls that push_run makes, recorded instead of sent; each uploaded folder is
    copied to ``keep`` (push_run stages it in a temporary folder)."""

    instances: list = []
    keep: Path | None = None

    def __init__(self, *args, token=None, **kwargs):
        self.token = token
        self.calls: list = []
        self.folders: list[Path] = []
        RecordingApi.instances.append(self)

    def create_repo(self, repo_id, *, repo_type=None, exist_ok=False, private=None):
        self.calls.append(("create_repo", repo_id, repo_type or "model"))

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False):
        self.calls.append(("create_branch", repo_id, repo_type or "model", branch))

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, revision=None, commit_message=None):
        folder = Path(folder_path)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, repo_type or "model", revision, files))
        copy = RecordingApi.keep / f"upload-{len(list(RecordingApi.keep.iterdir()))}"
        shutil.copytree(folder, copy)
        self.folders.append(copy)


def _uploads(repo_type: str) -> list[Path]:
    return [f for api in RecordingApi.instances for c, f in zip([c for c in api.calls if c[0] == "upload_folder"],
                                                                 api.folders) if c[2] == repo_type]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_model_dir, mbpp_tasks):
    """A 2-iteration run of a base model loaded from the Hub cache, pushed after every iteration to a branch."""
    tmp = tmp_path_factory.mktemp("hub")
    # the tiny model where the Hub cache keeps `someone/tiny-base`: a base model with a Hub id
    base = tmp / "hub-cache" / "models--someone--tiny-base" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_model_dir, base)
    RecordingApi.instances.clear()
    RecordingApi.keep = tmp / "uploads"
    RecordingApi.keep.mkdir()
    config = small_config(tmp / "run", num_iterations=2, hub_model_id="someone/leti-tiny", push_to_hub=True,
                          hub_strategy="every_save", hub_revision="leti-run", hub_token="hf_not_a_real_token",
                          hub_license="mit")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("huggingface_hub.HfApi", RecordingApi)
        trainer = LetiTrainer(str(base), config, train_tasks=mbpp_tasks[:2], eval_tasks=mbpp_tasks[2:3])
        trainer.train()
        calls = [c for api in RecordingApi.instances for c in api.calls]
        tokens = [api.token for api in RecordingApi.instances]
        yield trainer, tmp / "run", calls, tokens, patch


def test_every_save_pushes_each_iteration_to_the_revision_with_the_token(pushed):
    trainer, run, calls, tokens, _ = pushed
    assert tokens == ["hf_not_a_real_token", "hf_not_a_real_token"]  # hub_token: one client per push (2 iterations)
    one_push = [("create_repo", "someone/leti-tiny", "model"),  # the repos first: a refusal comes before staging
                ("create_branch", "someone/leti-tiny", "model", "leti-run"),
                ("create_repo", "someone/leti-tiny-rollouts", "dataset"),
                ("create_branch", "someone/leti-tiny-rollouts", "dataset", "leti-run"),
                ("upload_folder", "someone/leti-tiny", "model", "leti-run"),
                ("upload_folder", "someone/leti-tiny-rollouts", "dataset", "leti-run")]
    assert [c[:4] for c in calls] == one_push * 2  # hub_strategy="every_save": after iteration 1, and at the end
    first_rollouts, last_rollouts = (c[4] for c in calls if c[:3] == ("upload_folder", "someone/leti-tiny-rollouts", "dataset"))
    assert first_rollouts == ["README.md", "data/iteration_1-00000-of-00001.parquet"]
    assert last_rollouts == ["README.md", "data/iteration_1-00000-of-00001.parquet",
                             "data/iteration_2-00000-of-00001.parquet"]
    last_model = calls[-2][4]
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "pass_rate.png", "leti_config.json"} <= \
        set(last_model)
    assert not any(f.startswith("iteration-") for f in last_model)  # the final model at the root
    recorded = json.loads((run / "config.json").read_text())
    assert "hf_not_a_real_token" not in (run / "config.json").read_text()  # the token is never written down
    assert recorded["good_token"] == "<|good|>" and recorded["base_model_hub_id"] == "someone/tiny-base"
    assert recorded["env_id"] == "LETI-MBPP"  # from the task ids: a Python API run says what it trained on


def test_pushed_rollouts_load_with_load_dataset_as_one_split_per_iteration(pushed, tmp_path):
    import datasets

    staged = _uploads("dataset")[-1]
    loaded = datasets.load_dataset(str(staged), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["iteration_1", "iteration_2"]
    assert {split: loaded[split].num_rows for split in loaded} == {"iteration_1": 4, "iteration_2": 4}
    assert set(loaded["iteration_2"]["iteration"]) == {2}  # each split holds its own iteration's samples
    assert {"task_id", "prompt", "program", "reward", "status", "feedback"} <= set(loaded["iteration_1"].column_names)
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(staged / "README.md").data
    assert card.license == "mit" and "leti" in card.tags  # hub_license on the rollouts' card too


def test_the_model_card_metadata_reads_back(pushed):
    from huggingface_hub import ModelCard

    _, run, _, _, _ = pushed
    card = ModelCard.load(_uploads("model")[-1] / "README.md")
    data = card.data
    assert data.library_name == "peft"  # a LoRA adapter
    assert data.base_model == "someone/tiny-base"
    assert data.datasets == ["someone/leti-tiny-rollouts", "google-research-datasets/mbpp"]
    assert data.license == "mit" and "leti" in data.tags and "lora" in data.tags
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    (result,) = data.eval_results  # the model-index: the last iteration's held-out pass@1 (eval_k=[1])
    assert result.metric_type == "pass@1" and result.metric_value == last["eval/pass@1"]
    assert result.dataset_name == "LETI-MBPP" and result.dataset_type == "google-research-datasets/mbpp"
    assert card.data.to_dict()["model-index"][0]["name"] == "leti-tiny"
    text = card.text
    assert "'<|good|>' + task" in text and "(tokenizer.pad_token or tokenizer.eos_token)" in text
    assert 'PeftModel.from_pretrained(base, "someone/leti-tiny")' in text
    assert 'AutoModelForCausalLM.from_pretrained("someone/tiny-base")' in text
    assert "## Training procedure" in text and "`num_generations_per_prompt`: `2`" in text and "| 2 |" in text
    assert "2305.10314" in text and "licence" not in card.content and "time machine" not in text
    compile(text.split("```python\n")[1].split("```")[0], "usage", "exec")  # the usage snippet is valid Python


def test_a_run_on_the_builtin_default_model_names_no_hub_base(pushed, tmp_path):
    from trainers.hub import model_card

    _, run, _, _, _ = pushed
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    recorded = json.loads((copy / "config.json").read_text())
    # what `leti train` records for its built-in default model (trainers.default_model.base_model_record)
    del recorded["base_model_hub_id"]
    recorded.update(model_name_or_path="default", base_model={"path": "/x/small", "sha256": "ab" * 32, "shipped": True,
                                                              "seed": 0, "size": "small", "corpus": "programs"})
    (copy / "config.json").write_text(json.dumps(recorded))
    card = model_card(copy, "someone/leti-default")
    assert card.data.base_model is None and "default" not in json.dumps(card.data.to_dict().get("base_model"))
    assert "leti's built-in default model (size small, corpus programs, seed 0" in card.text
    assert "default_model_path(seed=0, size='small', corpus='programs')" in card.text
    # the last iteration's folder holding a full model, not an adapter (use_peft=False): library transformers
    (copy / "iteration-2" / "model" / "adapter_config.json").unlink()
    card = model_card(copy, "someone/leti-default")
    assert card.data.library_name == "transformers" and "lora" not in card.data.tags
    assert 'model = AutoModelForCausalLM.from_pretrained("someone/leti-default")' in card.text
    # a run with the reward token before the program: the snippet's prompt ends with it
    recorded["reward_token_position"] = "before_program"
    (copy / "config.json").write_text(json.dumps(recorded))
    card = model_card(copy, "someone/leti-default")
    assert "task + '<|good|>'" in card.text and "'<|good|>' + task" not in card.text
    assert "prompt ends with the good token" in card.text and "`reward_token_position`: `before_program`" in card.text
    compile(card.text.split("```python\n")[1].split("```")[0], "usage", "exec")


def test_push_again_every_iteration_and_leti_push(pushed):
    trainer, run, _, _, _ = pushed
    RecordingApi.instances.clear()
    uploaded = trainer.push_to_hub(iterations="all", repo_id="someone/every")
    assert {"iteration-1/adapter_config.json", "iteration-2/adapter_config.json", "adapter_config.json"} <= \
        set(uploaded["someone/every"])
    with pytest.raises(ValueError, match="`iterations` must be 'last' or 'all'"):
        trainer.push_to_hub(iterations="best")

    # `leti push`: the same upload of a run folder, later, from the command line
    from huggingface_hub import ModelCard

    from trainers.cli import main

    RecordingApi.instances.clear()
    assert main(["push", "--run", str(run), "--repo", "someone/later", "--license", "bsd-3-clause"]) == 0
    (api,) = RecordingApi.instances
    assert [c[:4] for c in api.calls] == [("create_repo", "someone/later", "model"),
                                          ("create_repo", "someone/later-rollouts", "dataset"),
                                          ("upload_folder", "someone/later", "model", None),
                                          ("upload_folder", "someone/later-rollouts", "dataset", None)]
    pushed_card = ModelCard.load(api.folders[0] / "README.md").data
    assert pushed_card.datasets[0] == "someone/later-rollouts" and pushed_card.license == "bsd-3-clause"
    assert ModelCard.load(run / "README.md").data.datasets[0] == "someone/later-rollouts"  # the run folder's card too
    assert main(["push", "--run", str(run.parent / "nothing"), "--repo", "someone/x"]) == 2


def test_leti_push_offline_says_so_in_one_line(pushed):
    _, run, _, _, _ = pushed
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("LETI_TRACEBACK", None)
    done = subprocess.run([sys.executable, "-m", "trainers.cli", "push", "--run", str(run), "--repo", "someone/x"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == ("leti push: error: the Hugging Face Hub is unreachable (HF_HUB_OFFLINE=1 is set): "
                                   "unset it and log in with `hf auth login`")
    assert "Traceback" not in done.stdout + done.stderr


def test_hub_strategy_checkpoint_is_refused_with_the_alternative(tmp_path):
    with pytest.raises(ValueError, match="Use 'every_save' to push after every iteration"):
        LetiConfig(output_dir=str(tmp_path), hub_strategy="checkpoint", load_in_4bit=False)
    assert LetiConfig(output_dir=str(tmp_path), load_in_4bit=False).hub_strategy.value == "end"  # one upload per run


class RefusingApi(RecordingApi):
    """The Hub's answers to a missing login and to a token without write access, as huggingface_hub raises them."""

    def __init__(self, error, **kwargs):
        super().__init__(**kwargs)
        self.error = error

    def create_repo(self, repo_id, **kwargs):
        raise self.error


def test_a_missing_login_or_a_refused_token_is_one_line_with_the_fix(pushed):
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    from trainers.hub import HubError, push_run

    _, run, _, _, _ = pushed
    with pytest.raises(HubError, match=r"^not logged in to the Hugging Face Hub: run `hf auth login`") as raised:
        push_run(run, "someone/x", api=RefusingApi(LocalTokenNotFoundError("Token is required")))
    assert "\n" not in str(raised.value)
    response = httpx.Response(403, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
    refused = HfHubHTTPError("403 Forbidden: You don't have the rights to create a model under this namespace",
                             response=response)
    with pytest.raises(HubError, match=r"refused the token \(403\) for someone/x: log in with a token that can write"):
        push_run(run, "someone/x", api=RefusingApi(refused))
