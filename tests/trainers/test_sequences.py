"""LeTI rows byte-exact against the authors' format (docs/recipe.md), row selection, labels, padding, step order."""

from __future__ import annotations

import pytest

from trainers import LetiConfig, Rollout, training_text
from trainers.sequences import (PromptFormat, build_rows, inference_prompt, interleave_pretraining, select_rollouts,
                                shuffle_feedback, strip_reward_prefix, tokenize_rows, training_texts)

PROMPT = '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""'
GOOD = Rollout("MBPP/1", PROMPT, "\ndef add(a, b):\n    return a + b", 1.0, "passed", "")
FEEDBACK = 'Traceback (most recent call last):\n  File "<string>", line 7, in <module>\n    assert add(1, 2) == 3\nAssertionError\n'
BAD = Rollout("MBPP/1", PROMPT, "\ndef add(a, b):\n    return a - b", 0.0, "failed", FEEDBACK)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return LetiConfig(output_dir=str(tmp_path_factory.mktemp("cfg")), load_in_4bit=False)


def with_(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_text_mode_rows_are_the_authors(config):
    assert training_text(GOOD, config) == "<|good|>" + PROMPT + GOOD.program
    assert training_text(BAD, config) == "<|bad|><|lang_feedback|>" + FEEDBACK + "<|/lang_feedback|>" + PROMPT + BAD.program


def test_binary_and_none_modes(config):
    binary = with_(config, feedback_mode="binary")
    assert training_text(GOOD, binary) == "<|good|>" + PROMPT + GOOD.program
    assert training_text(BAD, binary) == "<|bad|>" + PROMPT + BAD.program
    none = with_(config, feedback_mode="none")
    assert training_text(GOOD, none) == PROMPT + GOOD.program and training_text(BAD, none) is None


def test_feedback_last_order(config):
    last = with_(config, sequence_order="feedback_last")
    assert training_text(BAD, last) == "<|bad|>" + PROMPT + BAD.program + "<|lang_feedback|>" + FEEDBACK + "<|/lang_feedback|>"


def test_reward_token_before_the_program(config, tiny_model_dir):
    """``reward_token_position="before_program"``: the token between the prompt and the program, in every
    feedback mode and order; a conditioned prompt ends with it, and is the same tokens as a passing row's
    start, so sampling sees what training taught."""
    from transformers import AutoTokenizer

    after = with_(config, reward_token_position="before_program")
    span = "<|lang_feedback|>" + FEEDBACK + "<|/lang_feedback|>"
    assert training_text(GOOD, after) == PROMPT + "<|good|>" + GOOD.program
    assert training_text(BAD, after) == span + PROMPT + "<|bad|>" + BAD.program
    assert training_text(BAD, with_(after, sequence_order="feedback_last")) == PROMPT + "<|bad|>" + BAD.program + span
    assert training_text(BAD, with_(after, feedback_mode="binary")) == PROMPT + "<|bad|>" + BAD.program
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.add_tokens(config.special_tokens, special_tokens=True)
    (row,) = tokenize_rows([training_text(GOOD, after)], tokenizer, after)
    good = inference_prompt(PROMPT, after, "good", tokenizer)
    assert good == tokenizer.pad_token + PROMPT + "<|good|>"
    prompt_ids = tokenizer(good, add_special_tokens=False)["input_ids"]
    assert row["input_ids"][:len(prompt_ids)] == prompt_ids
    assert inference_prompt(PROMPT, after, "bad", tokenizer).endswith(PROMPT + "<|bad|>")
    assert inference_prompt(PROMPT, after, "none", tokenizer) == PROMPT
    recorded = PromptFormat.from_run_config({"reward_token_position": "before_program", "reward_token_target": False})
    assert inference_prompt(PROMPT, recorded, "good") == PROMPT + "<|good|>"


def test_conditioning_uses_removeprefix_not_lstrip(config):
    config = with_(config, reward_token_target=False)
    humaneval_like = "def f(x):\n    pass\n"
    conditioned = inference_prompt(humaneval_like, config, "good")
    assert conditioned == "<|good|>def f(x):\n    pass\n"
    assert strip_reward_prefix(conditioned, config) == humaneval_like  # lstrip("<|good|>") would eat the "d"
    assert inference_prompt(PROMPT, config, "none") == PROMPT and inference_prompt(PROMPT, config, "bad").startswith("<|bad|>")


def test_a_prompt_format_read_from_a_run_config_prompts_as_the_runs_config_did(config):
    """``leti eval`` samples from a run folder's model with the PromptFormat its config.json records: the
    same prompts as the run's LetiConfig gives, and the defaults where a pre-0.2 run recorded masked tokens."""
    defaults = PromptFormat(config.good_token, config.bad_token, config.reward_token_target)
    assert PromptFormat.from_run_config({}) == defaults
    masked = {"good_token": "<GOOD_TOKEN>", "bad_token": "<BAD_TOKEN>", "reward_token_target": False}
    assert PromptFormat.from_run_config(masked) == PromptFormat("<|good|>", "<|bad|>", False)
    own = with_(config, good_token="<|pass|>", bad_token="<|fail|>", reward_token_target=False)
    recorded = PromptFormat.from_run_config({"good_token": "<|pass|>", "bad_token": "<|fail|>",
                                             "reward_token_target": False, "learning_rate": 1e-5})
    for condition in ("good", "bad", "none"):
        assert inference_prompt(PROMPT, recorded, condition) == inference_prompt(PROMPT, own, condition)
    assert inference_prompt(PROMPT, recorded, "good") == "<|pass|>" + PROMPT
    assert strip_reward_prefix("<|fail|>" + PROMPT, recorded) == PROMPT
    with pytest.raises(ValueError, match="pass tokenizer= to inference_prompt"):  # the lead pad token needs it
        inference_prompt(PROMPT, PromptFormat(), "good")


def test_build_rows_selects_shuffles_writes_then_tokenizes(config, tiny_model_dir):
    """The one path from rollouts to rows (LetiTrainer's and rollouts_to_sft_dataset's): the kept rollouts in
    execution order, the shuffled control's dealt-out feedback, the mode's texts, then the tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.add_tokens(config.special_tokens, special_tokens=True)
    failing = [Rollout("MBPP/1", PROMPT, f"\nx = {i}", 0.0, "failed", f"feedback of program {i}") for i in range(4)]
    rollouts = [GOOD, *failing, GOOD]
    capped = with_(config, max_failures_per_prompt=2)
    texts = training_texts(rollouts, capped, seed=5)
    kept = select_rollouts(rollouts, capped, seed=5)
    assert len(texts) == 4 and texts == [training_text(r, capped) for r in kept]  # 2 passing + 2 of 4 failures
    assert texts[0] == texts[-1] == training_text(GOOD, capped)  # execution order within the prompt
    assert build_rows(rollouts, capped, tokenizer, seed=5) == tokenize_rows(texts, tokenizer, capped)
    assert training_texts(rollouts, with_(config, feedback_mode="none"), seed=5) == [PROMPT + GOOD.program] * 2
    shuffled = with_(config, feedback_mode="shuffled")
    dealt = training_texts(rollouts, shuffled, seed=5)
    assert dealt == [training_text(r, shuffled) for r in shuffle_feedback(rollouts, seed=5)]
    assert all(f"\nx = {i}" in text and f"feedback of program {i}" not in text for i, text in enumerate(dealt[1:5]))
    assert training_texts(rollouts, shuffled, seed=6) != dealt  # the seed deals the feedback


def test_a_conditioned_prompt_starts_as_the_training_rows_do(config, tiny_model_dir):
    """With reward_token_target the rows start with a pad token before the reward token: a conditioned
    prompt is the same tokens as the start of a passing row, so sampling sees what training taught."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.add_tokens(config.special_tokens, special_tokens=True)
    (row,) = tokenize_rows([training_text(GOOD, config)], tokenizer, config)
    prompt_ids = tokenizer(inference_prompt(PROMPT, config, "good", tokenizer), add_special_tokens=False)["input_ids"]
    assert row["input_ids"][:len(prompt_ids)] == prompt_ids and prompt_ids[0] == tokenizer.pad_token_id
    assert row["labels"][0] == -100 and row["labels"][1] == prompt_ids[1]  # the reward token is a target
    assert inference_prompt(PROMPT, config, "none", tokenizer) == PROMPT  # unconditioned: as the base model knows it
    with pytest.raises(ValueError, match="pass tokenizer= to inference_prompt"):
        inference_prompt(PROMPT, config, "good")


def test_selection_options(config):
    rollouts = [GOOD, GOOD, BAD, BAD, BAD, Rollout("MBPP/2", PROMPT, "x", 0.0, "error", "E")]
    assert select_rollouts(rollouts, config) == rollouts  # the paper keeps everything, in order
    distinct = select_rollouts(rollouts, with_(config, keep_passing="distinct", max_failures_per_prompt=1))
    assert [r.reward for r in distinct if r.task_id == "MBPP/1"].count(1.0) == 1
    assert sum(1 for r in distinct if r.task_id == "MBPP/1" and not r.passed) == 1
    assert sum(1 for r in distinct if r.task_id == "MBPP/2") == 1


def test_replay_passing_fills_prompts_without_a_pass(config):
    import dataclasses

    earlier_good = dataclasses.replace(GOOD, iteration=1)
    other = Rollout("MBPP/2", PROMPT, "\ndef add(a, b):\n    return b + a", 1.0, "passed", "", iteration=2)
    earlier = {"MBPP/1": [earlier_good, earlier_good], "MBPP/2": [dataclasses.replace(other, iteration=1, program="y")]}
    now = [BAD, BAD, other]  # MBPP/1 found no pass this time; MBPP/2 did
    replay = with_(config, keep_passing="distinct", passing_copies=2, max_failures_per_prompt=1, replay_passing=True)
    kept = select_rollouts(now, replay, earlier_passing=earlier)
    assert [(r.task_id, r.passed, r.iteration) for r in kept] == [
        ("MBPP/1", False, 0), ("MBPP/1", True, 1), ("MBPP/1", True, 1),  # one failure, the distinct replay x2
        ("MBPP/2", True, 2), ("MBPP/2", True, 2)]  # its own pass; the older program is not replayed
    off = select_rollouts(now, with_(replay, replay_passing=False), earlier_passing=earlier)
    assert not any(r.iteration == 1 for r in off)
    assert select_rollouts(now, with_(config, replay_passing=True), earlier_passing=earlier) == \
        now[:2] + [earlier_good, earlier_good] + [other]  # keep-everything selection plus the replay


def test_labels_cover_every_token_and_padding_is_masked(config, tiny_model_dir):
    from transformers import AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(config.special_tokens, special_tokens=True)
    rows = tokenize_rows([training_text(GOOD, config), training_text(BAD, config)], tokenizer, config)
    for row in rows:
        # one pad first, never a target; then the loss covers reward token, feedback, prompt and program
        assert row["input_ids"][0] == tokenizer.pad_token_id and row["labels"][0] == -100
        assert row["labels"][1:] == row["input_ids"][1:]
    assert rows[1]["input_ids"][1:3] == tokenizer.convert_tokens_to_ids(["<|bad|>", "<|lang_feedback|>"])  # no BOS
    assert tokenizer.decode(rows[1]["input_ids"][1:]) == training_text(BAD, config)
    assert tokenizer.eos_token_id not in rows[0]["input_ids"][1:]  # no EOS (the authors append none)
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(rows)
    shorter = min(range(2), key=lambda i: len(rows[i]["input_ids"]))
    padding = batch["labels"][shorter][batch["attention_mask"][shorter] == 0]
    assert len(padding) > 0 and (padding == -100).all()
    eos_rows = tokenize_rows([training_text(GOOD, config)], tokenizer, with_(config, append_eos=True))
    assert eos_rows[0]["input_ids"][-1] == tokenizer.eos_token_id


def test_the_reward_token_is_a_loss_target(config, tiny_model_dir):
    """A causal LM's loss never covers a row's first token. The authors' left padding put a pad before
    the reward token, so it was predicted; with reward_token_target=False it is only an input."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(config.special_tokens, special_tokens=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer))
    good = tokenizer.convert_tokens_to_ids(config.good_token)

    def reward_token_loss_weight(cfg) -> float:
        """How many positions of the collated row are trained to predict <|good|>."""
        rows = tokenize_rows([training_text(GOOD, cfg)], tokenizer, cfg)
        batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(rows)
        targets = batch["labels"][0, 1:]  # what each position is trained to predict (HF shifts by one)
        return float((targets == good).sum())

    assert reward_token_loss_weight(config) == 1
    assert reward_token_loss_weight(with_(config, reward_token_target=False)) == 0
    rows = tokenize_rows([training_text(GOOD, config)], tokenizer, config)
    out = model(input_ids=torch.tensor([rows[0]["input_ids"]]), labels=torch.tensor([rows[0]["labels"]]))
    assert torch.isfinite(out.loss)


def test_pretraining_alternates_one_step_each():
    fcft = [{"input_ids": [1], "labels": [1], "kind": "f"} for _ in range(5)]
    pre = [{"input_ids": [2], "labels": [2], "kind": "p"} for _ in range(3)]
    order = [r["kind"] for r in interleave_pretraining(fcft, pre, rows_per_step=2)]
    assert order == ["f", "f", "p", "p", "f", "f", "p", "p", "f", "p"]


def test_controls_keep_the_span_and_remove_its_information(config):
    from trainers.sequences import DUMMY_LINE, dummy_feedback, shuffle_feedback

    characters = with_(config, feedback_mode="dummy", dummy_feedback_length="characters")  # leti 0.1's dummy span
    dummy = training_text(BAD, characters)
    span = dummy.split("<|lang_feedback|>")[1].split("<|/lang_feedback|>")[0]
    assert len(span) == len(FEEDBACK) and span == dummy_feedback(len(FEEDBACK)) and span.startswith(DUMMY_LINE)
    assert training_text(GOOD, characters) == training_text(GOOD, config)  # passing: as text
    with pytest.raises(ValueError, match="pass the tokenizer"):  # in tokens (the default), it needs the tokenizer
        training_text(BAD, with_(config, feedback_mode="dummy"))
    failing = [Rollout(f"MBPP/{i}", PROMPT, f"\nx = {i}", 0.0, "failed", f"feedback of program {i}") for i in range(6)]
    mixed = [GOOD] + failing
    dealt = shuffle_feedback(mixed, seed=3)
    assert dealt[0] == GOOD and [r.program for r in dealt] == [r.program for r in mixed]
    assert sorted(r.feedback for r in dealt[1:]) == sorted(r.feedback for r in failing)  # the same texts, dealt out
    assert all(d.feedback != r.feedback for d, r in zip(dealt[1:], failing))  # none keeps its own
    assert shuffle_feedback(mixed, seed=3) == dealt and shuffle_feedback(mixed, seed=4) != dealt
    shuffled = training_text(dealt[1], with_(config, feedback_mode="shuffled"))
    assert dealt[1].feedback in shuffled and failing[0].feedback not in shuffled


def test_the_dummy_span_matches_the_feedback_in_tokens(config):
    """The default dummy row is exactly as long as the real row in the default model's tokens (the same
    compute per row), where the character-matched span of leti 0.1 tokenized longer; and it carries none
    of the feedback's text."""
    from transformers import AutoTokenizer

    import leti_env
    from trainers.default_model import default_model_path
    from trainers.sequences import DUMMY_LINE

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    tokenizer.add_tokens(config.special_tokens, special_tokens=True)
    env = leti_env.load_env("LETI-Arith", "train")
    wrong = ["def f(x):\n    return x + 1000", "def f(x):\n    return y", "def f(x):\n    retrun x",
             "def f(x):\n    return x / 0", "def f(x):\n    return [x] * 3"]
    pairs = [(t, w) for t in env.tasks[:40] for w in wrong]
    rollouts = [Rollout(t.task_id, t.prompt, w, 0.0, r.status, r.feedback) for (t, w), r in zip(pairs, env.run_many(pairs))]
    assert len({r.feedback for r in rollouts}) > 20 and all(r.feedback for r in rollouts)

    def length(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    tokens, characters = with_(config, feedback_mode="dummy"), with_(config, feedback_mode="dummy", dummy_feedback_length="characters")
    longer = 0
    for r in rollouts:
        real = training_text(r, config)
        dummy = training_text(r, tokens, tokenizer)
        assert length(dummy) == length(real), (r.feedback, dummy)
        span = dummy.split("<|lang_feedback|>")[1].split("<|/lang_feedback|>")[0]
        assert span and (DUMMY_LINE * len(span)).startswith(span)  # the constant text, cut
        longer += length(training_text(r, characters)) > length(real)
    assert longer > len(rollouts) / 2  # what the token match fixes

