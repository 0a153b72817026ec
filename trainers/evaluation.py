"""pass@k evaluation, and LeTI's post-processing of sampled programs (stop words)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from leti_env import CodeTask, pass_at_k

from .sampling import generate  # noqa: F401 - its former home; `trainers.sampling` is the one to import

# Where a completion is cut when post-processing (the authors' lists, matched as plain substrings).
MBPP_STOP_WORDS = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/")
HUMANEVAL_STOP_WORDS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def stop_words_for(task: CodeTask) -> tuple[str, ...]:
    if task.task_id.startswith("MBPP/"):
        return MBPP_STOP_WORDS
    if task.task_id.startswith("HumanEval/"):
        return HUMANEVAL_STOP_WORDS
    return tuple(task.metadata.get("stop_words", ()))


def postprocess_for(task: CodeTask, completion: str) -> str:
    """Post-process with the task's own rule: a stop regex (EAE) or its stop words (MBPP/HumanEval)."""
    pattern = task.metadata.get("stop_regex")
    if pattern:
        return re.split(pattern, completion, maxsplit=1)[0]
    return postprocess(completion, stop_words_for(task))


def postprocess(completion: str, stop_words: Sequence[str]) -> str:
    """Cut ``completion`` at the first stop word.

    Unlike the authors' code, the stop words are plain substrings (their MBPP regex contained an
    unescaped ``|`` and so also cut at every ``/``), and a completion without a stop word is kept whole
    (their HumanEval version returned ``""``).
    """
    cut = len(completion)
    for word in stop_words:
        index = completion.find(word)
        if index != -1:
            cut = min(cut, index)
    return completion[:cut]


def pass_at_k_report(tasks: Sequence[CodeTask], completions: Sequence[Sequence[str]], ks: Sequence[int],
                     run_many: Callable[[list], list]) -> dict[str, float]:
    """pass@k over tasks, for raw completions and post-processed ones (``*/postprocessed``)."""
    report: dict[str, float] = {}
    for label, transform in (("", lambda task, c: c), ("/postprocessed", postprocess_for)):
        pairs = [(task, transform(task, c)) for task, samples in zip(tasks, completions) for c in samples]
        results = run_many(pairs)
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
