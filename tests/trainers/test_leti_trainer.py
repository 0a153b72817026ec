"""LetiTrainer end to end on a tiny offline model: iterations, tokens, saving, resuming, QLoRA, errors."""

from __future__ import annotations

import json
import shutil
import math
import sys

import pytest
import torch

from tests.trainers.conftest import small_config
from trainers import LetiTrainer, load_rollouts
from trainers.sequences import inference_prompt




def token_rows(trainer, ids):
    with torch.no_grad():
        return trainer.model.get_input_embeddings()(torch.tensor(ids)).clone()


def lora_weights(model) -> dict:
    """Every LoRA A and B matrix (B starts at zero: a trained adapter has moved it)."""
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n}


def assert_lora_trained(before: dict, after: dict) -> None:
    assert before and set(before) == set(after)
    assert all(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)  # every B left zero
    assert sum(not torch.equal(before[n], after[n]) for n in before if "lora_A" in n) == len(before) // 2


def test_two_iterations_on_mbpp(tmp_path, tiny_model_dir, mbpp_tasks):
    trainer = LetiTrainer(str(tiny_model_dir), small_config(tmp_path), train_tasks=mbpp_tasks, eval_tasks=mbpp_tasks[:2])
    ids = trainer.new_token_ids
    assert trainer.tokenizer.convert_ids_to_tokens(ids) == ["<|bad|>", "<|good|>", "<|lang_feedback|>", "<|/lang_feedback|>"]
    assert trainer.new_token_mode() == "trainable_tokens"
    before = token_rows(trainer, ids)
    plain_before = token_rows(trainer, [10, 11])
    base = next(p for n, p in trainer.model.named_parameters() if n.endswith("q_proj.base_layer.weight")).detach().clone()
    lora_before = lora_weights(trainer.model)

    metrics = trainer.train()
    assert_lora_trained(lora_before, lora_weights(trainer.model))

    assert metrics["iteration"] == 2 and math.isfinite(metrics["train/loss"]) and "eval/pass@1" in metrics
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in history] == [0, 1, 2]
    for iteration in (1, 2):
        folder = tmp_path / f"iteration-{iteration}"
        assert (folder / "COMPLETE").exists() and (folder / "model" / "adapter_model.safetensors").exists()
        rollouts = load_rollouts(folder / "rollouts")
        assert len(rollouts) == 4 * 2 and {r.iteration for r in rollouts} == {iteration}
        assert {r.task_id for r in rollouts} == {t.task_id for t in mbpp_tasks}
        assert all(r.reward in (0.0, 1.0) and (r.feedback == "") == (r.reward == 1.0) for r in rollouts)
    # the reward/feedback tokens that appeared in the rows were trained; ordinary rows and base weights were not
    after = token_rows(trainer, ids)
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[2], after[2])
    assert torch.allclose(plain_before, token_rows(trainer, [10, 11]))
    assert torch.equal(base, next(p for n, p in trainer.model.named_parameters() if n.endswith("q_proj.base_layer.weight")))


def test_duplicate_samples_are_executed_once_with_the_same_verdicts(tmp_path, tiny_model_dir, mbpp_tasks):
    task = mbpp_tasks[0]
    wrong = "\ndef nothing():\n    pass\n"
    pairs = [(task, task.reference_solution), (task, wrong), (task, task.reference_solution), (mbpp_tasks[1], wrong),
             (task, wrong)]
    totals: list[int] = []
    trainer = LetiTrainer(str(tiny_model_dir), small_config(tmp_path), train_tasks=mbpp_tasks)
    results = trainer.collector.runner.run(pairs, progress=lambda done, total: totals.append(total))
    assert totals[-1] == 3  # three distinct (task, program) pairs ran
    assert [r.status for r in results] == ["passed", "error", "passed", "error", "error"]  # NameError
    assert results[1].feedback == results[4].feedback and results[1].feedback != results[3].feedback  # per task
    totals.clear()
    again = trainer.collector.runner.run(pairs + [(mbpp_tasks[1], task.reference_solution)],
                                         progress=lambda done, total: totals.append(total))
    assert totals[-1] == 1  # a later iteration runs only what this run has not run yet
    assert again[:5] == results and not again[5].passed  # another task's solution is no answer to this one
    every = LetiTrainer(str(tiny_model_dir), small_config(tmp_path / "every", deduplicate_execution=False),
                        train_tasks=mbpp_tasks)
    totals.clear()
    assert [r.status for r in every.collector.runner.run(pairs, progress=lambda done, total: totals.append(total))] == \
        [r.status for r in results]
    assert totals[-1] == 5


def test_replay_reads_the_latest_passing_programs_from_the_run_folder(tmp_path, tiny_model_dir, mbpp_tasks):
    from trainers import Rollout, save_rollouts

    task = mbpp_tasks[0]
    def rollout(iteration, program, reward):
        return Rollout(task.task_id, task.prompt, program, reward, "passed" if reward else "failed", "", iteration)
    save_rollouts([rollout(1, "old", 1.0), rollout(1, "bad", 0.0)], tmp_path / "iteration-1" / "rollouts")
    save_rollouts([rollout(2, "bad", 0.0)], tmp_path / "iteration-2" / "rollouts")  # no pass: keeps iteration 1's
    trainer = LetiTrainer(str(tiny_model_dir), small_config(tmp_path, replay_passing=True, keep_passing="distinct"),
                          train_tasks=mbpp_tasks)
    assert [r.program for r in trainer._earlier_passing(3)[task.task_id]] == ["old"]
    save_rollouts([rollout(3, "new", 1.0)], tmp_path / "iteration-3" / "rollouts")
    assert [r.program for r in trainer._earlier_passing(4)[task.task_id]] == ["new"]  # the latest replaces it
    rows = trainer.training_rows([rollout(4, "bad", 0.0)], 4)
    texts = [trainer.tokenizer.decode(r["input_ids"][1:]) for r in rows]  # [0]: the pad before the reward token
    assert texts[0].startswith("<|bad|>") and texts[1] == "<|good|>" + task.prompt + "new"


def test_train_on_references_trains_on_the_ground_truth_only(tmp_path, tiny_model_dir, mbpp_tasks):
    """The SFT comparison: the iteration's rows are the tasks' reference programs, whatever was sampled."""
    from trainers import Rollout

    tasks = mbpp_tasks[:3]
    trainer = LetiTrainer(str(tiny_model_dir), small_config(tmp_path, train_on="references", keep_passing="distinct"),
                          train_tasks=tasks)
    sampled = [Rollout(t.task_id, t.prompt, "wrong", 0.0, "failed", "AssertionError", 1) for t in tasks]
    rows = trainer.training_rows(sampled, 1)
    texts = sorted(trainer.tokenizer.decode(r["input_ids"]).replace(trainer.tokenizer.pad_token or "", "") for r in rows)
    assert texts == sorted("<|good|>" + t.prompt + t.reference_solution for t in tasks)
    assert not any("wrong" in t or "<|bad|>" in t for t in texts)
    bare = [type(t)(t.task_id, t.prompt, t.tests) for t in tasks]  # no reference program
    with pytest.raises(ValueError, match="train_on='references' needs a reference program for every training task"):
        LetiTrainer(str(tiny_model_dir), small_config(tmp_path / "b", train_on="references"),
                    train_tasks=bare).training_rows(sampled, 1)


def test_saved_adapter_loads_with_peft_and_generates(tmp_path, tiny_model_dir, mbpp_tasks):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = LetiTrainer(str(tiny_model_dir), small_config(tmp_path, num_iterations=1, eval_before_training=False),
                          train_tasks=mbpp_tasks[:2])
    trainer.train()
    saved = tmp_path / "iteration-1" / "model"
    tokenizer = AutoTokenizer.from_pretrained(saved)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, saved).eval()
    inputs = tokenizer("<|good|>" + mbpp_tasks[0].prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        ours = trainer.model.eval()(**inputs).logits
        loaded = model(**inputs).logits
    assert torch.allclose(ours, loaded, atol=1e-5)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


def test_resume_after_a_crash_reuses_saved_rollouts(tmp_path, tiny_model_dir, mbpp_tasks, monkeypatch):
    config = small_config(tmp_path, eval_before_training=False)
    original_fit = LetiTrainer._fit

    def crash_in_iteration_two(self, rows, folder):
        if folder.name == "iteration-2":
            raise KeyboardInterrupt("simulated crash after sampling")
        return original_fit(self, rows, folder)

    monkeypatch.setattr(LetiTrainer, "_fit", crash_in_iteration_two)
    with pytest.raises(KeyboardInterrupt):
        LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2]).train()
    rollouts_file = next((tmp_path / "iteration-2" / "rollouts").glob("*.arrow"))
    saved_at = rollouts_file.stat().st_mtime_ns
    assert not (tmp_path / "iteration-2" / "COMPLETE").exists()

    from peft import load_peft_weights

    iteration_one = load_peft_weights(str(tmp_path / "iteration-1" / "model"))
    started_from = {}

    def record_start(self, rows, folder):
        started_from["lora"] = {n: p.detach().clone() for n, p in self.model.named_parameters() if "lora_B" in n}
        return original_fit(self, rows, folder)

    monkeypatch.setattr(LetiTrainer, "_fit", record_start)
    resumed = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2])
    metrics = resumed.train()
    assert metrics["iteration"] == 2 and (tmp_path / "iteration-2" / "COMPLETE").exists()
    assert rollouts_file.stat().st_mtime_ns == saved_at, "the saved rollouts were sampled again"
    saved_b = {k: v for k, v in iteration_one.items() if "lora_B" in k}
    assert saved_b and all(any(torch.equal(v, w) for w in started_from["lora"].values()) for v in saved_b.values())
    assert [json.loads(line)["iteration"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_qlora_4bit_runs_an_iteration_on_cpu(tmp_path, tiny_model_dir, mbpp_tasks):
    import bitsandbytes as bnb

    config = small_config(tmp_path, num_iterations=1, load_in_4bit=True, bf16=True, eval_before_training=False)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2])
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    lora_before = lora_weights(trainer.model)
    metrics = trainer.train()
    assert_lora_trained(lora_before, lora_weights(trainer.model))
    assert math.isfinite(metrics["train/loss"]) and (tmp_path / "iteration-1" / "model" / "adapter_model.safetensors").exists()


def test_qlora_trains_on_a_cpu_where_bitsandbytes_switches_to_its_inference_layout(tmp_path, tiny_model_dir, mbpp_tasks,
                                                                                   monkeypatch):
    """On a CPU with AVX512-BF16, bitsandbytes converts a 4-bit weight to an inference-only layout at its first
    eval-mode forward and never back; training then failed. Here that CPU is made on any CPU: the layers
    believe they have AVX512-BF16 (as bitsandbytes decides at construction), and every weight arrives already
    converted, exactly as bitsandbytes' forward converts it (a caller sampled from the model first)."""
    import bitsandbytes as bnb
    import bitsandbytes.nn.modules as bnb_modules
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    from trainers.model_setup import _load_model

    config = small_config(tmp_path, num_iterations=1, load_in_4bit=True, bf16=True, eval_before_training=False)
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    model = _load_model(str(tiny_model_dir), config)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.support_avx512bf16_for_cpu for m in layers)
    for layer in layers:
        layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(layer.weight.data,
                                                                                    layer.weight.quant_state)
    assert all(m.weight.quant_state.packing_format_for_cpu for m in layers)

    trainer = LetiTrainer(model, config, train_tasks=mbpp_tasks[:2])
    lora_before = lora_weights(trainer.model)
    metrics = trainer.train()  # samples in eval mode (where the switch would convert again), then trains
    assert_lora_trained(lora_before, lora_weights(trainer.model))
    assert math.isfinite(metrics["train/loss"])
    assert not any(m.support_avx512bf16_for_cpu or m.weight.quant_state.packing_format_for_cpu for m in layers)


def test_tied_embeddings_train_the_whole_embedding(tmp_path, tiny_tied_model_dir, mbpp_tasks):
    config = small_config(tmp_path, num_iterations=1, eval_before_training=False)
    trainer = LetiTrainer(str(tiny_tied_model_dir), config, train_tasks=mbpp_tasks[:2])
    assert trainer.new_token_mode() == "embeddings"
    before, lora_before = token_rows(trainer, trainer.new_token_ids), lora_weights(trainer.model)
    trainer.train()
    assert not torch.allclose(before[0], token_rows(trainer, trainer.new_token_ids)[0])
    assert_lora_trained(lora_before, lora_weights(trainer.model))


def test_bad_setups_fail_before_sampling(tmp_path, tiny_model_dir, mbpp_tasks, monkeypatch):
    from transformers import AutoModelForCausalLM

    config = small_config(tmp_path)
    with pytest.raises(ValueError, match="unknown environment id 'LETI-Nope'.*Registered leti ids"):
        LetiTrainer(str(tiny_model_dir), config, train_tasks="LETI-Nope")
    no_tokenizer = tmp_path / "weights-only"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(no_tokenizer)
    with pytest.raises(ValueError, match="(?s)could not load a tokenizer .* Pass processing_class=<tokenizer>"):
        LetiTrainer(str(no_tokenizer), config, train_tasks=mbpp_tasks)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(RuntimeError, match="`load_in_4bit=True` .*needs bitsandbytes.*set load_in_4bit=False"):
        LetiTrainer(str(tiny_model_dir), small_config(tmp_path, load_in_4bit=True), train_tasks=mbpp_tasks)
    with pytest.raises(TypeError, match="must be an environment id, a leti environment, a TaskSet or a list of CodeTask"):
        LetiTrainer(str(tiny_model_dir), config, train_tasks=42)


def test_pretraining_steps_alternate_through_trl(tmp_path, tiny_model_dir, mbpp_tasks):
    import datasets
    from trl import SFTTrainer

    corpus = tmp_path / "corpus"
    datasets.Dataset.from_list([{"content": "def f(x):\n    return x * 2\n" * 40} for _ in range(4)]).save_to_disk(str(corpus))
    config = small_config(tmp_path / "run", pretrain_dataset=str(corpus), pretrain_block_size=32, per_device_train_batch_size=2)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2])
    rollouts = trainer.collect_rollouts(1, tmp_path / "run" / "iteration-1" / "rollouts")
    rows = trainer.training_rows(rollouts, 1)
    reward_ids = set(trainer.new_token_ids[:2])
    kinds = ["leti" if row["input_ids"][1] in reward_ids else "pretrain" for row in rows]  # [0]: the leading pad
    assert kinds == ["leti", "leti", "pretrain", "pretrain"] * 2
    assert isinstance(rows, datasets.Dataset)  # blocks stay in Arrow: selected by index, never copied to lists
    sft = SFTTrainer(model=trainer.model, args=config, train_dataset=rows, processing_class=trainer.tokenizer)
    order = []
    for batch in sft.get_train_dataloader():  # the collator pads on the right: row starts are real tokens
        starts = {int(t) for t in batch["input_ids"][:, 1]}  # after the leading pad of LeTI rows
        order.append("leti" if starts <= reward_ids else "pretrain" if not starts & reward_ids else "mixed")
    assert order == ["leti", "pretrain", "leti", "pretrain"]


def test_pretraining_corpus_streamed_from_a_data_dir_stops_at_max_documents(tmp_path, tiny_model_dir, mbpp_tasks):
    # the recipes stream The Stack's data/python; a local folder of JSON lines takes the same path
    (tmp_path / "corpus" / "data" / "python").mkdir(parents=True)
    (tmp_path / "corpus" / "data" / "other").mkdir(parents=True)
    docs = [f"def f{i}(x):\n    return x + {i}\n" * 8 for i in range(10)]
    (tmp_path / "corpus" / "data" / "python" / "part.jsonl").write_text("".join(json.dumps({"content": d}) + "\n" for d in docs))
    (tmp_path / "corpus" / "data" / "other" / "part.jsonl").write_text(json.dumps({"content": "NOT PYTHON " * 50}) + "\n")
    config = small_config(tmp_path / "run", pretrain_dataset=str(tmp_path / "corpus"), pretrain_data_dir="data/python",
                          pretrain_max_documents=3, pretrain_block_size=16, pretrain_test_size=None)  # file order
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2])
    text = trainer.tokenizer.decode([t for row in trainer.pretraining_rows() for t in row["input_ids"]])
    assert text.startswith(docs[0]) and "f2(x)" in text and "f3(x)" not in text and "NOT PYTHON" not in text
    bad = small_config(tmp_path / "run2", pretrain_dataset=str(tmp_path / "corpus"), pretrain_data_dir="data/python",
                       pretrain_text_field="code")
    with pytest.raises(ValueError, match="has no column 'code'.*set `pretrain_text_field`"):
        LetiTrainer(str(tiny_model_dir), bad, train_tasks=mbpp_tasks[:2]).pretraining_rows()


def test_one_iteration_on_eae_with_its_stop_strings(tmp_path, tiny_model_dir):
    import leti_env

    tasks = leti_env.load_tasks("LETI-EAE", None, 3)  # with LETI-EAE's limits: its 30 s
    config = small_config(tmp_path, num_iterations=1, eval_before_training=False, postprocess_rollouts=True,
                          max_new_tokens=24)
    metrics = LetiTrainer(str(tiny_model_dir), config, train_tasks=tasks).train()
    assert metrics["iteration"] == 1 and math.isfinite(metrics["train/loss"])
    rollouts = load_rollouts(tmp_path / "iteration-1" / "rollouts")
    assert len(rollouts) == 6 and all(r.prompt.endswith("_event = " + r.prompt.rsplit(" = ", 1)[1]) for r in rollouts)
    from leti_env.eae import eae_postprocess

    assert all(r.program == eae_postprocess(r.program) for r in rollouts)  # what was executed and trained is cut


def test_the_run_executes_under_its_environments_limits_unless_the_config_sets_them(tmp_path, tiny_model_dir):
    from leti_env import ExecutionLimits, TaskSet, load_tasks
    from trainers.cli import DEFAULT_CONFIG
    from trainers.parser import make_parser

    # `leti train` with no arguments (the main job): its tasks bring LETI-Arith's 1 s, and the recipe sets none
    script, config = make_parser().parse_args_and_config(["--config", str(DEFAULT_CONFIG), "--output_dir", str(tmp_path)])
    assert config.execution_timeout is None
    default = LetiTrainer(str(tiny_model_dir), config, train_tasks=load_tasks(script.env_id, script.train_split, 2),
                          eval_tasks=load_tasks(script.env_id, script.eval_split, 2))
    assert default.limits == default.collector.runner.limits == ExecutionLimits(timeout=1.0)
    # LETI-EAE's 30 s, given as an id or as tasks; an explicit config value overrides the environment's
    eae = LetiTrainer(str(tiny_model_dir), small_config(tmp_path), train_tasks="LETI-EAE")
    assert eae.collector.runner.limits == ExecutionLimits(timeout=30.0)
    assert LetiTrainer(str(tiny_model_dir), small_config(tmp_path, execution_timeout=2.0, execution_memory_mb=512),
                       train_tasks=load_tasks("LETI-EAE", None, 2)).collector.runner.limits == \
        ExecutionLimits(timeout=2.0, memory_mb=512)
    with pytest.raises(ValueError, match="`train_tasks` and `eval_tasks` run under different limits"):
        LetiTrainer(str(tiny_model_dir), small_config(tmp_path), train_tasks="LETI-EAE",
                    eval_tasks=TaskSet(load_tasks("LETI-EAE", None, 2), ExecutionLimits()))


def test_lora_init_follows_the_seed_not_what_ran_before(tmp_path, tiny_model_dir, mbpp_tasks):
    def lora_a(seed):
        torch.randn(1000)  # whatever else the process did before
        trainer = LetiTrainer(str(tiny_model_dir), small_config(tmp_path, seed=seed), train_tasks=mbpp_tasks[:1])
        return next(p for n, p in trainer.model.named_parameters() if "lora_A" in n).detach().clone()

    first = lora_a(0)
    assert torch.equal(first, lora_a(0))
    assert not torch.equal(first, lora_a(1))


def test_extra_eval_conditions_evaluate_under_each_prefix(tmp_path, tiny_model_dir, mbpp_tasks):
    """``eval_extra_conditions``: each evaluation also samples under the bad token and under none (the real
    model, through a spy on its sampler), logged as ``eval/<condition>/...`` from iteration 0 on."""
    config = small_config(tmp_path, num_iterations=1, eval_extra_conditions="bad,none")
    assert config.eval_extra_conditions == ["bad", "none"]
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2], eval_tasks=mbpp_tasks[:2])
    seen: set[tuple[str, int]] = set()  # (the prompt's prefix, max_new_tokens: 8 evaluates, 16 samples rollouts)
    real = trainer.collector.sampler.generate

    def spy(model, tokenizer, prompts, params, **kwargs):
        for prompt in prompts:
            prefix = "good" if "<|good|>" in prompt else "bad" if "<|bad|>" in prompt else "none"
            seen.add((prefix, params.max_new_tokens))
        return real(model, tokenizer, prompts, params, **kwargs)

    trainer.collector.sampler.generate = spy
    trainer.train()
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for metrics in history:
        assert {"eval/pass@1", "eval/bad/pass@1", "eval/none/pass@1"} <= set(metrics), sorted(metrics)
    assert {("good", 8), ("bad", 8), ("none", 8)} <= seen and ("bad", 16) not in seen
    with pytest.raises(ValueError, match="eval_extra_conditions"):
        small_config(tmp_path, eval_extra_conditions=["great"])


@pytest.mark.parametrize("position", ["start", "before_program"])
def test_a_refinement_turn_shows_each_failed_attempt_with_its_feedback(tmp_path, tiny_model_dir, mbpp_tasks, position):
    """``eval_max_turns=2``: every failed first attempt comes back to the (real) model with its feedback, as
    comments after the same reward-token prefix (with ``reward_token_position="before_program"``, the task
    shown again ends with the good token, as the first turn's did), and the second attempts are executed:
    pass@1 after the turn is at least the first attempt's, and the repair rate is the share of failures the
    turn fixed."""
    config = small_config(tmp_path, num_iterations=1, eval_max_turns=2, eval_num_samples=2, eval_k=[1],
                          reward_token_position=position)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2], eval_tasks=mbpp_tasks[:3])
    refinements: list[str] = []
    real = trainer.collector.sampler.generate

    def spy(model, tokenizer, prompts, params, **kwargs):
        refinements.extend(p for p in prompts if "# The program above failed its tests:" in p)
        return real(model, tokenizer, prompts, params, **kwargs)

    trainer.collector.sampler.generate = spy
    metrics = trainer.evaluate()
    first, second, repair = metrics["sample_pass_rate/postprocessed"], metrics["turn2/sample_pass_rate"], metrics["repair_rate"]
    failures = round((1 - first) * 6)  # 3 tasks x 2 samples
    assert failures and len(refinements) == failures
    trail = "" if position == "start" else "<|good|>"
    for r in refinements:  # the first turn's conditioned prompt, its attempt, the feedback, the task again
        task = next(t for t in mbpp_tasks[:3] if r.count(t.prompt) == 2)
        assert r.startswith(inference_prompt(task.prompt, trainer.args, "good", trainer.tokenizer)) and r.endswith(task.prompt + trail)
    assert all("# Traceback" in r or "# SyntaxError" in r or "Error" in r for r in refinements)
    assert all(r.count("<|good|>") == (1 if position == "start" else 2) for r in refinements)
    assert second >= first and abs(repair - (second - first) / (1 - first)) < 1e-9
    assert metrics["turn2/pass@1"] >= metrics["pass@1/postprocessed"]


def test_a_refinement_prompt_drops_the_feedback_head_to_fit_the_context(tiny_model_dir):
    from transformers import AutoTokenizer

    from leti_env.envs import refinement_feedback
    from trainers.rollouts import _fitting_refinement

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    feedback = "".join(f"line {i} of a long traceback\n" for i in range(200)) + "AssertionError: 12\n"

    def length(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    whole = _fitting_refinement(tokenizer, "P", "p", feedback, refinement_feedback, None)
    budget = length(whole) // 3
    fitted = _fitting_refinement(tokenizer, "P", "p", feedback, refinement_feedback, budget)
    assert length(fitted) <= budget < length(whole) and "# AssertionError: 12" in fitted and "# line 0 " not in fitted
    assert _fitting_refinement(tokenizer, "P" * 5000, "p", feedback, refinement_feedback, budget) is None


def test_guidance_steers_good_prompts_away_from_bad_ones(tmp_path, tiny_model_dir, mbpp_tasks):
    """``guidance_weight``: every good-token sampling (evaluation; rollouts from iteration 2) gets the bad-token
    prompts of the same tasks as its negative prompts; unconditioned sampling (iteration 1) gets none."""
    config = small_config(tmp_path, num_iterations=2, guidance_weight=1.0)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=mbpp_tasks[:2], eval_tasks=mbpp_tasks[:2])
    calls: list[tuple[bool, bool]] = []  # (the prompts carry the good token, negative prompts with the bad token)
    real = trainer.collector.sampler.generate

    def spy(model, tokenizer, prompts, params, **kwargs):
        negative = kwargs.get("negative_prompts")
        assert (negative is not None) == (params.guidance_weight > 0)
        if negative is not None:
            assert [n.replace("<|bad|>", "<|good|>") for n in negative] == list(prompts)
        calls.append(("<|good|>" in prompts[0], negative is not None))
        return real(model, tokenizer, prompts, params, **kwargs)

    trainer.collector.sampler.generate = spy
    trainer.train()
    # evaluation (iteration 0), rollouts 1 (no token), evaluation, rollouts 2 (good), evaluation
    assert calls == [(True, True), (False, False), (True, True), (True, True), (True, True)]
