"""The LeTI trainer: sample programs, execute them, fine-tune on reward-token + feedback rows, repeat."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leti_env import CodeTask, ExecutionLimits, TaskRunner, resolve_tasks

from .console import IterationTable, progress, third_party_deprecations_ignored, training_progress
from .distributed import Processes
from .leti_config import LetiConfig
from .model_setup import (_load_model, _load_tokenizer, _movable, _require_bitsandbytes, keep_4bit_weights_trainable,
                          wrap_with_lora)
from .pretraining import build_pretraining_blocks
from .rollouts import Rollout, RolloutCollector, load_rollouts
from .tracking import RunTracker, loss_callback
from .sampling import Sampler, SamplingParams, TransformersSampler
from .sequences import LOSS_WEIGHT, build_rows, inference_prompt, interleave_pretraining_dataset


# LetiConfig fields that name LeTI's tokens (recorded as they are in config.json: the prompt format)
LETI_TOKEN_FIELDS = ("bad_token", "good_token", "feedback_start_token", "feedback_end_token")


class LetiTrainer:
    """LeTI (Wang et al., 2023) on transformers + TRL + PEFT: iterated fine-tuning on execution feedback.

    Each iteration: sample ``num_generations_per_prompt`` programs per training task (prompts prefixed
    with the good token from iteration 2 on), execute them in the sandbox, save the rollouts under
    ``output_dir/iteration-N/rollouts`` *before* training, build LeTI rows
    (``<|bad|><|lang_feedback|>feedback<|/lang_feedback|>prompt+program`` / ``<|good|>prompt+program``),
    train with TRL's ``SFTTrainer`` on one PEFT (QLoRA) model reused across iterations, with
    pre-training blocks interleaved step by step, save the adapter and tokenizer, evaluate pass@k, and
    log. A run stopped at any point resumes after its last complete iteration; an iteration whose
    rollouts were saved reuses them.

    >>> trainer = LetiTrainer("Salesforce/codegen-350M-mono", LetiConfig(output_dir="runs/mbpp"),
    ...                       train_tasks=load_mbpp("train"), eval_tasks=load_mbpp("test"))
    >>> trainer.train()

    Args:
        model: A model id or path, or a loaded causal LM.
        args: The configuration.
        train_tasks: Environment id (``"LETI-MBPP"`` uses its default split), environment, ``TaskSet``
            (``load_tasks``) or list of ``CodeTask``. Its limits (``ExecutionLimits``: LETI-EAE's 30 s) are
            the run's, unless ``args`` sets ``execution_timeout`` and friends.
        eval_tasks: The same, for pass@k evaluation (optional; with the same limits).
        processing_class: The tokenizer, if it cannot be loaded from ``model``.
        callbacks: Passed to every iteration's ``SFTTrainer``.
    """

    def __init__(self, model: Any, args: LetiConfig, train_tasks: Any, eval_tasks: Any = None,
                 processing_class: Any = None, callbacks: list | None = None):
        # Args: everything that can be wrong fails here, before any sampling
        if not isinstance(args, LetiConfig):
            raise TypeError(f"`args` must be a LetiConfig, got {type(args).__name__}")
        self.args = args
        self.train_tasks = resolve_tasks(train_tasks, "train_tasks")
        self.eval_tasks = resolve_tasks(eval_tasks, "eval_tasks") if eval_tasks is not None else []
        self.limits = args.execution_limits(self._tasks_limits())
        if args.generation_backend == "vllm":
            from .vllm_backend import check_vllm_usable

            check_vllm_usable()
        if args.quantized:
            _require_bitsandbytes()
        self.callbacks = callbacks
        self.output_dir = Path(args.output_dir)
        self.distributed = Processes()
        # one tracker run for the whole LeTI run (an unknown or missing tracker fails here, before the model loads)
        self.tracker = RunTracker(args.report_to, self.output_dir, enabled=self.distributed.is_main,
                                  project=args.project, run_name=args.run_name, space_id=args.trackio_space_id,
                                  bucket_id=args.trackio_bucket_id, private=args.hub_private_repo,
                                  config=args.to_dict())

        # Tokenizer and model
        self.tokenizer = processing_class if processing_class is not None else _load_tokenizer(model)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.model = _load_model(model, args) if isinstance(model, (str, os.PathLike)) else model
        self._base_model = model if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", None)
        if args.quantized:
            keep_4bit_weights_trainable(self.model)  # bitsandbytes' CPU inference layout breaks training
        if _movable(self.model) and self.model.device != args.device:
            # sampling comes before the first training step (where Trainer would move it): use the accelerator now
            self.model.to(args.device)
        self.new_token_ids = self._add_special_tokens()

        # PEFT: one adapter for the whole run (never re-wrapped per iteration, nor if the caller already did)
        if args.use_peft and not hasattr(self.model, "peft_config"):
            from transformers import set_seed

            set_seed(args.seed)  # LoRA's random init: the same for the same seed, whatever ran before in the process
            self.model = self._wrap_peft(self.model)
        self._pretrain_rows: list[dict] | None = None
        self._replay_memory: tuple[dict[str, list[Rollout]], int] = ({}, 0)  # replay_passing: (per task, read up to)
        self.last_sft_trainer = None
        # what the caller wants recorded beside the recipe in config.json (`leti train`: the environment,
        # its splits and options), so that a run folder says what it trained on
        self.run_info: dict[str, Any] = {}
        self._iteration = 0  # the last iteration trained (evaluation seeds: the same when resumed)
        self._table: IterationTable | None = None  # the console's per-iteration rows
        self._optimizer_steps = 0  # cumulative over iterations: the trackers' step
        # sample -> execute -> Rollout; deduplicate_execution: the runner remembers this run's verdicts
        # execution_servers: on `leti serve` machines instead of this one's cores (checked now, before any sampling)
        runner = TaskRunner(self.limits, workers=args.execution_workers, deduplicate=args.deduplicate_execution,
                            servers=args.execution_servers)
        runner.check_servers()
        self.collector = RolloutCollector(self._make_sampler(), runner, self.distributed)

    # -- set-up ---------------------------------------------------------------------------------

    def _tasks_limits(self) -> ExecutionLimits:
        """The limits the training and evaluation tasks bring (one runner executes both)."""
        limits = self.train_tasks.limits
        if self.eval_tasks and self.eval_tasks.limits != limits:
            raise ValueError(f"`train_tasks` and `eval_tasks` run under different limits ({limits} and "
                             f"{self.eval_tasks.limits}), and one executor runs both. Pass tasks of one environment, or "
                             "TaskSets with the same limits (leti_env.TaskSet(tasks, limits)).")
        return limits

    def _add_special_tokens(self) -> list[int]:
        self.tokenizer.add_tokens(self.args.special_tokens, special_tokens=True)
        ids = self.tokenizer.convert_tokens_to_ids(self.args.special_tokens)
        rows = self.model.get_input_embeddings().weight.shape[0]
        self._resized = max(ids) >= rows
        if self._resized:  # CodeGen has spare rows (the authors never resize); most models need more
            self.model.resize_token_embeddings(len(self.tokenizer))
        return ids

    def new_token_mode(self) -> str:
        """How the new tokens' rows are trained (``new_token_rows``, with ``auto`` resolved)."""
        mode = self.args.new_token_rows
        if mode == "auto":
            tied = bool(getattr(self.model.config, "tie_word_embeddings", False))
            mode = "embeddings" if tied else "trainable_tokens"
        return mode

    def _wrap_peft(self, model):
        return wrap_with_lora(model, self.args, self.new_token_ids, self.new_token_mode())

    # -- the loop -------------------------------------------------------------------------------

    def train(self) -> dict:
        """Run (or resume) all iterations; return the last iteration's metrics."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.distributed.is_main:
            from .default_model import base_model_record
            from .hub import base_model_hub_id, env_of_tasks
            from .machine import machine_record

            # the recipe, and where its figures come from: the limits its programs ran under (the environment's,
            # or the config's execution_* fields), the base model (its Hub id, or the hash of leti's built-in one),
            # the environment, the CPU, torch's kernels. TrainingArguments.to_dict masks every field named *_token;
            # LeTI's four tokens are the prompt format, not secrets (hub_token stays masked).
            record = {**self.args.to_dict(), **{name: getattr(self.args, name) for name in LETI_TOKEN_FIELDS},
                      "env_id": env_of_tasks(self.train_tasks), **self.run_info,
                      "execution_limits": dataclasses.asdict(self.limits),
                      "base_model_hub_id": base_model_hub_id(self._base_model), **base_model_record(self._base_model),
                      "machine": machine_record()}
            (self.output_dir / "config.json").write_text(json.dumps(record, indent=2, default=str))
        done = self.completed_iterations()
        if done:
            self._load_weights(self.output_dir / f"iteration-{max(done)}" / "model")
            self._iteration = max(done)
        history = self._forget_incomplete(done)
        logged = {m["iteration"] for m in history}
        metrics: dict = history[-1] if history else {}
        # a resumed run's curves continue from the step its last complete iteration ended on; the trackers
        # drop what an interrupted attempt logged after it
        self._optimizer_steps = int(metrics.get("run/optimizer_steps", 0))
        try:
            self.tracker.start(resume_step=self._optimizer_steps)
            if self.args.eval_before_training and self.eval_tasks and 0 not in logged:
                metrics = {"iteration": 0, **self._evaluations()}
                self._record(metrics)
            for iteration in range(max(done, default=0) + 1, self.args.num_iterations + 1):
                metrics = self.run_iteration(iteration)
        finally:
            self.collector.sampler.close()  # stops vLLM's engine process, also on Ctrl-C or an error
            self.tracker.close()
        # the scratch checkpoint is a full model's size; `leti export` writes a final one
        shutil.rmtree(self.output_dir / "vllm-model", ignore_errors=True)
        if self.distributed.is_main:
            from .hub import write_model_card
            from .report import write_report

            write_report(self.output_dir, "LeTI run")
            write_model_card(self.output_dir, self.args.hub_model_id)
            if self.args.push_to_hub:
                self.push_to_hub()
        return metrics

    def _hub_strategy(self) -> str:
        return str(getattr(self.args.hub_strategy, "value", self.args.hub_strategy))

    def push_to_hub(self, iterations: str | None = None, repo_id: str | None = None, api: Any = None) -> dict:
        """Upload the run (``trainers.hub.push_run``): the model card, the last (``"all"``: every) iteration's
        adapter or model, and the rollouts as a dataset ``<repo_id>-rollouts`` with one split per iteration.

        ``push_to_hub=True`` calls it after training (``hub_strategy`` ``every_save`` and ``all_checkpoints``:
        after every iteration), so a run is published as configured; call it to push a run again.
        ``repo_id`` default: ``hub_model_id``, else the run folder's name. ``iterations`` default: ``"all"``
        under ``hub_strategy="all_checkpoints"``, else ``"last"``. ``hub_token``, ``hub_revision``,
        ``hub_private_repo`` and ``hub_license`` go to the upload."""
        from .hub import push_run

        repo_id = repo_id or self.args.hub_model_id or self.output_dir.name
        iterations = iterations or ("all" if self._hub_strategy() == "all_checkpoints" else "last")
        return push_run(self.output_dir, repo_id, iterations=iterations, private=self.args.hub_private_repo,
                        token=self.args.hub_token, revision=self.args.hub_revision, license=self.args.hub_license,
                        api=api)

    def run_iteration(self, iteration: int) -> dict:
        """One LeTI iteration; its folder ends with a ``COMPLETE`` marker once everything is saved."""
        folder = self.output_dir / f"iteration-{iteration}"
        self.collector.timings.clear()
        self._iteration = iteration
        rollouts = self.collect_rollouts(iteration, folder / "rollouts")
        rows = self.training_rows(rollouts, iteration)
        with self._timed("training"):
            loss = self._fit(rows, folder) if rows else None
        if self.distributed.is_main:
            self._save_model(folder / "model")
        self.distributed.wait()
        statuses = Counter(r.status for r in rollouts)
        metrics: dict[str, Any] = {
            "iteration": iteration,
            "rollout/pass_rate": sum(r.reward for r in rollouts) / len(rollouts),
            "rollout/count": len(rollouts),
            **{f"rollout/status/{s}": c / len(rollouts) for s, c in sorted(statuses.items())},
            "train/rows": len(rows),
            "train/loss": loss,
            "run/processes": self.distributed.world,  # data-parallel processes that sampled and trained
            "run/optimizer_steps": self._optimizer_steps,  # cumulative: the trackers' step of this iteration
        }
        if self.eval_tasks:
            with self._timed("evaluation"):
                metrics.update(self._evaluations())
        metrics.update({f"time/{k}": round(v, 2) for k, v in self.collector.timings.items()})
        self._record(metrics)
        self._log_programs(rollouts, iteration)
        if self.distributed.is_main:
            (folder / "COMPLETE").write_text(json.dumps(metrics, indent=2))
            # hub_strategy every_save / all_checkpoints: each iteration on the Hub as it completes (the last
            # one is pushed once training ends, with the report)
            if self.args.push_to_hub and self._hub_strategy() in ("every_save", "all_checkpoints") \
                    and iteration < self.args.num_iterations:
                self.push_to_hub()
        self.distributed.wait()
        return metrics

    def _reference_rollouts(self, iteration: int) -> list[Rollout]:
        """Every training task's reference program, as a passing rollout (``train_on="references"``)."""
        missing = [t.task_id for t in self.train_tasks if not t.reference_solution]
        if missing:
            raise ValueError(f"train_on='references' needs a reference program for every training task; "
                             f"{len(missing)} have none (e.g. {missing[:3]})")
        return [Rollout(task_id=t.task_id, prompt=t.prompt, program=t.reference_solution, reward=1.0, status="passed",
                        feedback="", iteration=iteration) for t in self.train_tasks]

    def collect_rollouts(self, iteration: int, path: Path) -> list[Rollout]:
        """Sample and execute, or reload the rollouts an interrupted run already saved."""
        from transformers import set_seed

        set_seed(self.args.seed + iteration)  # an iteration samples the same programs whether resumed or not
        condition = "good" if iteration > 1 or self.args.condition_first_iteration else "none"
        prompts = [inference_prompt(t.prompt, self.args, condition, self.tokenizer) for t in self.train_tasks]
        guided = self.args.guidance_weight if condition == "good" else 0.0
        params = SamplingParams(self.args.num_generations_per_prompt, self.args.max_new_tokens, self.args.temperature,
                                self.args.top_p, self.args.top_k, guidance_weight=guided)
        return self.collector.collect(self.model, self.tokenizer, self.train_tasks, prompts, params,
                                      seed=_call_seed(self.args.seed, iteration), iteration=iteration,
                                      postprocess=self.args.postprocess_rollouts, path=path,
                                      label=f"iteration {iteration}", negative_prompts=self._negative_prompts(
                                          self.train_tasks) if guided else None)

    def training_rows(self, rollouts: Sequence[Rollout], iteration: int) -> list[dict]:
        """Tokenized LeTI rows of this iteration, with pre-training rows interleaved step by step."""
        if self.args.train_on == "references":  # ground truth instead of the samples (the SFT comparison)
            rollouts = self._reference_rollouts(iteration)
        earlier = self._earlier_passing(iteration) if self.args.replay_passing and self.args.train_on == "rollouts" else None
        rows = build_rows(rollouts, self.args, self.tokenizer, seed=self.args.seed + iteration, earlier_passing=earlier)
        if self.args.pretrain_dataset and rows:
            world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
            per_step = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * world
            return interleave_pretraining_dataset(rows, self.pretraining_rows(), per_step)
        return rows

    def _earlier_passing(self, iteration: int) -> dict[str, list[Rollout]]:
        """Each task's passing rollouts from the latest earlier iteration that had any (read from the run folder,
        so a resumed run replays the same programs)."""
        memory, upto = self._replay_memory
        for earlier in range(upto + 1, iteration):
            path = self.output_dir / f"iteration-{earlier}" / "rollouts"
            if (path / "dataset_info.json").exists():
                latest: dict[str, list[Rollout]] = {}
                for rollout in load_rollouts(path):
                    if rollout.passed:
                        latest.setdefault(rollout.task_id, []).append(rollout)
                memory.update(latest)
        self._replay_memory = (memory, max(upto, iteration - 1))
        return memory

    def pretraining_rows(self):
        """The run's pre-training blocks (a ``datasets.Dataset`` of int32 ``input_ids``/``labels``).

        Built once per run by the main process into ``<output_dir>/pretraining-blocks`` (as the
        authors: the documents read, ``train_test_split(pretrain_test_size, seed=42)``, the train part
        tokenized, concatenated and cut into blocks); every process, every iteration and a resumed
        run read those same blocks from disk instead of holding Python lists.
        """
        if self._pretrain_rows is None:
            import datasets

            folder = self.output_dir / "pretraining-blocks"
            if self.distributed.is_main and not (folder / "dataset_info.json").exists():
                tmp = folder.with_name(folder.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                folder.parent.mkdir(parents=True, exist_ok=True)
                build_pretraining_blocks(self.args, self.tokenizer, tmp)
                os.replace(tmp, folder)
            self.distributed.wait()  # every process, always: whether to wait must not depend on a race
            self._pretrain_rows = datasets.load_from_disk(str(folder))
        return self._pretrain_rows

    def _fit(self, rows: list[dict], folder: Path) -> float:
        import datasets
        from transformers import PrinterCallback, ProgressCallback
        from trl import SFTTrainer

        from .weighted_loss import WeightedSFTTrainer

        self.collector.sampler.sleep()  # training gets the sampler's GPU memory back (vLLM)
        # LeTI's RunTracker logs the whole run (the loss callback below); the iteration's SFTTrainer reports to none
        args = dataclasses.replace(self.args, output_dir=str(folder / "sft"), push_to_hub=False,  # LetiTrainer pushes
                                   report_to="none")
        # SFTTrainer casts a quantized model's trainable parameters to bf16 (trl 1.16), where AdamW's
        # small updates round away. Keep the fp32 tensors themselves (not a cast back: that would
        # lose what the bf16 copy rounded off) and put them back once it is built.
        keep = ({name: p.data for name, p in self.model.named_parameters() if p.requires_grad}
                if self.args.quantized and self.args.adapter_dtype == "float32" else {})
        if self.args.quantized:  # whatever ran the model in eval mode since (a callback, the caller)
            keep_4bit_weights_trainable(self.model)
        train_dataset = rows if isinstance(rows, datasets.Dataset) else datasets.Dataset.from_list(rows)
        with third_party_deprecations_ignored(), progress(self.distributed.is_main) as shown:
            weighted = LOSS_WEIGHT in train_dataset.column_names  # failure_loss_weight != 1
            trainer_class = WeightedSFTTrainer if weighted else SFTTrainer
            trainer = trainer_class(model=self.model, args=args, train_dataset=train_dataset,
                                    processing_class=self.tokenizer, callbacks=self.callbacks)
            for name, param in trainer.model.named_parameters():
                if name in keep and param.dtype != keep[name].dtype:
                    param.data = keep[name]
            # leti prints one row per iteration: not transformers' dict of every log call, nor its tqdm bar
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            trainer.add_callback(training_progress(shown, f"{folder.name.replace('-', ' ')}: training"))
            if self.tracker:
                trainer.add_callback(loss_callback(self.tracker, self._optimizer_steps))
            result = trainer.train()
        self._optimizer_steps += trainer.state.global_step
        self.model = trainer.model if not hasattr(trainer.model, "module") else trainer.model.module
        # the next iteration builds a fresh optimizer: free this one's state now (sampling needs the memory)
        trainer.optimizer = trainer.lr_scheduler = None
        trainer.accelerator.free_memory()
        self.last_sft_trainer = trainer
        self.collector.sampler.weights_changed()
        shutil.rmtree(folder / "sft", ignore_errors=True)  # the iteration's model folder is the checkpoint
        return float(result.training_loss)

    def _evaluations(self) -> dict[str, float]:
        """``eval/<metric>`` under ``eval_condition``, and ``eval/<condition>/<metric>`` under each of
        ``eval_extra_conditions``."""
        out = {f"eval/{k}": v for k, v in self.evaluate().items()}
        for condition in self.args.eval_extra_conditions:  # pass@k only: the refinement turn is the main condition's
            out.update({f"eval/{condition}/{k}": v for k, v in self.evaluate(condition=condition, max_turns=1).items()})
        return out

    def evaluate(self, tasks: Sequence[CodeTask] | None = None, condition: str | None = None,
                 max_turns: int | None = None) -> dict[str, float]:
        """pass@k (and the per-sample pass rate), raw and post-processed, with the configured conditioning
        (``condition``: another prefix, ``"good"``, ``"none"`` or ``"bad"``) and ``eval_max_turns`` (or
        ``max_turns``)."""
        tasks = list(tasks if tasks is not None else self.eval_tasks)[: self.args.eval_max_tasks or None]
        condition = condition or self.args.eval_condition
        prompts = [inference_prompt(t.prompt, self.args, condition, self.tokenizer) for t in tasks]
        guided = self.args.guidance_weight if condition == "good" else 0.0
        params = SamplingParams(self.args.eval_num_samples, self.args.eval_max_new_tokens, self.args.eval_temperature,
                                self.args.eval_top_p, guidance_weight=guided)
        return self.collector.evaluate(self.model, self.tokenizer, tasks, prompts, params, self.args.eval_k,
                                       seed=_call_seed(self.args.seed, -1 - self._iteration),
                                       label=f"iteration {self._iteration}: evaluation",
                                       max_turns=max_turns or self.args.eval_max_turns,
                                       negative_prompts=self._negative_prompts(tasks) if guided else None)

    def _negative_prompts(self, tasks: Sequence[CodeTask]) -> list[str]:
        """The bad-token prompts that reward-token guidance steers away from (``guidance_weight``)."""
        return [inference_prompt(t.prompt, self.args, "bad", self.tokenizer) for t in tasks]

    def _make_sampler(self) -> Sampler:
        """The configured backend. Each sample's randomness is keyed by (seed, call, the prompt's index in
        the whole task list, the sample's index): the same programs on one process or several, at any
        batch size, and after an out-of-memory retry."""
        if self.args.generation_backend == "vllm":
            from .vllm_backend import VLLMSampler

            return VLLMSampler(self.output_dir / "vllm-model", seed=self.args.seed,
                               gpu_memory_utilization=self.args.vllm_gpu_memory_utilization,
                               max_model_len=self.args.vllm_max_model_len,
                               enable_sleep_mode=self.args.vllm_enable_sleep_mode, dtype=self.args.vllm_dtype)
        return TransformersSampler(self.args.generation_batch_size, self.args.share_prompt_prefill)

    @contextlib.contextmanager
    def _timed(self, phase: str):
        """Adds the wall time of a phase to this iteration's ``time/<phase>`` metric."""
        with self.collector.timed(phase):
            yield

    # -- persistence ----------------------------------------------------------------------------

    def completed_iterations(self) -> set[int]:
        out = set()
        for folder in self.output_dir.glob("iteration-*"):
            if (folder / "COMPLETE").exists() and folder.name.split("-")[-1].isdigit():
                out.add(int(folder.name.split("-")[-1]))
        return out

    def _forget_incomplete(self, done: set[int]) -> list[dict]:
        """``metrics.jsonl`` without the iterations that did not complete (a run killed between recording an
        iteration's metrics and marking it ``COMPLETE``), rewritten so on the main process: the history a
        resumed run continues from, whose last entry is the last complete iteration (or iteration 0)."""
        history = self.metrics_history()
        kept = [m for m in history if m.get("iteration", 0) == 0 or m.get("iteration") in done]
        if len(kept) != len(history) and self.distributed.is_main:
            tmp = self.output_dir / "metrics.jsonl.tmp"  # whole or not at all: other processes read it too
            tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
            os.replace(tmp, self.output_dir / "metrics.jsonl")
        return kept

    def metrics_history(self) -> list[dict]:
        path = self.output_dir / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _record(self, metrics: dict) -> None:
        if not self.distributed.is_main:
            return
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        # one tracker run for the LeTI run, at the cumulative optimizer step (iteration 0: step 0)
        self.tracker.log({f"leti/{k}": v for k, v in metrics.items()}, step=int(metrics.get("run/optimizer_steps", 0)))
        if self._table is None:
            self._table = IterationTable(self.args.eval_k[0])
        self._table.print(metrics)

    def _log_programs(self, rollouts: Sequence[Rollout], iteration: int, limit: int = 32) -> None:
        """A table of the iteration's sampled programs (the first ``limit``), with status and feedback."""
        if self.tracker:
            rows = [(r.task_id, r.sample_index, r.status, r.reward, r.program, r.feedback) for r in rollouts[:limit]]
            self.tracker.log_table("leti/rollouts", ("task_id", "sample", "status", "reward", "program", "feedback"),
                                   rows, step=self._optimizer_steps)

    def _save_model(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        # A resized embedding must be saved with the adapter: say so, rather than have PEFT find out and warn
        extra = {"save_embedding_layers": True} if self._resized and hasattr(self.model, "peft_config") else {}
        self.model.save_pretrained(tmp, **extra)
        self.tokenizer.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)

    def _load_weights(self, path: Path) -> None:
        self.collector.sampler.weights_changed()
        if self.args.use_peft:
            from peft import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_peft_weights(str(path)))
        else:
            from safetensors.torch import load_file

            state: dict = {}
            for shard in sorted(path.glob("*.safetensors")):
                state.update(load_file(shard))
            self.model.load_state_dict(state, strict=False)


def _call_seed(seed: int, call: int) -> int:
    """One sampling seed per (run seed, call): iterations and evaluations each draw fresh programs."""
    return (seed * 1_000_003 + call * 10_007) % (2**31 - 1)
