"""pass@k evaluation, and LeTI's post-processing of sampled programs (stop words)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from leti_env import CodeTask, pass_at_k
from leti_env.tasks.base import cut_at_stop_words
from leti_env.tasks.humaneval import STOP_WORDS as humaneval_stop_words
from leti_env.tasks.mbpp import STOP_WORDS as mbpp_stop_words

from .sampling import generate  # noqa: F401 - its former home; `trainers.sampling` is the one to import

# Kept for imports from before the stop words moved onto the tasks (``CodeTask.stop_words``)
MBPP_STOP_WORDS = mbpp_stop_words
HUMANEVAL_STOP_WORDS = humaneval_stop_words
postprocess = cut_at_stop_words


def postprocess_for(task: CodeTask, completion: str) -> str:
    """Post-process with the task's own rule (``CodeTask.postprocess``: its stop regex or stop words)."""
    return task.postprocess(completion)


def pass_at_k_report(tasks: Sequence[CodeTask], completions: Sequence[Sequence[str]], ks: Sequence[int],
                     run_many: Callable[[list], list], record: Callable | None = None) -> dict[str, float]:
    """pass@k over tasks, for raw completions and post-processed ones (``*/postprocessed``).

    ``record(variant, task, completion, result)``, if given, sees every execution (``variant`` is ``"raw"``
    or ``"postprocessed"``): ``leti eval`` writes its samples file from it.
    """
    report: dict[str, float] = {}
    for label, transform in (("", lambda task, c: c), ("/postprocessed", postprocess_for)):
        pairs = [(task, transform(task, c)) for task, samples in zip(tasks, completions) for c in samples]
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
