"""Readers for event-annotated data: OneIE / TextEE sentence JSON lines, and DyGIE++ documents.

Everything is normalised to ``EventMention``: a sentence's tokens, one event (type, trigger span) and its
arguments (token span with exclusive end, text, role, entity type when known). One task is made per
event mention. ACE05 itself is licensed by the LDC: bring your own preprocessed copy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..tasks.base import DatasetFormatError


@dataclass(frozen=True)
class Argument:
    start: int  # token index
    end: int  # exclusive
    text: str
    role: str
    entity_type: str | None = None


@dataclass(frozen=True)
class EventMention:
    doc_id: str
    sent_id: str
    tokens: tuple[str, ...]
    event_type: str  # "Parent:Child"
    trigger: tuple[int, int, str]  # start, end (exclusive), text
    arguments: tuple[Argument, ...]
    event_index: int = 0

    @property
    def marked_sentence(self) -> str:
        """The sentence with ``**`` glued to the first and last trigger tokens (Code4Struct's marking)."""
        tokens = list(self.tokens)
        start, end, _ = self.trigger
        tokens[start] = "**" + tokens[start]
        tokens[end - 1] = tokens[end - 1] + "**"
        return " ".join(tokens)

    def to_dict(self) -> dict:
        return asdict(self)


def read_events(path: str | Path, format: str = "auto") -> list[EventMention]:
    """Read OneIE/TextEE (``oneie``) or DyGIE++ (``dygiepp``) JSON lines; ``auto`` looks at the first row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event data not found: {path}. Pass data_path= pointing at a JSON-lines file.")
    rows = _json_lines(path)
    if format == "auto":
        format = "dygiepp" if rows and "sentences" in rows[0][1] and "events" in rows[0][1] else "oneie"
    if format == "oneie":
        return [m for where, row in rows for m in _from_oneie(row, path, where)]
    if format == "dygiepp":
        return [m for where, row in rows for m in _from_dygiepp(row, path, where)]
    raise ValueError(f"unknown event data format {format!r}; choose 'oneie', 'dygiepp' or 'auto'")


def write_oneie(mentions: list[EventMention], path: str | Path) -> None:
    """Write mentions as OneIE-style JSON lines (one row per mention, arguments with spans and types)."""
    with open(path, "w", encoding="utf-8") as f:
        for m in mentions:
            entities = [{"id": f"{m.sent_id}-E{i}", "start": a.start, "end": a.end, "text": a.text,
                         "entity_type": a.entity_type} for i, a in enumerate(m.arguments)]
            event = {"id": f"{m.sent_id}-EV{m.event_index}", "event_type": m.event_type,
                     "trigger": {"start": m.trigger[0], "end": m.trigger[1], "text": m.trigger[2]},
                     "arguments": [{"entity_id": f"{m.sent_id}-E{i}", "text": a.text, "role": a.role}
                                   for i, a in enumerate(m.arguments)]}
            f.write(json.dumps({"doc_id": m.doc_id, "sent_id": m.sent_id, "tokens": list(m.tokens),
                                "sentence": " ".join(m.tokens), "entity_mentions": entities,
                                "event_mentions": [event]}) + "\n")


def _json_lines(path: Path) -> list[tuple[str, dict]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
    return rows


def _require(row: dict, keys: tuple[str, ...], path: Path, where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DatasetFormatError(f"{path}, {where}: missing {missing}; expected OneIE/TextEE fields "
                                 "(tokens, entity_mentions, event_mentions) or DyGIE++ (sentences, ner, events)")


def _span(start, end, tokens, path, where) -> tuple[int, int]:
    start, end = int(start), int(end)
    if not 0 <= start < end <= len(tokens):
        raise DatasetFormatError(f"{path}, {where}: span [{start}, {end}) is outside the sentence's {len(tokens)} tokens")
    return start, end


def _from_oneie(row: dict, path: Path, where: str) -> list[EventMention]:
    _require(row, ("tokens", "event_mentions"), path, where)
    tokens = tuple(row["tokens"])
    entities = {e["id"]: e for e in row.get("entity_mentions", []) if "id" in e}
    sent_id = str(row.get("sent_id", row.get("wnd_id", where)))
    mentions = []
    for index, event in enumerate(row["event_mentions"]):
        if "event_type" not in event or "trigger" not in event:
            raise DatasetFormatError(f"{path}, {where}: event {index} needs event_type and trigger")
        t0, t1 = _span(event["trigger"]["start"], event["trigger"]["end"], tokens, path, where)
        arguments = []
        for arg in event.get("arguments", []):
            entity = entities.get(arg.get("entity_id"), {})
            start, end = arg.get("start", entity.get("start")), arg.get("end", entity.get("end"))
            if start is None or end is None or "role" not in arg:
                raise DatasetFormatError(f"{path}, {where}: argument {arg} has no span (start/end, or an entity_id "
                                         "found in entity_mentions) or no role")
            s, e = _span(start, end, tokens, path, where)
            arguments.append(Argument(s, e, arg.get("text", " ".join(tokens[s:e])), arg["role"], entity.get("entity_type")))
        mentions.append(EventMention(str(row.get("doc_id", "")), sent_id, tokens, event["event_type"],
                                     (t0, t1, " ".join(tokens[t0:t1])), tuple(arguments), index))
    return mentions


def _from_dygiepp(row: dict, path: Path, where: str) -> list[EventMention]:
    _require(row, ("sentences", "events"), path, where)
    mentions = []
    offset = 0
    for sent_index, sentence in enumerate(row["sentences"]):
        tokens = tuple(sentence)
        ner = {(s, e): label for s, e, label in (row.get("ner") or [[]] * len(row["sentences"]))[sent_index]}
        for index, event in enumerate(row["events"][sent_index]):
            (trigger_token, event_type), *args = event
            t = trigger_token - offset
            arguments = []
            for s, e, role in args:
                start, end = _span(s - offset, e - offset + 1, tokens, path, where)  # DyGIE++ ends are inclusive
                arguments.append(Argument(start, end, " ".join(tokens[start:end]), role, ner.get((s, e))))
            _span(t, t + 1, tokens, path, where)
            mentions.append(EventMention(str(row.get("doc_key", "")), f"{row.get('doc_key', '')}-{sent_index}", tokens,
                                         event_type.replace(".", ":"), (t, t + 1, tokens[t]), tuple(arguments), index))
        offset += len(tokens)
    return mentions
