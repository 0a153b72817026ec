"""The Hub: the run's model card, and exactly what push_to_hub hands to huggingface_hub (the upload is a stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainers.conftest import small_config
from trainers import LetiTrainer


class RecordingApi:
    """huggingface_hub.HfApi's two calls that push_run makes, recorded instead of sent (nothing else is a stand-in)."""

    instances: list = []

    def __init__(self, *args, **kwargs):
        self.calls: list = []
        self.readme = ""
        self.parquet_rows: dict[str, int] = {}
        RecordingApi.instances.append(self)

    def create_repo(self, repo_id, *, repo_type=None, exist_ok=False, private=None):
        self.calls.append(("create_repo", repo_id, repo_type or "model"))

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None):
        import pyarrow.parquet as pq

        folder = Path(folder_path)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, repo_type or "model", files))
        if (folder / "README.md").exists():
            self.readme = (folder / "README.md").read_text()
        for f in folder.rglob("*.parquet"):
            self.parquet_rows[f.name] = pq.read_metadata(f).num_rows


def test_push_hands_the_card_models_and_rollouts_to_the_hub(tmp_path, tiny_model_dir, mbpp_tasks, monkeypatch):
    monkeypatch.setattr("huggingface_hub.HfApi", RecordingApi)
    config = small_config(tmp_path / "run", num_iterations=2, hub_model_id="someone/leti-tiny", push_to_hub=True)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2], eval_tasks=mbpp_tasks[2:3])
    trainer.train()  # push_to_hub=True: the last iteration, once training ends
    card = (tmp_path / "run" / "README.md").read_text()  # written into the run folder too
    assert "leti" in card and "trl" in card and "2305.10314" in card and "LeTI: Learning to Generate" in card
    assert "| 0 |" in card and "| 2 |" in card and "`num_generations_per_prompt`: `2`" in card
    (api,) = RecordingApi.instances
    model_files = api.calls[1][3]
    assert api.calls[0] == ("create_repo", "someone/leti-tiny", "model")
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "pass_rate.png", "leti_config.json"} <= set(model_files)
    assert not any(f.startswith("iteration-") for f in model_files)  # "last": the final model at the root
    assert api.calls[2:4] == [("create_repo", "someone/leti-tiny-rollouts", "dataset"),
                              ("upload_folder", "someone/leti-tiny-rollouts", "dataset",
                               ["data/iteration_1.parquet", "data/iteration_2.parquet"])]
    assert api.parquet_rows == {"data/iteration_1.parquet".split("/")[1]: 4, "iteration_2.parquet": 4}
    assert "someone/leti-tiny-rollouts" in api.readme  # the card names the rollouts dataset

    RecordingApi.instances.clear()
    uploaded = trainer.push_to_hub(iterations="all", repo_id="someone/every")
    assert {"iteration-1/adapter_config.json", "iteration-2/adapter_config.json", "adapter_config.json"} <= \
        set(uploaded["someone/every"])
    with pytest.raises(ValueError, match="`iterations` must be 'last' or 'all'"):
        trainer.push_to_hub(iterations="best")

    # `leti push`: the same upload of a run folder, later, from the command line
    from trainers.cli import main

    RecordingApi.instances.clear()
    assert main(["push", "--run", str(tmp_path / "run"), "--repo", "someone/later"]) == 0
    (api,) = RecordingApi.instances
    assert [c[:3] for c in api.calls] == [("create_repo", "someone/later", "model"),
                                          ("upload_folder", "someone/later", "model"),
                                          ("create_repo", "someone/later-rollouts", "dataset"),
                                          ("upload_folder", "someone/later-rollouts", "dataset")]
    assert "someone/later-rollouts" in api.readme  # the card was rewritten for this repo
    assert main(["push", "--run", str(tmp_path / "nothing"), "--repo", "someone/x"]) == 2
