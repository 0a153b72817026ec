"""The real-model (GPU) path, checked in one run: writes ``gpu_check.json`` and prints a table.

    bash scripts/gpu_check.sh                       # a CUDA machine: recipe shapes, under 8 minutes on one H100/H200
    bash scripts/gpu_check.sh --smoke --device cpu  # the same checks with tiny shapes on a CPU (the test suite runs it)

Every model is random (nothing is downloaded): the shapes are what the checks need. Each check is
independent, and one that fails or crashes is reported as such while the others still run:

- ``qlora_updates``: a 4-bit CodeGen-shaped model (padded vocabulary, untied head, the recipe's LoRA,
  quantization and learning rate) trains 20 steps on LeTI rows. Its trainable parameters are fp32 after
  the SFTTrainer is built, and ≥ 99% of LoRA-A's elements and of the ``<|good|>`` and ``<|bad|>`` rows changed.
- ``memory``: CodeGen-350M's shape in 4-bit, as ``codegen-350M-mbpp.yaml`` runs it: peak
  ``torch.cuda.max_memory_allocated`` for one sampling call (``generation_batch_size`` sequences of a
  128-token prompt plus ``max_new_tokens``) and for training steps at the recipe's batch of 2048-token rows,
  beside the recipe header's formula.
- ``shared_prefill``: for Llama and CodeGen shapes, the next-token logits from a shared prompt prefill equal
  a full forward pass, greedy completions equal plain ``generate``, and sampled programs do not depend on
  the batch size.
- ``vllm``: build, sample, sleep, wake and reload the engine; the samples change after a weight change
  (skipped without vLLM or CUDA).
- ``grpo_vllm_turns``: two steps of TRL's ``GRPOTrainer`` with ``use_vllm=True, vllm_mode="colocate"`` on
  ``refinement_rollout`` (LETI-Arith, two turns), in a process of its own: every attempt is sampled by
  TRL's vLLM engine (transformers ``generate`` is never called), each call with the turn's token budget,
  episodes take a second turn (``execution/turns`` > 1), vLLM's logprobs come back for every completion
  token, and the loss is finite (skipped without vLLM or CUDA; about a minute).
- ``train_resume_eval_export``: ``leti train`` (QLoRA, two iterations) is killed with SIGKILL after
  iteration 1 and run again: iteration 1 is kept, iteration 2 completes. Then ``leti eval`` and
  ``leti export`` load the adapter it saved: eval's model is 4-bit on the training device, and the merged
  export's logits match it.
- ``sandbox_here``: the executor on this machine, whose kernel, cgroup version and container differ from the
  CI's: ``python -m leti_env sandbox`` (every protection and its safe self-test) and, where pytest is
  installed, the cgroup and least-privilege tests (``tests/leti_env/test_cgroups.py``,
  ``test_least_privilege.py``); on a cgroup v2 host these run the v2 path on a real kernel. Device-free.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS: list[tuple[str, Callable]] = []


def check(function: Callable) -> Callable:
    CHECKS.append((function.__name__, function))
    return function


class Shapes:
    """Model and run sizes: the recipe's on a GPU, tiny ones in a smoke run."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.vocab = 2048 if smoke else 51200  # CodeGen's: 50,295 tokens in 51,200 rows
        self.padded_rows = 64 if smoke else 905
        self.small = dict(n_embd=64, n_layer=2, n_head=4) if smoke else dict(n_embd=512, n_layer=6, n_head=8)
        self.recipe = dict(n_embd=64, n_layer=2, n_head=4) if smoke else dict(n_embd=1024, n_layer=20, n_head=16)
        self.fit_steps = 20
        self.prompt_tokens = 32 if smoke else 128
        self.max_new_tokens = 16 if smoke else 384
        self.generation_batch_size = 16 if smoke else 128
        self.train_batch = 2 if smoke else 16
        self.train_length = 128 if smoke else 2048


def build_codegen(folder: Path, shapes: Shapes, size: dict, tokenizer=None) -> Path:
    """A random CodeGen with ``size``, CodeGen's padded vocabulary and untied head, saved with a tokenizer."""
    import torch
    from transformers import CodeGenConfig, CodeGenForCausalLM

    from trainers.tiny import build_tiny_tokenizer

    tokenizer = tokenizer or build_tiny_tokenizer(vocab_size=shapes.vocab - shapes.padded_rows)
    config = CodeGenConfig(vocab_size=len(tokenizer) + shapes.padded_rows, n_positions=2048, n_ctx=2048,
                           rotary_dim=min(32, size["n_embd"] // size["n_head"]), tie_word_embeddings=False,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **size)
    torch.manual_seed(0)
    CodeGenForCausalLM(config).to(torch.float16).save_pretrained(folder)  # CodeGen's checkpoints are fp16
    tokenizer.save_pretrained(folder)
    return folder


def build_llama(folder: Path, shapes: Shapes, tokenizer) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers = (64, 2) if shapes.smoke else (512, 6)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 3,
                         num_hidden_layers=layers, num_attention_heads=8 if not shapes.smoke else 4,
                         num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def recipe(**overrides):
    """``codegen-350M-mbpp.yaml``'s values, with ``overrides`` (a local model, Arith tasks, a short run)."""
    import yaml

    from trainers import LetiConfig

    values = yaml.safe_load((REPO / "examples" / "configs" / "codegen-350M-mbpp.yaml").read_text())
    for key in ("model_name_or_path", "env_id", "train_split", "eval_split", "pretrain_dataset", "pretrain_data_dir",
                "pretrain_revision", "pretrain_max_documents", "pretrain_text_field", "pretrain_block_size"):
        values.pop(key, None)
    values.update(report_to="none", disable_tqdm=True, logging_steps=1000)
    values.update(overrides)
    return LetiConfig(**values)


def half_passing_rollouts(tasks, count: int):
    """LeTI rollouts, every second one passing (a reference solution) and the others failing with feedback."""
    from trainers import Rollout

    feedback = 'Traceback (most recent call last):\n  File "<string>", line 9, in <module>\n    assert f(1) == 3\nAssertionError\n'
    return [Rollout(t.task_id, t.prompt, t.reference_solution, float(i % 2), "passed" if i % 2 else "failed",
                    "" if i % 2 else feedback) for i in range(count) for t in [tasks[i % len(tasks)]]]


@check
def qlora_updates(ctx) -> dict:
    from trainers import LetiTrainer

    model_dir = ctx.model("codegen-small")
    config = recipe(output_dir=str(ctx.work / "qlora"), max_steps=ctx.shapes.fit_steps, gradient_accumulation_steps=1,
                    per_device_train_batch_size=4, max_length=256, use_cpu=ctx.cpu, bf16=True)
    trainer = LetiTrainer(str(model_dir), config, train_tasks=ctx.tasks[:16])
    before = {n: p.detach().float().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer._fit(trainer.training_rows(half_passing_rollouts(ctx.tasks, 64), 1), ctx.work / "qlora" / "fit")
    after = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}

    def changed(names) -> float:
        names = list(names)
        return float(sum((after[n].float() != before[n]).sum() for n in names) / max(1, sum(before[n].numel() for n in names)))

    delta = [n for n in before if "trainable_tokens_delta" in n]
    rows = {}
    for token in (config.good_token, config.bad_token):
        index = config.special_tokens.index(token)
        rows[token] = float((after[delta[0]][index].float() != before[delta[0]][index]).float().mean()) if delta else 0.0
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in after.values()})
    result = {"new_token_mode": trainer.new_token_mode(), "learning_rate": config.learning_rate,
              "steps": ctx.shapes.fit_steps, "trainable_dtypes": dtypes,
              "lora_A_changed": changed(n for n in before if "lora_A" in n),
              "lora_B_changed": changed(n for n in before if "lora_B" in n),
              "good_row_changed": rows[config.good_token], "bad_row_changed": rows[config.bad_token],
              "output_head_trained": any("lm_head" in n for n in before)}
    result["ok"] = (dtypes == ["float32"] and result["lora_A_changed"] >= 0.99 and result["lora_B_changed"] > 0.5
                    and min(rows.values()) >= 0.99)
    return result


@check
def memory(ctx) -> dict:
    from trainers import LetiTrainer

    model_dir = ctx.model("codegen-350M")
    s = ctx.shapes
    config = recipe(output_dir=str(ctx.work / "memory"), use_cpu=ctx.cpu, max_steps=2, gradient_accumulation_steps=1,
                    generation_batch_size=s.generation_batch_size, num_generations_per_prompt=s.generation_batch_size,
                    max_new_tokens=s.max_new_tokens, per_device_train_batch_size=s.train_batch, max_length=s.train_length)
    trainer = LetiTrainer(str(model_dir), config, train_tasks=ctx.tasks[:4])
    prompt = trainer.tokenizer.decode(trainer.tokenizer("def f(x):\n    return x + 1\n" * 200)["input_ids"][:s.prompt_tokens])
    reset_peak(ctx)
    start = time.perf_counter()
    from trainers.sampling import SamplingParams

    samples = trainer.collector.sampler.generate(trainer.model, trainer.tokenizer, [prompt],
                                                 SamplingParams(s.generation_batch_size, s.max_new_tokens, 1.0), seed=0)
    sampling_s, sampling_peak = time.perf_counter() - start, peak_gib(ctx)
    generated = sum(len(trainer.tokenizer(c)["input_ids"]) for c in samples[0])
    # rows as long as the recipe's pre-training blocks: the longest the recipe trains on
    ids = trainer.tokenizer("x = 1\n" * s.train_length)["input_ids"][:s.train_length]
    rows = [{"input_ids": ids, "labels": list(ids)} for _ in range(s.train_batch * 2)]
    reset_peak(ctx)
    start = time.perf_counter()
    trainer._fit(rows, ctx.work / "memory" / "fit")
    training_s, training_peak = time.perf_counter() - start, peak_gib(ctx)
    n_embd, layers = s.recipe["n_embd"], s.recipe["n_layer"]
    kv_formula = 2 * layers * n_embd * 4 * s.generation_batch_size * (s.prompt_tokens + s.max_new_tokens) / 2**30
    activations_formula = s.train_batch * s.train_length * n_embd * 4 * layers / 2**30
    return {"model": f"CodeGen n_embd {n_embd}, {layers} layers, 4-bit NF4", "sampling_sequences": s.generation_batch_size,
            "sampling_tokens_per_sequence": s.prompt_tokens + s.max_new_tokens, "tokens_generated": generated,
            "sampling_s": round(sampling_s, 2), "sampling_peak_gib": sampling_peak,
            "kv_cache_formula_gib": round(kv_formula, 2), "training_batch": s.train_batch,
            "training_row_tokens": s.train_length, "training_s": round(training_s, 2),
            "training_peak_gib": training_peak, "checkpointed_activations_formula_gib": round(activations_formula, 2),
            "ok": True}


@check
def shared_prefill(ctx) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.sampling import _prompt_cache, generate

    prompts = [t.prompt for t in ctx.tasks[:6]] + ["x", "def add(a, b):\n"]
    result, ok = {}, True
    for name in ("llama-small", "codegen-small"):
        folder = ctx.model(name)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(ctx.device).eval()
        tokenizer.padding_side = "left"
        encoded = tokenizer(prompts[:6], return_tensors="pt", padding=True, add_special_tokens=False).to(ctx.device)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
            cache = _prompt_cache(model, encoded)
            last = model(input_ids=ids[:, -1:], attention_mask=mask, cache=cache,
                         position_ids=(mask.sum(-1, keepdim=True) - 1)).logits[:, -1]
        diff = float((last - full).abs().max())
        greedy = dict(num_samples=4, max_new_tokens=24, temperature=0.0, batch_size=64)
        plain = generate(model, tokenizer, prompts, share_prompt_prefill=False, **greedy)
        shared = generate(model, tokenizer, prompts, share_prompt_prefill=True, **greedy)
        sampled = dict(num_samples=8, max_new_tokens=24, temperature=1.0, seed=1)
        big = generate(model, tokenizer, prompts, batch_size=64, **sampled)
        small = generate(model, tokenizer, prompts, batch_size=4, share_prompt_prefill=False, **sampled)
        same = sum(a == b for x, y in zip(big, small) for a, b in zip(x, y)) / sum(len(x) for x in big)
        entry = {"prefix_cache": cache is not None, "logits_max_abs_diff": diff, "greedy_identical": plain == shared,
                 "sampled_identical_across_batch_sizes": same}
        entry["ok"] = cache is not None and diff < 1e-3 and plain == shared and same >= 0.95
        result[name] = entry
        ok = ok and entry["ok"]
    result["ok"] = ok
    return result


@check
def vllm(ctx) -> dict:
    import importlib.util

    if ctx.cpu or importlib.util.find_spec("vllm") is None:
        return {"skipped": "needs CUDA" if ctx.cpu else "vLLM is not installed", "ok": True}
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.sampling import SamplingParams
    from trainers.vllm_backend import VLLMSampler

    folder = ctx.model("llama-small")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(ctx.device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompts = [t.prompt for t in ctx.tasks[:8]]
    sampler = VLLMSampler(ctx.work / "vllm-model", gpu_memory_utilization=0.3, enable_sleep_mode=True)
    params = SamplingParams(num_samples=4, max_new_tokens=32, temperature=1.0)
    start = time.perf_counter()
    first = sampler.generate(model, tokenizer, prompts, params, seed=0)
    build_s = time.perf_counter() - start
    again = sampler.generate(model, tokenizer, prompts, params, seed=0)
    sampler.sleep()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sampler.weights_changed()
    start = time.perf_counter()
    changed = sampler.generate(model, tokenizer, prompts, params, seed=0)
    reload_s = time.perf_counter() - start
    differ = sum(a != b for x, y in zip(first, changed) for a, b in zip(x, y)) / sum(len(x) for x in first)
    return {"build_and_sample_s": round(build_s, 1), "sleep_wake_reload_sample_s": round(reload_s, 1),
            "same_seed_same_samples": first == again, "samples_changed_after_weight_change": differ,
            "ok": first == again and differ > 0.5}


@check
def grpo_vllm_turns(ctx) -> dict:
    import importlib.util

    if ctx.cpu or importlib.util.find_spec("vllm") is None:
        return {"skipped": "needs CUDA" if ctx.cpu else "vLLM is not installed", "ok": True}
    # a process of its own: TRL's colocated engine sets up torch.distributed (vLLM's external launcher) where it runs
    out = ctx.work / "grpo-vllm-turns.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, __file__, "--grpo-vllm-turns-worker", str(ctx.model("llama-small")),
                           str(ctx.work / "grpo-vllm-turns"), str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    if not out.exists():
        return {"ok": False, "error": (proc.stdout + proc.stderr)[-3000:]}
    return json.loads(out.read_text())


def grpo_vllm_turns_run(model_dir: Path, work: Path, cpu: bool = False) -> dict:
    """``grpo_vllm_turns``' body: two GRPO steps on ``refinement_rollout`` with TRL's colocated vLLM engine."""
    import math

    from trl import GRPOConfig, GRPOTrainer

    from leti_env import load_tasks
    from trainers import tasks_to_dataset
    from trainers.grpo import RolloutReward, refinement_rollout

    tasks = load_tasks("LETI-Arith", "train", 8)
    per_turn = 32
    rollout = refinement_rollout(tasks, max_turns=2, max_new_tokens=per_turn)
    outputs = []

    def recorded(prompts, trainer):
        outputs.append(rollout(prompts, trainer))
        return outputs[-1]

    args = GRPOConfig(output_dir=str(work), use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
                      max_steps=2, per_device_train_batch_size=8, num_generations=8, max_completion_length=320,
                      learning_rate=1e-5, bf16=not cpu, use_cpu=cpu, report_to="none", save_strategy="no",
                      logging_steps=1, disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=str(model_dir), args=args, train_dataset=tasks_to_dataset(tasks), rollout_func=recorded,
                          reward_funcs=[RolloutReward()])
    engine, calls, transformers_calls = trainer.vllm_generation, [], []
    vllm_generate, transformers_generate = engine.generate, trainer.model.generate

    def counted_vllm(*args, **kwargs):
        prompts = kwargs.get("prompts", args[0] if args else None)
        calls.append({"contexts": len(prompts), "longest_context": max(map(len, prompts)),
                      "max_tokens": engine.max_completion_length})
        return vllm_generate(*args, **kwargs)

    def counted_transformers(*args, **kwargs):
        transformers_calls.append(1)
        return transformers_generate(*args, **kwargs)

    engine.generate, trainer.model.generate = counted_vllm, counted_transformers
    start = time.perf_counter()
    trainer.train()
    history = trainer.state.log_history
    turns = [h["execution/turns"] for h in history if "execution/turns" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    logprobs_complete = bool(outputs) and all(
        o["logprobs"] is not None and all(len(lp) == len(c) for lp, c in zip(o["logprobs"], o["completion_ids"]))
        for o in outputs)
    result = {"steps": trainer.state.global_step, "train_s": round(time.perf_counter() - start, 1),
              "vllm_generate_calls": len(calls), "max_tokens_per_call": sorted({c["max_tokens"] for c in calls}),
              "longest_context": max((c["longest_context"] for c in calls), default=0),
              "transformers_generate_calls": len(transformers_calls), "execution_turns": turns,
              "vllm_logprobs_for_every_token": logprobs_complete, "losses": losses}
    result["ok"] = (result["steps"] == 2 and len(calls) > 2 and not transformers_calls and bool(turns)
                    and max(turns) > 1 and result["max_tokens_per_call"] == [per_turn] and logprobs_complete
                    and bool(losses) and all(math.isfinite(x) for x in losses))
    return result


@check
def train_resume_eval_export(ctx) -> dict:
    import torch
    import yaml

    model_dir = ctx.model("codegen-small")
    run = ctx.work / "cli-run"
    config = yaml.safe_load((REPO / "examples" / "configs" / "codegen-350M-mbpp.yaml").read_text())
    for key in [k for k in config if k.startswith("pretrain_")] + ["model_name_or_path"]:
        config.pop(key)
    config.update(env_id="LETI-Arith", train_split="train", eval_split="heldout", max_train_tasks=8, max_eval_tasks=8,
                  output_dir=str(run), num_iterations=2, num_generations_per_prompt=4, generation_batch_size=32,
                  max_new_tokens=24, eval_num_samples=1, eval_k=[1], eval_max_new_tokens=24, eval_temperature=0.0,
                  num_train_epochs=1, gradient_accumulation_steps=1, per_device_train_batch_size=8, max_length=256,
                  use_cpu=ctx.cpu)
    config_path = ctx.work / "cli-run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "trainers.cli", "train", "--config", str(config_path),
               "--model_name_or_path", str(model_dir)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = open(ctx.work / "cli-run.log", "w")
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    marker = run / "iteration-1" / "COMPLETE"
    deadline = time.monotonic() + 600
    while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    killed = first.poll() is None
    if killed:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    if not marker.exists():
        return {"ok": False, "error": "iteration 1 did not complete", "log": (ctx.work / "cli-run.log").read_text()[-2000:]}
    kept = _digest(run / "iteration-1")
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    iterations = [m.get("iteration") for m in metrics]
    result = {"killed_during_iteration_2": killed, "resume_returncode": second.returncode,
              "iteration_1_kept": _digest(run / "iteration-1") == kept,
              "iteration_2_complete": (run / "iteration-2" / "COMPLETE").exists(), "iterations_recorded": iterations}
    if second.returncode != 0:
        result.update(ok=False, log=second.stderr[-2000:])
        return result

    adapter = run / "iteration-2" / "model"
    evaluated = subprocess.run([sys.executable, "-m", "trainers.cli", "eval", "--model", str(adapter), "--env", "LETI-Arith",
                                "--split", "heldout", "--max_tasks", "8", "--num_samples", "2", "--k", "1",
                                "--temperature", "0.8", "--max_new_tokens", "24"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    result["eval_returncode"] = evaluated.returncode
    if evaluated.returncode == 0:
        result["eval_report"] = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    exported = subprocess.run([sys.executable, "-m", "trainers.cli", "export", "--model", str(adapter), "--output",
                               str(ctx.work / "merged")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    result["export_returncode"] = exported.returncode
    if evaluated.returncode or exported.returncode:
        result.update(ok=False, log=(evaluated.stderr + exported.stderr)[-2000:])
        return result

    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    from trainers.run_folder import load_model

    model, tokenizer = load_model(str(adapter))
    merged = AutoModelForCausalLM.from_pretrained(ctx.work / "merged", dtype=torch.float32).to(ctx.device)
    ids = torch.tensor([tokenizer("def f(x):\n    return x + 1\n")["input_ids"]], device=ctx.device)
    with torch.no_grad():
        want = model.eval()(ids).logits.float()
        got = merged.eval()(ids).logits.float()
    relative = float((got - want).norm() / want.norm())
    result.update(eval_model_is_4bit=any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()),
                  eval_model_device=str(next(model.parameters()).device),
                  export_logits_relative_error=relative,
                  export_same_argmax=float((got.argmax(-1) == want.argmax(-1)).float().mean()))
    result["ok"] = (result["iteration_1_kept"] and result["iteration_2_complete"] and iterations.count(1) == 1
                    and iterations.count(2) == 1 and result["eval_model_is_4bit"] and relative < 0.05)
    return result


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def reset_peak(ctx) -> None:
    import torch

    if not ctx.cpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(ctx):
    import torch

    return None if ctx.cpu else round(torch.cuda.max_memory_allocated() / 2**30, 2)


class Context:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.cpu = args.device == "cpu"
        self.device = args.device
        self.shapes = Shapes(args.smoke)
        from leti_env import resolve_tasks

        self.tasks = resolve_tasks("LETI-Arith")
        self._models: dict[str, Path] = {}
        self._tokenizer = None

    def model(self, name: str) -> Path:
        """A random model folder, built on first use."""
        if name not in self._models:
            from trainers.tiny import build_tiny_tokenizer

            if self._tokenizer is None:
                self._tokenizer = build_tiny_tokenizer(vocab_size=self.shapes.vocab - self.shapes.padded_rows)
            folder = self.work / "models" / name
            if name == "llama-small":
                build_llama(folder, self.shapes, self._tokenizer)
            else:
                size = self.shapes.recipe if name == "codegen-350M" else self.shapes.small
                build_codegen(folder, self.shapes, size, self._tokenizer)
            self._models[name] = folder
        return self._models[name]


@check
def sandbox_here(ctx) -> dict:
    import importlib.util

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "leti_env", "sandbox", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "error": (proc.stdout + proc.stderr)[-3000:]}
    from leti_env.execution.sandbox import cgroups

    failed = [c["class"] for c in report.get("self_test", []) if not c["ok"]]
    result = {"ok": proc.returncode == 0 and not failed, "mode": report.get("mode"),
              "cgroups": cgroups.can_use()[1], "missing": [k for k, v in report.items() if v is False],
              "self_test_failed": failed}
    if ctx.args.smoke or importlib.util.find_spec("pytest") is None:  # the CPU suite runs these tests itself
        result["tests"] = "not run (" + ("smoke" if ctx.args.smoke else "no pytest") + ")"
        return result
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/leti_env/test_cgroups.py", "tests/leti_env/test_least_privilege.py"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    result["tests"] = (tests.stdout.strip().splitlines() or ["?"])[-1]
    result["ok"] = result["ok"] and tests.returncode == 0
    if tests.returncode != 0:
        result["log"] = tests.stdout[-3000:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (a CPU run in a few minutes)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", default="gpu_check.json", help="where to write the results")
    parser.add_argument("--only", nargs="+", choices=[name for name, _ in CHECKS], help="run only these checks")
    parser.add_argument("--grpo-vllm-turns-worker", nargs=3, metavar=("MODEL", "WORK", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grpo_vllm_turns_worker:  # grpo_vllm_turns' own process
        model, work, out = map(Path, args.grpo_vllm_turns_worker)
        Path(out).write_text(json.dumps(grpo_vllm_turns_run(model, work), default=str))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device is visible; run `--smoke --device cpu` for the CPU version of the checks")
    if args.device == "cpu" and not args.smoke:
        parser.error("the recipe shapes need a GPU; add --smoke for the CPU version of the checks")
    work = Path(tempfile.mkdtemp(prefix="leti-gpu-check-"))
    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "smoke": args.smoke,
              "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "checks": {}}
    try:
        ctx = Context(args, work)
        for name, function in CHECKS:
            if args.only and name not in args.only:
                continue
            start = time.perf_counter()
            print(f"{name} ...", flush=True)
            try:
                result = function(ctx)
            except Exception:  # a crash is a failed check; the others still run
                result = {"ok": False, "error": traceback.format_exc()[-3000:]}
            result["seconds"] = round(time.perf_counter() - start, 1)
            report["checks"][name] = result
            Path(args.out).write_text(json.dumps(report, indent=2, default=str))  # kept if a later check hangs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["ok"] = all(r["ok"] for r in report["checks"].values())
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    return 0 if report["ok"] else 1


def print_table(report: dict) -> None:
    with contextlib.suppress(ImportError):
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"leti GPU check on {report['device']}" + (" (smoke shapes)" if report["smoke"] else ""))
        for column in ("check", "result", "seconds", "figures"):
            table.add_column(column)
        for name, result in report["checks"].items():
            figures = {k: v for k, v in result.items() if k not in ("ok", "seconds", "error", "log")}
            status = "skipped" if "skipped" in result else ("pass" if result["ok"] else "FAIL")
            table.add_row(name, status, str(result["seconds"]),
                          result.get("error", "").strip().splitlines()[-1] if "error" in result else _short(figures))
        Console(width=200).print(table)
        return
    for name, result in report["checks"].items():
        print(name, "pass" if result["ok"] else "FAIL", json.dumps(result, default=str))


def _short(figures: dict) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else (f"{{{_short(v)}}}" if isinstance(v, dict) else str(v))

    return ", ".join(f"{k}={fmt(v)}" for k, v in figures.items())


if __name__ == "__main__":
    sys.exit(main())
