"""Arg-I / Arg-C micro precision, recall and F1, in head-match and exact-span modes.

Predictions are read from the completion's code with ``ast`` (nothing is executed), as Code4Struct
does: the first statement must be ``x = Cls(role=[ENT("text"), ...], ...)``; code that does not parse
predicts nothing. A predicted argument is placed in the sentence with the verifier's rules
(``_verify.locate``); text that is not in the sentence is not counted (Code4Struct's convention).

- Arg-I: a predicted argument is correct if its span (head, or exact span) is a gold argument span.
- Arg-C: it must also have the gold role.
Precision = correct / predicted, recall = correct / gold, micro-averaged over all mentions.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from . import _verify
from .readers import EventMention


def parse_arguments(code: str) -> list[tuple[str, str | None, str]] | None:
    """``(role, entity type, text)`` from ``x = Cls(role=[ENT("text")], ...)``; None if it does not parse."""
    kept = []
    for line in code.splitlines():  # up to the first line that closes the call (Code4Struct's heuristic)
        kept.append(line)
        if line.startswith(")"):
            break
    try:
        tree = ast.parse("\n".join(kept))
    except SyntaxError:
        return None
    if not tree.body or not isinstance(tree.body[0], (ast.Assign, ast.AnnAssign)) or not isinstance(tree.body[0].value, ast.Call):
        return None
    found = []
    for keyword in tree.body[0].value.keywords:
        values = keyword.value.elts if isinstance(keyword.value, (ast.List, ast.Tuple)) else [keyword.value]
        for value in values:
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                texts = [a.value for a in value.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                texts += [k.value.value for k in value.keywords
                          if k.arg == "name" and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)]
                if texts:
                    found.append((keyword.arg, value.func.id, texts[0]))
            elif isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append((keyword.arg, None, value.value))
    return found


def _key(start: int, end: int, mode: str):
    return end - 1 if mode == "head" else (start, end)


def _gold_span(tokens, start, end):
    if end - start > 1 and tokens[start].lower() in _verify.ARTICLES:
        start += 1
    return start, end


def score(predictions: Sequence[list | None], mentions: Sequence[EventMention], mode: str = "head") -> dict[str, float]:
    """Micro Arg-I/Arg-C P/R/F1 of ``predictions`` (one ``parse_arguments`` result per mention)."""
    if mode not in ("head", "exact"):
        raise ValueError(f"mode must be 'head' or 'exact', got {mode!r}")
    if len(predictions) != len(mentions):
        raise ValueError(f"{len(predictions)} predictions for {len(mentions)} mentions")
    counts = {"pred_i": 0, "gold_i": 0, "match_i": 0, "pred_c": 0, "gold_c": 0, "match_c": 0}
    for predicted, mention in zip(predictions, mentions):
        tokens = mention.tokens
        gold_c = {(_key(*_gold_span(tokens, a.start, a.end), mode), a.role.lower()) for a in mention.arguments}
        gold_i = {k for k, _ in gold_c}
        pred_c = set()
        for role, _, text in predicted or []:
            span = _verify.locate(tokens, text, mention.trigger[0])
            if span is not None:
                pred_c.add((_key(*span, mode), str(role).lower()))
        pred_i = {k for k, _ in pred_c}
        counts["pred_i"] += len(pred_i)
        counts["gold_i"] += len(gold_i)
        counts["match_i"] += len(pred_i & gold_i)
        counts["pred_c"] += len(pred_c)
        counts["gold_c"] += len(gold_c)
        counts["match_c"] += len(pred_c & gold_c)
    out = {}
    for level in ("i", "c"):
        p = counts[f"match_{level}"] / counts[f"pred_{level}"] if counts[f"pred_{level}"] else 0.0
        r = counts[f"match_{level}"] / counts[f"gold_{level}"] if counts[f"gold_{level}"] else 0.0
        out[f"arg_{level}_precision"] = p
        out[f"arg_{level}_recall"] = r
        out[f"arg_{level}_f1"] = 2 * p * r / (p + r) if p + r else 0.0
    return out
