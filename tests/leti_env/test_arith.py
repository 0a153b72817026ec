"""LETI-Arith: the synthetic family a CPU model can learn (splits, references, coincidences, feedback)."""

from __future__ import annotations

import gymnasium as gym

import leti_env
from leti_env.tasks.arith import CONSTANTS, HELD_OUT_PAIRS, OPERATORS, SYMBOL


def test_splits_are_deterministic_and_disjoint():
    train, heldout = leti_env.load_arith("train"), leti_env.load_arith("heldout")
    assert [t.prompt for t in train] == [t.prompt for t in leti_env.load_arith("train")]
    assert [t.prompt for t in leti_env.load_arith("train", seed=1)] != [t.prompt for t in train]
    assert (len(leti_env.load_arith("pretrain")), len(train), len(heldout)) == (45, 1045, 400)
    assert len(leti_env.load_arith("compositional")) == 400
    train_texts = {t.metadata["text"] for t in train}
    assert not train_texts & {t.metadata["text"] for t in heldout}  # held-out texts never trained on
    trained_pairs = {tuple(t.metadata["operations"]) for t in train if t.metadata["num_steps"] == 2}
    assert {tuple(t.metadata["operations"]) for t in heldout} <= trained_pairs
    assert not trained_pairs & set(HELD_OUT_PAIRS)
    assert {tuple(t.metadata["operations"]) for t in leti_env.load_arith("compositional")} == set(HELD_OUT_PAIRS)


def test_every_reference_passes_and_shown_assert_is_a_test():
    env = gym.make("LETI-Arith", split="train").unwrapped
    results = env.run_many([(t, t.reference_solution) for t in env.tasks])
    assert all(r.passed for r in results)
    for task in env.tasks[:20]:
        shown = task.prompt.splitlines()[2]
        call, expected = shown.removeprefix("assert ").split(" == ")
        assert f"(got := {call}) == {expected}," in task.tests.splitlines()[0]


def _function(code: str):
    namespace: dict = {}
    exec(code, namespace)
    return namespace["f"]


def test_wrong_programs_rarely_pass_by_coincidence():
    # every one-step program against two-step tasks: a wrong one (differs somewhere) must never pass
    tasks = [t for t in leti_env.load_arith("train") if t.metadata["num_steps"] == 2][:200]
    env = gym.make("LETI-Arith", split="train").unwrapped
    guesses = [f"def f(x):\n    return x {SYMBOL[op]} {c}" for op in OPERATORS for c in CONSTANTS]
    pairs = [(t, g) for t in tasks for g in guesses]
    results = env.run_many(pairs)
    wrong_passes = [(t.metadata["text"], g) for (t, g), r in zip(pairs, results) if r.passed and any(
        _function(g)(x) != _function(t.reference_solution)(x) for x in range(-100, 101))]
    assert wrong_passes == []
    equivalent = sum(r.passed for r in results) - len(wrong_passes)  # x + 2 + 3 is x + 5: right, not lucky
    assert equivalent < len(pairs) * 0.02


def test_feedback_shows_the_call_the_expected_and_the_returned_value():
    env = gym.make("LETI-Arith", split="heldout").unwrapped
    task = env.tasks[0]
    result = env.run(task, "def f(x):\n    return x + 1000")
    assert result.status == "failed"
    source, message = result.feedback.splitlines()[-2:]
    assert source.strip() == task.tests.splitlines()[0]  # the first assert fails: its call and expected value
    x = int(source.split("f(")[1].split(")")[0])
    assert message == f"AssertionError: {x + 1000}"  # and what f returned


def test_hidden_first_feedback_names_an_input_the_prompt_never_showed():
    """``test_order="hidden_first"``: the same tasks and asserts, the prompt's own one last, so a program
    that is right only on the shown input fails on a hidden one, whose input and expected value the
    feedback (and nothing else the model sees) carries."""
    shown_first = leti_env.load_arith("heldout")
    env = gym.make("LETI-Arith", split="heldout", test_order="hidden_first").unwrapped
    for a, b in zip(shown_first[:50], env.tasks[:50]):
        assert (a.prompt, a.reference_solution) == (b.prompt, b.reference_solution)
        assert b.tests.splitlines() == a.tests.splitlines()[1:] + a.tests.splitlines()[:1]
    task = env.tasks[0]
    shown = task.prompt.splitlines()[2]  # "assert f(7) == 35"
    call, expected = shown.removeprefix("assert ").split(" == ")
    x = int(call[2:-1])
    # right on the shown input only (a constant): passes the prompt's assert, fails every other
    only_the_example = f"def f(x):\n    return {expected}"
    results = env.run_many([(task, only_the_example), (task, task.reference_solution)])
    assert [r.status for r in results] == ["failed", "passed"]
    source, message = results[0].feedback.splitlines()[-2:]
    assert source.strip() == task.tests.splitlines()[0] and f"f({x})" not in source
    assert message == f"AssertionError: {expected}"
    # a program wrong everywhere fails the first assert it meets: with hidden_first, never the shown one
    wrong = env.run_many([(t, "def f(x):\n    return x + 1000") for t in env.tasks[:20]])
    for t, r in zip(env.tasks[:20], wrong):
        shown_call = t.prompt.splitlines()[2].removeprefix("assert ").split(" == ")[0]
        assert r.status == "failed" and f"(got := {shown_call})" not in r.feedback
    try:
        leti_env.load_arith("heldout", test_order="random")
    except ValueError as exc:
        assert "shown_first or hidden_first" in str(exc)
    else:
        raise AssertionError("an unknown test_order was accepted")
