"""LeTI's training rows: reward token, feedback span, prompt and program, as the authors build them."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .rollouts import Rollout

if TYPE_CHECKING:  # annotations only: the prompt format is read without torch or TRL (`leti push`'s model card)
    from .leti_config import LetiConfig


def training_text(rollout: Rollout, config: LetiConfig, tokenizer=None) -> str | None:
    """The training string for one rollout, or ``None`` if the feedback mode drops it. ``tokenizer``: the
    model's, needed only by the ``dummy`` span matched in tokens (``dummy_feedback_length="tokens"``).

    ``text`` (paper):  ``<|good|>`` + prompt + program, or
                       ``<|bad|><|lang_feedback|>`` + feedback + ``<|/lang_feedback|>`` + prompt + program.
    ``binary``:        the reward token + prompt + program (no feedback span).
    ``none``:          prompt + program, passing programs only.
    ``dummy``:         as ``text``, with the feedback replaced by a constant span of the same length, in
                       tokens (``dummy_feedback_tokens``) or characters (``dummy_feedback``).
    ``shuffled``:      as ``text`` (``shuffle_feedback`` has given the rollouts each other's feedback).
    ``sequence_order="feedback_last"`` moves the feedback span after the program.
    ``reward_token_position="before_program"`` moves the reward token from the row's start to just before the
    program (after the prompt): ``[span +] prompt + token + program [+ span]``.
    """
    if config.feedback_mode == "none":
        return rollout.prompt + rollout.program if rollout.passed else None
    reward_token = config.good_token if rollout.passed else config.bad_token
    span = ""
    if config.feedback_mode in ("text", "shuffled", "dummy") and not rollout.passed:
        feedback = rollout.feedback
        if config.feedback_mode == "dummy":
            if config.dummy_feedback_length == "characters":
                feedback = dummy_feedback(len(feedback))
            elif tokenizer is None:
                raise ValueError("feedback_mode='dummy' matches the feedback's length in tokens: pass the tokenizer "
                                 "(training_text(rollout, config, tokenizer)), or set dummy_feedback_length='characters'")
            else:
                feedback = dummy_feedback_tokens(len(tokenizer(feedback, add_special_tokens=False)["input_ids"]), tokenizer)
        span = config.feedback_start_token + feedback + config.feedback_end_token
    lead, task = place_reward_token(reward_token, rollout.prompt, config.reward_token_position)
    if config.sequence_order == "feedback_first":
        return lead + span + task + rollout.program
    return lead + task + rollout.program + span


def place_reward_token(token: str, prompt: str, position: str) -> tuple[str, str]:
    """``(what starts the row, the task as the model reads it)`` for a reward token at ``position``: the one
    place that says where the token goes, shared by the training rows and the prompts sampled from, so that
    a prompt is always the start of a passing row."""
    return ("", prompt + token) if position == "before_program" else (token, prompt)


DUMMY_LINE = "# no information here\n"


def dummy_feedback(length: int) -> str:
    """A constant span of ``length`` characters that says nothing about the program (the ``dummy`` control)."""
    return (DUMMY_LINE * (length // len(DUMMY_LINE) + 1))[:length]


def dummy_feedback_tokens(count: int, tokenizer) -> str:
    """A constant span that ``tokenizer`` reads as ``count`` tokens and that says nothing about the program:
    the first ``count`` tokens of ``DUMMY_LINE`` repeated, as text. Between the feedback span's special
    tokens it tokenizes back to those tokens, so a dummy row is exactly as long as the real row."""
    cache = _DUMMY_TOKENS.setdefault(id(tokenizer), {})
    if count not in cache:
        lines = DUMMY_LINE * (count + 1)  # at least one token per line's worth of characters
        ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
        while len(ids) < count:
            lines += DUMMY_LINE * (count + 1)
            ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
        cache[count] = tokenizer.decode(ids[:count])
    return cache[count]


_DUMMY_TOKENS: dict[int, dict[int, str]] = {}  # per tokenizer (by id: tokenizers are not hashable), per count


def shuffle_feedback(rollouts: Sequence[Rollout], seed: int) -> list[Rollout]:
    """The failing rollouts' feedback dealt out again so that none keeps its own (the ``shuffled`` control):
    real feedback, from another failed program of the same iteration. Passing rollouts are unchanged, and
    a lone failing rollout keeps its own (there is no other)."""
    import dataclasses

    failing = [i for i, r in enumerate(rollouts) if not r.passed]
    order = list(failing)
    random.Random(seed).shuffle(order)
    donors = order[1:] + order[:1]  # a rotation of a shuffled order: nobody draws their own
    out = list(rollouts)
    for taker, donor in zip(order, donors):
        out[taker] = dataclasses.replace(rollouts[taker], feedback=rollouts[donor].feedback)
    return out


@dataclass(frozen=True)
class PromptFormat:
    """How a run's prompts are conditioned: its reward tokens, where the token goes, and whether its rows
    lead with the pad token.

    All that sampling from a trained model needs of its recipe: ``leti eval`` and the model card build
    one from a run folder's ``config.json`` (``from_run_config``) instead of a whole ``LetiConfig``, and
    a ``LetiConfig`` has the same four attributes, so ``inference_prompt`` takes either. These
    defaults are ``LetiConfig``'s too (its fields take them from here).
    """

    good_token: str = "<|good|>"
    bad_token: str = "<|bad|>"
    reward_token_target: bool = True
    reward_token_position: str = "start"

    @classmethod
    def from_run_config(cls, run: Mapping) -> PromptFormat:
        """The prompt format a run recorded in its ``config.json`` (``{}``: the defaults).

        Runs before leti 0.2 recorded ``"<GOOD_TOKEN>"`` for the tokens (transformers masks every field
        named ``*_token``), which is no token: such a value, or none, means the default.
        """
        def recorded(name: str, default):
            value = run.get(name)
            return default if value is None or value == "" or value == f"<{name.upper()}>" else value

        return cls(recorded("good_token", cls.good_token), recorded("bad_token", cls.bad_token),
                   bool(recorded("reward_token_target", cls.reward_token_target)),
                   str(recorded("reward_token_position", cls.reward_token_position)))


def inference_prompt(prompt: str, config: LetiConfig | PromptFormat, condition: str = "good", tokenizer=None) -> str:
    """The prompt the model samples from: with a reward token (``good``/``bad``) or not (``none``), where the
    run's rows had it: before the prompt (``reward_token_position="start"``, the paper) or after it
    (``"before_program"``). Under ``"before_program"`` every row with a reward token has it right after the
    prompt, so from a ``none`` prompt the model writes one itself before its program (decoding skips special
    tokens, so it does not show): there ``none`` measures the condition the model picks, not the absence of one.

    ``config``: the run's ``LetiConfig``, or its ``PromptFormat`` (what ``leti eval`` reads from a run folder).
    With ``reward_token_target`` the training rows start with the tokenizer's pad token before the reward
    token, so a conditioned prompt starts with it too (as text that the tokenizer reads back as that
    token, attended like any other): the model then sees at sampling time exactly the start it was
    trained on. Give ``tokenizer`` for that.
    """
    prefix = {"good": config.good_token, "bad": config.bad_token, "none": ""}[condition]
    if prefix and config.reward_token_target:
        if tokenizer is None:
            raise ValueError("with reward_token_target, training rows start with the tokenizer's pad token and so must "
                             "conditioned prompts: pass tokenizer= to inference_prompt.")
        lead = row_lead_token(tokenizer)
    else:
        lead = ""
    head, task = place_reward_token(prefix, prompt, config.reward_token_position)
    return lead + head + task


def row_lead_token(tokenizer) -> str:
    """The token that starts every training row under ``reward_token_target``: pad, else EOS."""
    token = tokenizer.pad_token if tokenizer.pad_token is not None else tokenizer.eos_token
    if token is None:
        raise ValueError("reward_token_target=True needs a pad or EOS token to start each row with; the tokenizer "
                         "has neither. Set tokenizer.pad_token, or reward_token_target=False.")
    return token


def strip_reward_prefix(prompt: str, config: LetiConfig | PromptFormat) -> str:
    """Remove a leading reward token (``removeprefix``, never ``lstrip``, which eats characters)."""
    for token in (config.good_token, config.bad_token):
        if prompt.startswith(token):
            return prompt.removeprefix(token)
    return prompt


def select_rollouts(rollouts: Sequence[Rollout], config: LetiConfig, seed: int = 0,
                    earlier_passing: dict[str, list[Rollout]] | None = None) -> list[Rollout]:
    """Which rollouts become training rows (the paper keeps all of them, in execution order).

    ``earlier_passing`` (with ``config.replay_passing``): the latest earlier passing rollouts of each task;
    a task with no passing rollout now gets them appended after its own.
    """
    replay = config.replay_passing and bool(earlier_passing)
    if config.keep_passing == "all" and config.max_failures_per_prompt is None and config.passing_copies == 1 and not replay:
        return list(rollouts)
    rng = random.Random(seed)
    by_task: dict[str, list[Rollout]] = {}
    for rollout in rollouts:
        by_task.setdefault(rollout.task_id, []).append(rollout)
    kept: list[Rollout] = []
    for task_id, group in by_task.items():
        if replay and not any(r.passed for r in group):
            group = group + list(earlier_passing.get(task_id, ()))
        passing = [i for i, r in enumerate(group) if r.passed]
        if config.keep_passing == "distinct":
            first: dict[str, int] = {}
            passing = [i for i in passing if first.setdefault(group[i].program, i) == i]
        failing = [i for i, r in enumerate(group) if not r.passed]
        if config.max_failures_per_prompt is not None and len(failing) > config.max_failures_per_prompt:
            failing = rng.sample(failing, config.max_failures_per_prompt)
        keep = set(passing) | set(failing)
        for i, r in enumerate(group):  # execution order within the prompt
            if i in keep:
                kept += [r] * (config.passing_copies if r.passed else 1)
    return kept


def tokenize_rows(texts: Iterable[str], tokenizer, config: LetiConfig) -> list[dict[str, list[int]]]:
    """``input_ids`` and ``labels``: LeTI's loss covers every token, the reward token and feedback too.

    With ``reward_token_target`` (the default) each row starts with one pad token whose label is -100:
    a causal LM never predicts a row's first token, and the authors' left padding put a pad before
    the reward token, so their model learned to predict it. No BOS is added and EOS only with
    ``append_eos``; rows longer than ``max_length`` are cut at the end (as the authors'
    ``truncation=True``). Padding is left to the collator, which masks it with -100.
    """
    lead = [tokenizer.convert_tokens_to_ids(row_lead_token(tokenizer))] if config.reward_token_target else []
    rows = []
    for text in texts:
        ids = lead + tokenizer(text, add_special_tokens=False)["input_ids"]
        if config.append_eos:
            ids = ids + [tokenizer.eos_token_id]
        if config.max_length is not None:
            ids = ids[: config.max_length]
        labels = list(ids)
        labels[: len(lead)] = [-100] * len(lead)
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def training_texts(rollouts: Sequence[Rollout], config: LetiConfig, seed: int, tokenizer=None,
                   earlier_passing: dict[str, list[Rollout]] | None = None) -> list[str]:
    """The training strings of an iteration's rollouts, in row order: which rollouts are kept
    (``select_rollouts``), the ``shuffled`` control's dealt-out feedback, then each one's text
    (``training_text``; a row the feedback mode drops is left out).

    ``seed`` draws the kept failures and the shuffle (``LetiTrainer``: the run's seed + the iteration).
    ``tokenizer`` is needed only by the ``dummy`` span matched in tokens.
    """
    return [text for text, _ in _texts_and_outcomes(rollouts, config, seed, tokenizer, earlier_passing)]


def _texts_and_outcomes(rollouts: Sequence[Rollout], config: LetiConfig, seed: int, tokenizer=None,
                        earlier_passing: dict[str, list[Rollout]] | None = None) -> list[tuple[str, bool]]:
    """``training_texts`` with each row's outcome (``True``: its program passed)."""
    kept = select_rollouts(rollouts, config, seed=seed, earlier_passing=earlier_passing)
    if config.feedback_mode == "shuffled":
        kept = shuffle_feedback(kept, seed=seed)
    pairs = ((training_text(r, config, tokenizer), r.passed) for r in kept)
    return [(text, passed) for text, passed in pairs if text is not None]


LOSS_WEIGHT = "loss_weight"  # the rows' column of per-row loss weights (``failure_loss_weight``)


def build_rows(rollouts: Sequence[Rollout], config: LetiConfig, tokenizer, seed: int,
               earlier_passing: dict[str, list[Rollout]] | None = None) -> list[dict[str, list[int]]]:
    """LeTI's tokenized rows (``input_ids``/``labels``) from rollouts: ``training_texts``, then
    ``tokenize_rows``. The one path from rollouts to rows, for ``LetiTrainer`` and for
    ``rollouts_to_sft_dataset``, so that both train on the same rows from the same rollouts and seed.

    With ``failure_loss_weight`` other than 1 (the paper), each row also has a ``loss_weight``: that weight
    on failing programs' rows, 1.0 on passing ones (``trainers.weighted_loss.WeightedSFTTrainer`` reads it).
    """
    pairs = _texts_and_outcomes(rollouts, config, seed, tokenizer, earlier_passing)
    rows = tokenize_rows([text for text, _ in pairs], tokenizer, config)
    weight = getattr(config, "failure_loss_weight", 1.0)
    if weight != 1.0:
        for row, (_, passed) in zip(rows, pairs):
            row[LOSS_WEIGHT] = 1.0 if passed else float(weight)
    return rows


def interleave_pretraining(fcft_rows: list[dict], pretrain_rows: list[dict], rows_per_step: int) -> list[dict]:
    """Alternate one optimizer step of LeTI rows with one step of pre-training rows (the paper's 1:1 mix).

    With a sequential sampler (the default ``train_sampling_strategy``) consecutive ``rows_per_step`` rows
    form one optimizer step, so the order here is the step order. Pre-training blocks are reused from the
    start when they run out (the authors restart the pre-training loader every epoch).
    """
    if not pretrain_rows:
        return list(fcft_rows)
    both = list(fcft_rows) + list(pretrain_rows)
    return [both[i] for i in _interleaved_order(len(fcft_rows), len(pretrain_rows), rows_per_step)]


def interleave_pretraining_dataset(fcft_rows: list[dict], blocks, rows_per_step: int):
    """``interleave_pretraining`` for blocks kept in a ``datasets.Dataset`` (on disk): the same order,
    as one ``Dataset`` that selects blocks by index instead of copying them into Python lists."""
    import datasets

    if fcft_rows and LOSS_WEIGHT in fcft_rows[0] and LOSS_WEIGHT not in blocks.column_names:
        blocks = blocks.add_column(LOSS_WEIGHT, [1.0] * len(blocks))  # pre-training blocks weigh as passing rows
    features = blocks.features
    leti = datasets.Dataset.from_dict({name: [row[name] for row in fcft_rows] for name in features}, features=features)
    order = _interleaved_order(len(fcft_rows), len(blocks), rows_per_step)
    return datasets.concatenate_datasets([leti, blocks]).select(order)


def _interleaved_order(n_fcft: int, n_blocks: int, rows_per_step: int) -> list[int]:
    """Indices into ``fcft rows + blocks``: each step of LeTI rows, then as many blocks (cycling)."""
    order: list[int] = []
    cursor = 0
    for start in range(0, n_fcft, rows_per_step):
        chunk = range(start, min(start + rows_per_step, n_fcft))
        order += chunk
        order += [n_fcft + (cursor + i) % n_blocks for i in range(len(chunk))]
        cursor += len(chunk)
    return order
