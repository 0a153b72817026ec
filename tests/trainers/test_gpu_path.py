"""The real-model (GPU) path's correctness, checked on a CPU with tiny offline models and the
built-in Arith tasks (no datasets needed): QLoRA master weights, eval/export of padded vocabularies,
full fine-tuning dtype, the output head, pre-training blocks, timeouts, and data-parallel runs
(two processes over gloo: each rank's cores, shared evaluation execution, the same blocks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from tests.trainers.conftest import small_config
from trainers import LetiTrainer, load_rollouts


@pytest.fixture(scope="module")
def arith_tasks():
    from leti_env import resolve_tasks

    return resolve_tasks("LETI-Arith")[:2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "LETI_CACHE": str(tmp_path_factory.mktemp("cache")), "TRL_EXPERIMENTAL_SILENCE": "1",
            "HF_HUB_OFFLINE": "1"}


def tagged(stdout: str, tag: str) -> list[dict]:
    """The JSON objects the processes of a launch printed with ``emit(tag, ...)``."""
    return [json.loads(line.split(" ", 1)[1]) for line in stdout.splitlines() if line.startswith(tag + " ")]


# Prepended to the scripts the two-process tests launch: one write per line, so that the two
# processes' lines never interleave on the shared stdout.
EMIT = "import json, os\ndef emit(tag, obj):\n    os.write(1, (tag + ' ' + json.dumps(obj) + '\\n').encode())\n"


def launch_two(script, env: dict, tag: str) -> list[dict]:
    """Run ``script`` as two data-parallel processes; what each emitted under ``tag``.

    ``--multi_gpu`` is the torchrun-style launcher (gloo on a CPU-only machine); ``--cpu`` would start
    one process only."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    found = tagged(out.stdout, tag)
    assert len(found) == 2, out.stdout
    return found


@pytest.mark.parametrize("adapter_dtype", ["float32", "bfloat16"])
def test_qlora_master_weights_let_small_updates_land(tmp_path, tiny_model_dir, arith_tasks, adapter_dtype):
    """At a QLoRA learning rate (1e-5), AdamW's steps are below bf16's resolution: TRL stores a quantized
    model's trainable parameters in bf16, where most of them never change. leti keeps fp32 master
    weights unless asked for TRL's behaviour (adapter_dtype="bfloat16")."""
    config = small_config(tmp_path, num_iterations=1, load_in_4bit=True, bf16=True, eval_before_training=False,
                          learning_rate=1e-5, per_device_train_batch_size=1, adapter_dtype=adapter_dtype)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=arith_tasks)
    assert trainer.new_token_mode() == "trainable_tokens"
    before = {n: p.detach().float().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(after) == set(before)

    def changed(names):
        names = list(names)
        assert names
        return float(sum((after[n].float() != before[n]).sum() for n in names) / sum(before[n].numel() for n in names))

    lora_a = changed(n for n in before if "lora_A" in n)  # lora_B starts at 0 and moves even in bf16
    # the reward token of every training row (all of this random model's programs fail: <|bad|>) is an input
    rollouts = load_rollouts(tmp_path / "iteration-1" / "rollouts")
    assert rollouts and not any(r.reward for r in rollouts)
    delta = next(n for n in before if "trainable_tokens_delta" in n)
    bad_row = config.special_tokens.index(config.bad_token)
    row_changed = float((after[delta][bad_row].float() != before[delta][bad_row]).float().mean())
    if adapter_dtype == "float32":
        assert {p.dtype for p in after.values()} == {torch.float32}
        assert lora_a >= 0.99 and row_changed >= 0.99, (lora_a, row_changed)
        # `leti eval` scores the model that was trained: the base loaded in 4-bit as in the run
        import bitsandbytes as bnb

        from trainers.run_folder import load_model

        model, _ = load_model(str(tmp_path / "iteration-1" / "model"))
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    else:  # TRL's behaviour, kept as an option: the same run leaves most of them bit-identical
        assert {p.dtype for p in after.values()} == {torch.bfloat16}
        assert lora_a < 0.5, lora_a


def test_timeouts_are_executed_again_other_verdicts_reused(tmp_path, tiny_model_dir, arith_tasks):
    """deduplicate_execution reuses a program's verdict in later batches, but not a timeout, which
    depends on how loaded the machine was."""
    config = small_config(tmp_path, execution_timeout=0.5, execution_workers=1)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=arith_tasks[:1])
    task = arith_tasks[0]
    pairs = [(task, task.reference_solution), (task, "\nwhile True:\n    pass\n"), (task, "\nx = 1\n")]
    first = trainer.collector.runner.run(pairs)
    assert [r.status for r in first] == ["passed", "timeout", "error"]
    second = trainer.collector.runner.run(pairs)
    assert [r.status for r in second] == ["passed", "timeout", "error"]
    assert second[0] is first[0] and second[2] is first[2]  # reused: not executed again
    assert second[1] is not first[1]  # the timeout was executed again


@pytest.mark.parametrize("tied", [False, True])
def test_eval_and_export_load_an_adapter_trained_on_a_padded_vocabulary(tmp_path, arith_tasks, tied):
    """Qwen and CodeGen ship more embedding rows than tokens. The new tokens fit in those rows, so
    training never resizes; loading for `leti eval`/`leti export` must not shrink them either (the
    saved embedding would not load) and must give the trained model's logits."""
    from transformers import AutoModelForCausalLM

    from trainers.run_folder import load_model
    from trainers.tiny import build_tiny_model
    from trainers.vllm_backend import export_merged_model

    base = build_tiny_model(tmp_path / "base", vocab_size=2048, hidden_size=64, num_layers=2,
                            tie_word_embeddings=tied, padded_rows=64)
    config = small_config(tmp_path / "run", num_iterations=1, eval_before_training=False)
    trainer = LetiTrainer(str(base), config, train_tasks=arith_tasks)
    rows = trainer.model.get_input_embeddings().weight.shape[0]
    assert rows > len(trainer.tokenizer) and trainer.new_token_mode() == ("embeddings" if tied else "trainable_tokens")
    trainer.train()
    ids = torch.tensor([trainer.tokenizer("def f(x):\n    return x")["input_ids"] + trainer.new_token_ids])
    trainer.model.eval()
    with torch.no_grad():
        want = trainer.model(ids).logits

    model, tokenizer = load_model(str(tmp_path / "run" / "iteration-1" / "model"))
    model.eval()
    with torch.no_grad():
        got = model(ids).logits
    assert got.shape == want.shape == (1, ids.shape[1], rows)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    exported = AutoModelForCausalLM.from_pretrained(export_merged_model(model, tokenizer, tmp_path / "export"))
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, want, rtol=1e-4, atol=1e-4)


def test_full_fine_tuning_trains_fp32_weights_of_a_half_precision_checkpoint(tmp_path, tiny_model_dir, arith_tasks):
    """CodeGen's checkpoints are fp16, and transformers loads a checkpoint's own dtype by default."""
    from transformers import AutoModelForCausalLM

    half = tmp_path / "fp16-model"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float16).save_pretrained(half)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(half)
    config = small_config(tmp_path / "run", use_peft=False, load_in_4bit=False, num_iterations=1,
                          eval_before_training=False)
    trainer = LetiTrainer(str(half), config, train_tasks=arith_tasks)
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}


@pytest.mark.parametrize("train_output_head", [None, False])
def test_untied_output_rows_of_the_new_tokens_train(tmp_path, tiny_model_dir, arith_tasks, train_output_head):
    """The feedback tokens are loss targets: an untied head's rows for them must learn (by default)."""
    config = small_config(tmp_path, num_iterations=1, eval_before_training=False, train_output_head=train_output_head)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=arith_tasks)
    assert trainer.new_token_mode() == "trainable_tokens"
    hidden = torch.randn(3, trainer.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    feedback_ids = trainer.tokenizer.convert_tokens_to_ids([config.feedback_start_token, config.feedback_end_token])

    def head_logits():
        with torch.no_grad():
            return trainer.model.get_output_embeddings()(hidden)[:, feedback_ids].clone()

    before = head_logits()
    trainer.train()
    assert not any(r.reward for r in load_rollouts(tmp_path / "iteration-1" / "rollouts"))  # rows carry feedback
    moved = not torch.equal(before, head_logits())
    assert moved == (train_output_head is None), (train_output_head, moved)


def test_pretraining_blocks_are_built_once_as_int32_from_the_authors_split(tmp_path, tiny_model_dir, arith_tasks):
    import datasets

    docs = [f"def f{i}(x):\n    return x + {i}\n" * 6 for i in range(20)]
    corpus = tmp_path / "corpus"
    datasets.Dataset.from_dict({"content": docs}).save_to_disk(str(corpus))
    config = small_config(tmp_path / "run", pretrain_dataset=str(corpus), pretrain_block_size=16)
    trainer = LetiTrainer(str(tiny_model_dir), config, train_tasks=arith_tasks)
    blocks = trainer.pretraining_rows()
    assert blocks.features["input_ids"].feature.dtype == "int32" and blocks.features["labels"].feature.dtype == "int32"
    # the authors' documents: train_test_split(test_size=0.1, seed=42)'s shuffled train part, in that order
    kept = datasets.Dataset.from_dict({"text": docs}).train_test_split(test_size=0.1, seed=42)["train"]["text"]
    assert kept != docs[: len(kept)]
    stream = [t for text in kept for t in trainer.tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert [t for row in blocks for t in row["input_ids"]] == stream[: len(blocks) * 16]
    assert len(blocks) == len(stream) // 16
    # built once, into the run folder: a resumed run (or another process) reads the same blocks
    shutil.rmtree(corpus)
    again = LetiTrainer(str(tiny_model_dir), config, train_tasks=arith_tasks).pretraining_rows()
    assert [list(b) for b in again["input_ids"]] == [list(b) for b in blocks["input_ids"]]
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("pretraining")) == ["pretraining-blocks"]


@pytest.mark.slow
def test_accelerate_ranks_run_their_sandbox_workers_on_disjoint_cores(tmp_path, env):
    """Each local rank pins its workers to its own share of the cores (before: every rank pinned
    them to the first cores, and they all ran there)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs at least two cores")
    script = tmp_path / "ranks.py"
    script.write_text(EMIT + (
        "from leti_env import TaskRunner\n"
        "pool = TaskRunner().pool()  # the pool every caller's executor runs on\n"
        "assert pool.run(['assert 1 + 1 == 2'])[0].passed\n"
        "cpus = set()\n"
        "for pid in pool.harness_pids():  # a run's last process may be exiting meanwhile\n"
        "    try:\n"
        "        cpus |= os.sched_getaffinity(pid)\n"
        "    except ProcessLookupError:\n"
        "        pass\n"
        "emit('RANK', {'rank': int(os.environ['LOCAL_RANK']), 'cpus': sorted(cpus)})\n"
        "pool.close()\n"))
    ranks = {r["rank"]: set(r["cpus"]) for r in launch_two(script, env, "RANK")}
    assert set(ranks) == {0, 1} and all(ranks.values())
    assert not ranks[0] & ranks[1], ranks


@pytest.mark.slow
def test_evaluation_execution_is_shared_by_the_ranks(tmp_path, env):
    """Each rank executes its share of the evaluation programs; every rank gets all verdicts, equal to
    what one process gets alone (before: rank 0 executed all, the others waited in a collective)."""
    script = tmp_path / "shared.py"
    script.write_text(EMIT + (
        "from trainers.distributed import Processes, shared_execution\nfrom leti_env import TaskRunner, resolve_tasks\n"
        "tasks = resolve_tasks('LETI-Arith')[:5]\n"
        "pairs = [(t, c) for t in tasks for c in (t.reference_solution, '\\nx = 1\\n')]\n"
        "executed = []\n"
        "def run_many(chunk):\n"
        "    executed.extend(t.task_id for t, _ in chunk)\n"
        "    return TaskRunner(tasks.limits).run(chunk)\n"
        "results = shared_execution(Processes(), run_many, pairs)\n"
        "emit('RESULT', {'executed': executed, 'verdicts': [[r.status, r.feedback] for r in results]})\n"))
    ranks = launch_two(script, env, "RESULT")
    assert sorted(len(r["executed"]) for r in ranks) == [5, 5]  # each executed half of the 10 programs
    alone = subprocess.run([sys.executable, str(script)],
                           capture_output=True, text=True, timeout=300, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)})
    assert alone.returncode == 0, alone.stderr[-3000:]
    (one,) = tagged(alone.stdout, "RESULT")
    assert len(one["executed"]) == 10
    assert ranks[0]["verdicts"] == ranks[1]["verdicts"] == one["verdicts"]
    assert {status for status, _ in one["verdicts"]} == {"passed", "error"}


@pytest.mark.slow
def test_every_rank_reads_the_same_pretraining_blocks(tmp_path, env, tiny_model_dir):
    """The main process builds the blocks once; the other ranks wait for them and read the same ones."""
    import datasets

    corpus = tmp_path / "corpus"
    datasets.Dataset.from_dict({"content": [f"def f{i}(x):\n    return x * {i}\n" * 5 for i in range(30)]}).save_to_disk(str(corpus))
    script = tmp_path / "blocks.py"
    script.write_text(EMIT + (
        "import hashlib\n"
        "from tests.trainers.conftest import small_config\n"
        "from trainers import LetiTrainer\n"
        f"config = small_config({str(tmp_path / 'run')!r}, pretrain_dataset={str(corpus)!r}, pretrain_block_size=16)\n"
        f"trainer = LetiTrainer({str(tiny_model_dir)!r}, config, train_tasks='LETI-Arith')\n"
        "blocks = trainer.pretraining_rows()\n"
        "digest = hashlib.sha256(json.dumps([list(b) for b in blocks['input_ids']]).encode()).hexdigest()\n"
        "emit('BLOCKS', {'rank': int(os.environ['RANK']), 'digest': digest, 'n': len(blocks)})\n"))
    ranks = launch_two(script, env, "BLOCKS")
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert ranks[0]["digest"] == ranks[1]["digest"] and ranks[0]["n"] > 0
    assert (tmp_path / "run" / "pretraining-blocks" / "dataset_info.json").exists()


def test_out_of_memory_while_sampling_keeps_the_iteration_and_its_samples(tmp_path, tiny_model_dir, arith_tasks,
                                                                         monkeypatch):
    """An out-of-memory error in any generate call of more than 2 sequences: the iteration completes,
    and it sampled the programs a run without the fault samples."""
    import transformers

    def programs(run_dir):
        return [(r.task_id, r.sample_index, r.program) for r in load_rollouts(run_dir / "iteration-1" / "rollouts")]

    common = dict(num_iterations=1, num_generations_per_prompt=4, generation_batch_size=64, eval_before_training=False)
    LetiTrainer(str(tiny_model_dir), small_config(tmp_path / "plain", **common), train_tasks=arith_tasks).train()
    real, sizes = transformers.GenerationMixin.generate, []

    def generate_with_little_memory(self, *args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if sizes[-1] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(transformers.GenerationMixin, "generate", generate_with_little_memory)
    LetiTrainer(str(tiny_model_dir), small_config(tmp_path / "faulty", **common), train_tasks=arith_tasks).train()
    assert sizes[:2] == [8, 4] and set(sizes[2:]) == {2}  # 2 prompts x 4 samples; one prompt's 4; then pairs
    assert (tmp_path / "faulty" / "iteration-1" / "COMPLETE").exists()
    assert programs(tmp_path / "faulty") == programs(tmp_path / "plain")
    assert len({c for _, _, c in programs(tmp_path / "plain")}) > 1


@pytest.mark.slow
def test_two_ranks_sample_the_programs_one_process_samples(tmp_path, env, tiny_model_dir):
    """Each sample's draws are keyed by its prompt's index in the whole task list, so the rollouts of a
    two-process run equal a one-process run's."""
    script = tmp_path / "rollouts.py"
    script.write_text(EMIT + (
        "import sys\n"
        "from tests.trainers.conftest import small_config\n"
        "from leti_env import resolve_tasks\n"
        "from trainers import LetiTrainer\n"
        "config = small_config(sys.argv[1], num_generations_per_prompt=3, generation_batch_size=4)\n"
        f"trainer = LetiTrainer({str(tiny_model_dir)!r}, config, train_tasks=resolve_tasks('LETI-Arith')[:5])\n"
        "rollouts = trainer.collect_rollouts(1, trainer.output_dir / 'iteration-1' / 'rollouts')\n"
        "emit('ROLLOUTS', [[r.task_id, r.sample_index, r.program, r.status] for r in rollouts])\n"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               str(script), str(tmp_path / "two")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = tagged(out.stdout, "ROLLOUTS")
    alone = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], capture_output=True, text=True,
                           timeout=300, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)})
    assert alone.returncode == 0, alone.stderr[-3000:]
    (one,) = tagged(alone.stdout, "ROLLOUTS")
    assert len(ranks) == 2 and ranks[0] == ranks[1] == one
    assert len(one) == 15 and len({c for _, _, c, _ in one}) > 5
