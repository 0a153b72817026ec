"""Rollouts: sample programs, execute them, keep what happened. One path for every caller.

``RolloutCollector`` is the sample → execute → ``Rollout`` stage of the LeTI loop, and its evaluation
(pass@k); ``leti eval`` runs the same collector. Its ``Sampler`` (transformers or vLLM) draws the
programs and its ``leti_env.TaskRunner`` executes them, the executor ``CodeEnv.run_many`` and TRL's
``ExecutionReward`` use too. Under a multi-process launcher each process samples and executes its
share of the prompts and everyone gets all of them back, in order.

Rollouts are saved as one 🤗 dataset per iteration, written atomically: a crash leaves the previous
folder or none, never half of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leti_env import CodeTask, ExecutionResult, TaskRunner, pass_at_k

from .console import progress
from .distributed import Processes, shared_execution
from .sampling import Sampler, SamplingParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rollout:
    """One sampled program and what executing it produced (a row of the saved rollouts dataset)."""

    task_id: str
    prompt: str  # the task prompt, without any reward-token prefix
    program: str  # the sampled completion, as executed
    reward: float
    status: str
    feedback: str
    iteration: int = 0
    sample_index: int = 0

    @property
    def passed(self) -> bool:
        return self.reward > 0


def save_rollouts(rollouts: Sequence[Rollout], path: str | Path) -> None:
    """Write rollouts as a 🤗 dataset folder (next to ``path``, then moved into place)."""
    import datasets

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_list([dataclasses.asdict(r) for r in rollouts]).save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def load_rollouts(path: str | Path) -> list[Rollout]:
    """Read a folder written by ``save_rollouts`` (columns it does not know are ignored)."""
    import datasets

    if not (Path(path) / "dataset_info.json").exists():
        raise FileNotFoundError(f"no saved rollouts at {str(path)!r}: expected a folder written by save_rollouts "
                                "(a LeTI run's iteration-N/rollouts).")
    names = {f.name for f in dataclasses.fields(Rollout)}
    return [Rollout(**{k: v for k, v in row.items() if k in names}) for row in datasets.load_from_disk(str(path))]


class RolloutCollector:
    """Samples programs with ``sampler``, executes them with ``runner``, and returns ``Rollout``s.

    Args:
        sampler: The generation backend (``TransformersSampler`` or ``VLLMSampler``).
        runner: The executor (its ``deduplicate`` decides whether repeated programs run again).
        processes: The processes of a data-parallel run (default: this one alone, or the launcher's).
        show_progress: One transient bar per phase on the main process (off when not a terminal).

    ``timings`` adds up the wall time of each phase (``sampling``, ``execution``) until cleared.
    """

    def __init__(self, sampler: Sampler, runner: TaskRunner, processes: Processes | None = None,
                 show_progress: bool = True):
        self.sampler, self.runner = sampler, runner
        self.processes = processes if processes is not None else Processes()
        self.show_progress = show_progress
        self.timings: dict[str, float] = {}

    def collect(self, model: Any, tokenizer: Any, tasks: Sequence[CodeTask], prompts: Sequence[str],
                params: SamplingParams, *, seed: int, iteration: int = 0, postprocess: bool = False,
                path: str | Path | None = None, label: str = "rollouts",
                negative_prompts: Sequence[str] | None = None) -> list[Rollout]:
        """``params.num_samples`` rollouts per task, in task order, then sample order.

        ``prompts[i]`` is what the model continues for ``tasks[i]`` (a reward-token prefix, say); the
        rollout records the task's own prompt. With ``postprocess`` each completion is cut at the task's
        stop strings before it runs. With ``path``, rollouts saved there are read back instead of
        sampled again, and new ones are saved there (by the main process) before they are returned.
        """
        if path is not None and (Path(path) / "dataset_info.json").exists():
            return load_rollouts(path)
        mine = self.processes.share(range(len(tasks)))  # this process's prompts (all of them on one)
        n = params.num_samples
        with self._progress() as shown:
            completions = self._sample(shown, f"{label}: sampling", model, tokenizer, [prompts[i] for i in mine],
                                       params, seed=seed, prompt_ids=mine,
                                       negative_prompts=_share(negative_prompts, mine))
            if postprocess:
                completions = [[tasks[i].postprocess(c) for c in samples] for i, samples in zip(mine, completions)]
            pairs = [(tasks[i], c) for i, samples in zip(mine, completions) for c in samples]
            executing = shown.add_task(f"{label}: executing", total=len(pairs))
            with self.timed("execution"):
                results = self.runner.run(pairs, progress=lambda done, total: shown.update(executing, completed=done))
        local = [(mine[k // n], _rollout(task, completion, result, iteration, k % n))
                 for k, ((task, completion), result) in enumerate(zip(pairs, results))]
        rollouts = [r for _, r in sorted(self.processes.gather(local), key=lambda x: (x[0], x[1].sample_index))]
        if path is not None:
            if self.processes.is_main:
                save_rollouts(rollouts, path)
            self.processes.wait()
        return rollouts

    def evaluate(self, model: Any, tokenizer: Any, tasks: Sequence[CodeTask], prompts: Sequence[str],
                 params: SamplingParams, ks: Sequence[int], *, seed: int, label: str = "evaluation",
                 record=None, max_turns: int = 1, negative_prompts: Sequence[str] | None = None) -> dict[str, float]:
        """pass@k (and the per-sample pass rate) of ``tasks``, raw and post-processed (``*/postprocessed``).

        A collective call under a multi-process launcher: every process samples its share, and every
        process executes a share of all the programs (with its own cores), so no process idles in a
        collective while one executes everything (which can outlast the process group's timeout).
        ``record`` sees every execution (``pass_at_k_report``).

        ``max_turns=2`` adds one refinement turn, where the feedback is the model's input: each failed
        (post-processed) attempt, with its feedback, is shown again (``leti_env.refinement_prompt``'s
        format, after the same reward-token prefix) and the model writes one new attempt. Reported as
        ``turn2/pass@k`` (a sample counts if either attempt passed), ``turn2/sample_pass_rate`` and
        ``repair_rate`` (the share of failed first attempts the second fixed).
        """
        if max_turns not in (1, 2):
            raise ValueError(f"`max_turns` must be 1 or 2 (one refinement turn), got {max_turns}")
        mine = self.processes.share(range(len(tasks)))
        with self._progress() as shown:
            local = self._sample(shown, label, model, tokenizer, [prompts[i] for i in mine], params, seed=seed,
                                 prompt_ids=mine, negative_prompts=_share(negative_prompts, mine))
        completions = [c for _, c in sorted(self.processes.gather(list(zip(mine, local))), key=lambda x: x[0])]
        first: list = []  # the post-processed attempts' (task, completion, result), in task then sample order

        def keep(variant, task, completion, result):
            if variant == "postprocessed":
                first.append((task, completion, result))
            if record is not None:
                record(variant, task, completion, result)

        with self.timed("execution"):
            report = pass_at_k_report(tasks, completions, ks, self.execute, keep)
        if max_turns == 2:
            report.update(self._refinement_turn(model, tokenizer, tasks, prompts, params, ks, first, seed=seed,
                                                label=label))
        return report

    def _refinement_turn(self, model, tokenizer, tasks, prompts, params, ks, first, *, seed: int, label: str) -> dict:
        """One new attempt for each failed first attempt; see ``evaluate``."""
        from leti_env.envs import refinement_feedback

        index = {id(t): i for i, t in enumerate(tasks)}
        limit = _context_limit(model)
        failed, inputs, lengths, skipped = [], [], [], 0
        for k, (task, attempt, result) in enumerate(first):
            if result.passed:
                continue
            conditioned = prompts[index[id(task)]]
            # what follows the task in its conditioned prompt (the good token under
            # reward_token_position="before_program") follows the repeated task too
            trail = conditioned[conditioned.rindex(task.prompt) + len(task.prompt):] if task.prompt else ""
            fitted = _fitting_refinement(tokenizer, conditioned + attempt, task.prompt, result.feedback,
                                         lambda p, f: refinement_feedback(p, f) + trail,
                                         None if limit is None else limit - params.max_new_tokens, with_length=True)
            if fitted is None:
                skipped += 1
                continue
            failed.append(k)
            inputs.append(fitted[0])
            lengths.append(fitted[1])
        if skipped:
            logger.warning("%d failed attempts leave no room for a refinement turn in the model's %s-token context "
                           "(even without their feedback): they count as not repaired.", skipped, limit)
        # by length, so a batch pads little (the feedback's length varies most); each input keeps its own id,
        # so the samples are what any order gives
        order = sorted(range(len(inputs)), key=lambda i: lengths[i])
        mine = [order[i] for i in self.processes.share(range(len(inputs)))]
        with self._progress() as shown:
            local = self._sample(shown, f"{label}: refinement turn", model, tokenizer, [inputs[i] for i in mine],
                                 dataclasses.replace(params, num_samples=1, guidance_weight=0.0), seed=seed + 1,
                                 prompt_ids=mine)
        second = [c[0] for _, c in sorted(self.processes.gather(list(zip(mine, local))), key=lambda x: x[0])]
        pairs = [(first[k][0], first[k][0].postprocess(c)) for k, c in zip(failed, second)]
        with self.timed("execution"):
            results = self.execute(pairs) if pairs else []
        repaired = {k for k, r in zip(failed, results) if r.passed}
        per_task: dict[int, list[bool]] = {}
        for k, (task, _, result) in enumerate(first):
            per_task.setdefault(index[id(task)], []).append(result.passed or k in repaired)
        out = {}
        for k in ks:
            scores = [pass_at_k(len(v), sum(v), k) for v in per_task.values()]
            out[f"turn2/pass@{k}"] = sum(scores) / len(scores) if scores else 0.0
        out["turn2/sample_pass_rate"] = sum(map(sum, per_task.values())) / max(1, sum(map(len, per_task.values())))
        failures = sum(not r.passed for _, _, r in first)
        out["repair_rate"] = len(repaired) / failures if failures else 0.0
        return out

    def execute(self, pairs: list[tuple[CodeTask, str]]) -> list[ExecutionResult]:
        """Run (task, completion) pairs, split across the processes; every process gets every result.
        A collective call: every process must make it, with the same ``pairs``."""
        return shared_execution(self.processes, self.runner.run, pairs)

    def _sample(self, shown, description: str, model, tokenizer, prompts, params, *, seed, prompt_ids,
                negative_prompts=None):
        bar = shown.add_task(description, total=len(prompts) * params.num_samples)
        guided = {"negative_prompts": negative_prompts} if params.guidance_weight > 0 else {}
        with self.timed("sampling"):
            return self.sampler.generate(model, tokenizer, prompts, params, seed=seed, prompt_ids=prompt_ids,
                                         on_batch=lambda k: shown.advance(bar, k), **guided)

    def _progress(self):
        return progress(self.show_progress and self.processes.is_main)

    @contextlib.contextmanager
    def timed(self, phase: str):
        """Adds the wall time of the block to ``timings[phase]``."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.monotonic() - start


def pass_at_k_report(tasks: Sequence[CodeTask], completions: Sequence[Sequence[str]], ks: Sequence[int],
                     run_many: Callable[[list], list], record: Callable | None = None) -> dict[str, float]:
    """pass@k over tasks, for raw completions and post-processed ones (``*/postprocessed``).

    The scoring of ``RolloutCollector.evaluate``, and of ``leti eval --samples`` (which has completions
    but no model), so that a re-scored samples file is scored exactly as the run scored it.
    ``completions[i]`` are the samples of ``tasks[i]``; ``run_many(pairs)`` executes ``(task, completion)``
    pairs in order (``TaskRunner.run``, or a collective split across processes). Post-processing is the
    task's own rule (``CodeTask.postprocess``: its stop regex or stop words).

    ``record(variant, task, completion, result)``, if given, sees every execution (``variant`` is ``"raw"``
    or ``"postprocessed"``): ``leti eval`` writes its samples file from it.
    """
    report: dict[str, float] = {}
    for label, postprocess in (("", False), ("/postprocessed", True)):
        pairs = [(task, task.postprocess(c) if postprocess else c) for task, samples in zip(tasks, completions)
                 for c in samples]
        results = run_many(pairs)
        if record is not None:
            for (task, completion), result in zip(pairs, results):
                record(label.strip("/") or "raw", task, completion, result)
        index = 0
        per_task = []
        for samples in completions:
            per_task.append((len(samples), sum(r.passed for r in results[index:index + len(samples)])))
            index += len(samples)
        for k in ks:
            scores = [pass_at_k(n, c, k) for n, c in per_task]
            report[f"pass@{k}{label}"] = sum(scores) / len(scores) if scores else 0.0
        report[f"sample_pass_rate{label}"] = sum(c for _, c in per_task) / max(1, sum(n for n, _ in per_task))
    return report


def _rollout(task: CodeTask, completion: str, result: ExecutionResult, iteration: int, sample_index: int) -> Rollout:
    return Rollout(task.task_id, task.prompt, completion, result.reward, result.status, result.feedback, iteration,
                   sample_index)


def _share(values: Sequence[str] | None, mine: Sequence[int]) -> list[str] | None:
    return None if values is None else [values[i] for i in mine]


def _context_limit(model) -> int | None:
    """The most positions ``model`` takes (its config's ``max_position_embeddings`` or ``n_positions``)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _fitting_refinement(tokenizer, head: str, prompt: str, feedback: str, refinement_feedback, budget: int | None,
                        with_length: bool = False):
    """``head + refinement_feedback(prompt, feedback)`` in at most ``budget`` tokens: the feedback's first
    lines go first (its last lines name the error), and None if even no feedback does not fit.
    ``with_length``: ``(text, its length in tokens)``."""
    lines = feedback.splitlines(keepends=True)
    for start in range(len(lines) + 1):
        text = head + refinement_feedback(prompt, "".join(lines[start:]))
        length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if budget is None or length <= budget:
            return (text, length) if with_length else text
    return None
