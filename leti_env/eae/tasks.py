"""Event mentions -> ``CodeTask``s: the Code4Struct prompt, the gold completion, the verifier as tests."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from ..tasks.base import CodeTask
from .ontology import Ontology, ace05
from .readers import EventMention

VERIFY_MODULE = "leti_eae_verify"
_VERIFY_SOURCE = (Path(__file__).with_name("_verify.py")).read_text(encoding="utf-8")
# Where a sampled completion is cut. The authors split at these strings *anywhere* (so an argument
# containing "class" or "#" was cut too); the fixed version cuts at '"""' or a line starting with them.
STOP_REGEX_AUTHORS = r'"""|class|print|#'
STOP_REGEX = r'"""|\n[ \t]*(?:class\b|print\b|#)'


def text_prompt(mention: EventMention, ontology: Ontology) -> str:
    cls = ontology.event(mention.event_type).class_name
    return (f'"""\nTranslate the following sentence into an instance of {cls}. The trigger word(s) of the event is '
            f'marked with **trigger word**.\n"{mention.marked_sentence}"\n"""\n')


def instantiation(mention: EventMention, ontology: Ontology) -> str:
    event = ontology.event(mention.event_type)
    return f"{event.variable} = {event.class_name}(\n"


def gold_completion(mention: EventMention, ontology: Ontology) -> str:
    """The arguments as the model should write them, roles in annotation order, each a list."""
    by_role: dict[str, list] = {}
    for arg in mention.arguments:
        by_role.setdefault(arg.role.lower(), []).append(arg)
    lines = []
    for attr, args in by_role.items():
        lines.append(f"    {attr}=[\n")
        for arg in args:
            entity = arg.entity_type or (ontology.allowed_types(attr) or ("Entity",))[0]
            lines.append(f"        {entity}({_literal(arg.text)}),\n")
        lines.append("    ],\n")
    return "".join(lines) + ")\n"


def _literal(text: str) -> str:
    return f'"{text}"' if '"' not in text and "\\" not in text else json.dumps(text)


def eae_task(mention: EventMention, ontology: Ontology | None = None, *, examples: Sequence[EventMention] = (),
             check_entity_types: bool = False, check_spans: bool = False, authors_stop_split: bool = False) -> CodeTask:
    """One task per event mention.

    The prompt is the Code4Struct/LeTI zero-shot layout (``examples`` of the same event type make it
    k-shot); the tests build a verifier with the gold arguments on one line and call it on the next,
    so a failing check's traceback never shows the gold answer. ``check_entity_types``/``check_spans``
    add checks LeTI lacks (off by default). ``authors_stop_split`` restores the authors' cut-anywhere
    stop strings.
    """
    ontology = ontology or ace05()
    event = ontology.event(mention.event_type)
    shots = "".join(text_prompt(x, ontology) + instantiation(x, ontology) + gold_completion(x, ontology) + "\n"
                    for x in examples if x.event_type == mention.event_type)
    prompt = ontology.render_context(mention.event_type) + shots + text_prompt(mention, ontology) + instantiation(mention, ontology)
    gold = [(a.start, a.end, a.text, a.role) for a in mention.arguments]
    roles = {}
    for role in event.roles:
        roles.setdefault(role.lower(), role)
    role_types = {role: list(ontology.allowed_types(role)) for role in set(roles.values())}
    tests = (f"from {VERIFY_MODULE} import EAEVerifier\n"
             f"verifier = EAEVerifier(tokens={list(mention.tokens)!r}, trigger={mention.trigger[:2]!r}, gold={gold!r}, "
             f"roles={roles!r}, role_entity_types={role_types!r}, check_entity_types={check_entity_types!r}, "
             f"check_spans={check_spans!r})\n"
             f"verifier.verify({event.variable})")
    return CodeTask(
        task_id=f"EAE/{mention.doc_id}/{mention.sent_id}/{mention.event_index}",
        prompt=prompt,
        tests=tests,
        reference_solution=gold_completion(mention, ontology),
        test_modules=((VERIFY_MODULE, _VERIFY_SOURCE),),
        metadata={"event_type": mention.event_type, "mention": mention.to_dict(), "variable": event.variable},
        stop_regex=STOP_REGEX_AUTHORS if authors_stop_split else STOP_REGEX,
    )


def eae_postprocess(completion: str, authors_stop_split: bool = False) -> str:
    """Cut a sampled completion at the EAE stop strings (see ``STOP_REGEX``)."""
    return re.split(STOP_REGEX_AUTHORS if authors_stop_split else STOP_REGEX, completion, maxsplit=1)[0]
