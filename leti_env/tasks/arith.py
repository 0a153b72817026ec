"""A synthetic task family small enough for a CPU model to learn: one or two arithmetic steps on ``x``.

"Write a function f(x) that returns x plus 4, then multiplied by 5." -> ``def f(x): return (x + 4) * 5``.

Splits (deterministic for a seed):
- ``pretrain``: every single-operation task (for pre-training a default model on the primitives).
- ``train``: the single-operation tasks plus two-operation tasks from 7 of the 9 ordered operator pairs.
- ``heldout`` (400 by default): two-operation tasks of those 7 pairs whose texts (constants, phrasings) and test
  inputs never appear in ``train``.
- ``compositional``: the 2 operator pairs never trained on, (add, mul) and (mul, sub). Reported, not
  promised: a tiny model may not compose.

Each task has five asserts on distinct random inputs in 0..20 (one shown in the prompt, as in MBPP), so a
wrong program rarely passes by coincidence (two different linear programs never agree on two inputs).
A failing assert shows the call and the expected value (its source line) and what f returned (its message).

``test_order`` decides what that feedback can tell a model. ``"shown_first"`` (the default) checks the
prompt's own assert first: a wrong program nearly always fails it, so its feedback repeats the prompt and
adds only the value returned. ``"hidden_first"`` checks the four hidden inputs first, as MBPP's tests run
past the one its prompt shows: a wrong program then fails on an input and an expected value the prompt
never gave, which only the feedback carries.
"""

from __future__ import annotations

import itertools
import random
from typing import Literal

from .base import CodeTask

OPERATORS = ("add", "sub", "mul")
CONSTANTS = (2, 3, 4, 5, 6)
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
PHRASES = {  # three phrasings per operation, written for leti
    "add": ("plus {c}", "increased by {c}", "with {c} added"),
    "sub": ("minus {c}", "decreased by {c}", "with {c} taken away"),
    "mul": ("times {c}", "multiplied by {c}", "scaled by a factor of {c}"),
}
MAX_INPUT = 20  # asserts call f on distinct inputs in 0..MAX_INPUT
HELD_OUT_PAIRS = (("add", "mul"), ("mul", "sub"))
ArithSplit = Literal["pretrain", "train", "heldout", "compositional"]
TestOrder = Literal["shown_first", "hidden_first"]
# Post-processing keeps the function only: a sample is cut at its first line that is not indented
# (a small model often runs on past its function; see LetiConfig.postprocess_rollouts).
STOP_REGEX = r"\n(?=\S)"


# A task is a tuple of steps (operation, constant, phrasing index). These three also write the default
# model's pre-training documents (trainers/default_model.py), so both speak exactly the same language.
Steps = tuple[tuple[str, int, int], ...]


def describe(steps: Steps) -> str:
    """The task's sentence: "Write a function f(x) that returns x plus 4, then multiplied by 5."."""
    parts = [PHRASES[op][p].format(c=c) for op, c, p in steps]
    return "Write a function f(x) that returns x " + ", then ".join(parts) + "."


def reference_program(steps: Steps) -> str:
    """``def f(x): return (x + 4) * 5``, parenthesised step by step."""
    expr = "x"
    for i, (op, c, _) in enumerate(steps):
        expr = f"{expr} {SYMBOL[op]} {c}" if i == 0 else f"({expr}) {SYMBOL[op]} {c}"
    return f"def f(x):\n    return {expr}"


def apply_steps(steps: Steps, x: int) -> int:
    """f(x) for these steps."""
    for op, c, _ in steps:
        x = x + c if op == "add" else x - c if op == "sub" else x * c
    return x


def _task(steps, split: str, index: int, rng: random.Random, num_asserts: int, max_input: int,
          test_order: TestOrder = "shown_first") -> CodeTask:
    inputs = rng.sample(range(0, max_input + 1), num_asserts)
    # the message is the value returned, so the traceback shows the call, the expected and the actual value
    asserts = [f"assert (got := f({x})) == {apply_steps(steps, x)}, got" for x in inputs]
    if test_order == "hidden_first":  # the same asserts; the prompt's own one last
        asserts = asserts[1:] + asserts[:1]
    shown = f"assert f({inputs[0]}) == {apply_steps(steps, inputs[0])}"
    text = describe(steps)
    return CodeTask(task_id=f"Arith/{split}/{index}", prompt=f'"""\n{text}\n{shown}\n"""\n', tests="\n".join(asserts),
                    reference_solution=reference_program(steps), entry_point="f",
                    metadata={"text": text, "operations": [op for op, _, _ in steps], "constants": [c for _, c, _ in steps],
                              "num_steps": len(steps)},
                    stop_regex=STOP_REGEX)


def load_arith(split: ArithSplit = "train", *, seed: int = 0, num_train_two_step: int = 1000, num_heldout: int = 400,
               num_asserts: int = 5, max_input: int = MAX_INPUT, test_order: TestOrder = "shown_first") -> list[CodeTask]:
    """Tasks of one split (see the module docstring). The same seed always gives the same tasks, whatever
    ``test_order``: it changes only which assert runs first."""
    if split not in ("pretrain", "train", "heldout", "compositional"):
        raise ValueError(f"unknown split {split!r}; choose pretrain, train, heldout or compositional")
    if test_order not in ("shown_first", "hidden_first"):
        raise ValueError(f"unknown test_order {test_order!r}; choose shown_first or hidden_first")
    if num_asserts < 2:
        raise ValueError(f"`num_asserts` must be at least 2 (one is shown in the prompt), got {num_asserts}")
    if max_input + 1 < num_asserts:
        raise ValueError(f"`max_input`={max_input} leaves fewer than {num_asserts} distinct inputs; raise it")
    rng = random.Random(seed)
    singles = [((op, c, p),) for op in OPERATORS for c in CONSTANTS for p in range(3)]
    trained_pairs = [pair for pair in itertools.product(OPERATORS, repeat=2) if pair not in HELD_OUT_PAIRS]
    two_step = [((a, c1, p1), (b, c2, p2)) for a, b in trained_pairs for c1 in CONSTANTS for c2 in CONSTANTS
                for p1 in range(3) for p2 in range(3)]
    rng.shuffle(two_step)
    if num_train_two_step + num_heldout > len(two_step):
        raise ValueError(f"only {len(two_step)} distinct two-step tasks exist for the trained pairs")
    compositional = [((a, c1, p1), (b, c2, p2)) for a, b in HELD_OUT_PAIRS for c1 in CONSTANTS for c2 in CONSTANTS
                     for p1 in range(3) for p2 in range(3)]
    rng.shuffle(compositional)
    chosen = {
        "pretrain": singles,
        "train": singles + two_step[:num_train_two_step],
        "heldout": two_step[num_train_two_step:num_train_two_step + num_heldout],
        "compositional": compositional[:num_heldout],
    }[split]
    task_rng = random.Random(f"{seed}-{split}")  # test inputs differ between splits
    return [_task(steps, split, i, task_rng, num_asserts, max_input, test_order) for i, steps in enumerate(chosen)]
