"""failure_loss_weight: failing rows weigh less in TRL's own loss; weight 1 is exactly SFTTrainer's."""

from __future__ import annotations

import dataclasses

import pytest

from trainers import LetiConfig, Rollout
from trainers.sequences import LOSS_WEIGHT, build_rows

PROMPT = '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""'
GOOD = Rollout("MBPP/1", PROMPT, "\ndef add(a, b):\n    return a + b", 1.0, "passed", "")
BAD = Rollout("MBPP/1", PROMPT, "\ndef add(a, b):\n    return a - b", 0.0, "failed", "AssertionError: add(1, 2) returned -1")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(["<|bad|>", "<|good|>", "<|lang_feedback|>", "<|/lang_feedback|>"], special_tokens=True)
    return tokenizer


def _config(tmp_path, **changes):
    config = LetiConfig(output_dir=str(tmp_path), load_in_4bit=False, use_cpu=True, bf16=False, report_to=[],
                        per_device_train_batch_size=2, max_steps=1, learning_rate=1e-2, disable_tqdm=True,
                        activation_checkpointing=False)
    return dataclasses.replace(config, **changes)


def test_rows_carry_a_weight_only_off_the_papers_recipe(tmp_path, tokenizer):
    paper = build_rows([GOOD, BAD], _config(tmp_path), tokenizer, seed=0)
    assert all(LOSS_WEIGHT not in row for row in paper)  # the default rows are unchanged
    weighted = build_rows([GOOD, BAD], _config(tmp_path, failure_loss_weight=0.25), tokenizer, seed=0)
    assert [row[LOSS_WEIGHT] for row in weighted] == [1.0, 0.25]
    assert [{k: v for k, v in row.items() if k != LOSS_WEIGHT} for row in weighted] == paper
    with pytest.raises(ValueError, match="failure_loss_weight"):
        _config(tmp_path, failure_loss_weight=-1.0).__post_init__()
    with pytest.raises(ValueError, match="feedback_mode='none'"):
        LetiConfig(output_dir=str(tmp_path), load_in_4bit=False, feedback_mode="none", failure_loss_weight=0.5)


def _trainer(tmp_path, model_dir, tokenizer, rows):
    import datasets
    from transformers import AutoModelForCausalLM

    from trainers.weighted_loss import WeightedSFTTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.resize_token_embeddings(len(tokenizer))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return WeightedSFTTrainer(model=model, args=_config(tmp_path), train_dataset=datasets.Dataset.from_list(rows),
                              processing_class=tokenizer)


def test_the_loss_is_each_rows_token_losses_times_its_weight(tmp_path, tiny_model_dir, tokenizer):
    """On one collated batch, the trainer's loss is sum(weight x token loss) / tokens, computed here from the
    model's own logits; weight 1 everywhere is exactly SFTTrainer's loss."""
    import torch

    w = 0.25
    rows = build_rows([GOOD, BAD], _config(tmp_path, failure_loss_weight=w), tokenizer, seed=0)
    trainer = _trainer(tmp_path, tiny_model_dir, tokenizer, rows)
    batch = next(iter(trainer.get_train_dataloader()))  # the real path: dataset, column filter, collator
    assert LOSS_WEIGHT not in batch and "loss_weights" in batch
    order = [row["input_ids"] for row in rows]
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:],
                                                ignore_index=-100, reduction="none")
        per_row = nll.sum(dim=1)
        tokens = (batch["labels"][:, 1:] != -100).sum()
        weights = torch.tensor([1.0 if batch["input_ids"][i, :len(order[0])].tolist() == order[0] else w
                                for i in range(2)])
        expected = float((per_row * weights).sum() / tokens)
        unweighted = float(per_row.sum() / tokens)
        loss = float(trainer.compute_loss(model, dict(batch)))
        plain = float(trainer.compute_loss(model, {**batch, "loss_weights": torch.ones_like(batch["loss_weights"])}))
    assert loss == pytest.approx(expected, rel=1e-4)
    assert plain == pytest.approx(unweighted, rel=1e-4) and loss < plain


def test_a_zero_weight_row_moves_no_weight(tmp_path, tiny_model_dir, tokenizer):
    """One optimizer step on failing rows of weight 0 leaves the model as it was (with no weight decay, which
    moves every weight); the same step at weight 1 changes it: the weight reaches the gradients, not just the
    logged loss."""
    import torch

    def step(weight: float) -> float:
        rows = build_rows([BAD, BAD], _config(tmp_path, failure_loss_weight=weight), tokenizer, seed=0)
        trainer = _trainer(tmp_path / f"w{weight}", tiny_model_dir, tokenizer, rows)
        trainer.args.weight_decay = 0.0
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        return max(float((p.detach() - before[n]).abs().max()) for n, p in trainer.model.named_parameters())

    assert step(0.0) == 0.0
    assert step(1.0) > 1e-4


def test_a_leti_run_trains_with_weighted_failing_rows_and_the_pretraining_mix(tmp_path, tiny_model_dir, mbpp_tasks):
    """LetiTrainer end to end: the iteration's rows (LeTI rows and pre-training blocks, in Arrow) carry their
    weights, failing rows at the option's, passing rows and blocks at 1; the iteration trains and completes."""
    import datasets

    from tests.trainers.conftest import small_config
    from trainers import LetiTrainer

    corpus = tmp_path / "corpus"
    datasets.Dataset.from_list([{"content": "def f(x):\n    return x * 2\n" * 40} for _ in range(4)]).save_to_disk(str(corpus))
    config = small_config(tmp_path / "run", num_iterations=1, failure_loss_weight=0.3, pretrain_dataset=str(corpus),
                          pretrain_block_size=32, per_device_train_batch_size=2)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2], eval_tasks=mbpp_tasks[:1])
    rollouts = trainer.collect_rollouts(1, tmp_path / "run" / "iteration-1" / "rollouts")
    rows = trainer.training_rows(rollouts, 1)
    bad = trainer.new_token_ids[0]
    weights = {(row["input_ids"][1] == bad, round(row[LOSS_WEIGHT], 6)) for row in rows}
    assert weights == {(True, 0.3), (False, 1.0)}  # failing rows; passing rows and pre-training blocks
    trainer.train()
    assert (tmp_path / "run" / "iteration-1" / "COMPLETE").exists()
