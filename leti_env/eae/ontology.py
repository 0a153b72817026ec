"""An event ontology (event types, roles, allowed entity types) and its rendering as Python classes.

The rendering follows Code4Struct (Wang et al., 2023) as LeTI uses it: base ``Entity``/``Event``
classes, one class per entity type, a parent class per event family taking the union of its
children's roles, the child class with a docstring made from the event template, ``List[A | B]``
type hints with ``[]`` defaults, an instruction with the trigger marked ``**like this**`` and the
instantiation line ``transport_event = Transport(``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..tasks.base import DatasetFormatError

_DATA = Path(__file__).with_name("data")

HEADER = '''from typing import List

class Entity:
    def __init__(self, name: str):
        self.name = name

class Event:
    def __init__(self, name: str):
        self.name = name
'''


@dataclass(frozen=True)
class EventType:
    name: str  # "Parent:Child", e.g. "Movement:Transport"
    roles: tuple[str, ...]  # in template order; a role may repeat (Meet: Entity, Entity, Place)
    template: str  # "<arg1> moved <arg2> ..." with <argN> the N-th role

    @property
    def parent(self) -> str:
        return self.name.split(":")[0]

    @property
    def class_name(self) -> str:
        return class_name(self.name.split(":")[-1])

    @property
    def parent_class_name(self) -> str:
        return class_name(self.parent)

    @property
    def attributes(self) -> list[str]:
        """Constructor arguments: the roles, lower-cased, de-duplicated, sorted."""
        return sorted({r.lower() for r in self.roles})

    @property
    def variable(self) -> str:
        return f"{self.class_name.lower()}_event"


@dataclass(frozen=True)
class Ontology:
    """Event types with their roles, the entity types each role allows, and entity-type descriptions."""

    name: str
    event_types: dict[str, EventType]
    role_entity_types: dict[str, tuple[str, ...]]
    entity_types: dict[str, str] = field(default_factory=dict)

    def event(self, name: str) -> EventType:
        if name not in self.event_types:
            raise KeyError(f"event type {name!r} is not in the {self.name} ontology ({len(self.event_types)} types, "
                           f"e.g. {', '.join(sorted(self.event_types)[:3])})")
        return self.event_types[name]

    def children(self, parent: str) -> list[EventType]:
        return [e for e in self.event_types.values() if e.parent == parent]

    def allowed_types(self, role: str) -> tuple[str, ...]:
        """Entity types allowed for a role (matched case-insensitively: ``vehicle`` -> ``Vehicle``)."""
        for name, types in self.role_entity_types.items():
            if name.lower() == role.lower():
                return types
        return ()

    # -- rendering -------------------------------------------------------------------------------

    def type_hint(self, attribute: str) -> str:
        return f"List[{' | '.join(sorted(self.allowed_types(attribute)))}]"

    def render_entity(self, code: str) -> str:
        doc = self.entity_types.get(code, f"{code} entities.")
        return (f'class {code}(Entity):\n    """{doc}"""\n    def __init__(self, name: str):\n'
                f"        super().__init__(name=name)\n")

    def render_parent(self, parent: str) -> str:
        attributes = sorted({a for child in self.children(parent) for a in child.attributes})
        args = "".join(f"        {a}: {self.type_hint(a)} = [],\n" for a in attributes)
        body = "".join(f"        self.{a} = {a}\n" for a in attributes)
        return f"class {class_name(parent)}(Event):\n    def __init__(\n        self,\n{args}    ):\n{body}"

    def render_child(self, event: EventType) -> str:
        args = "".join(f"        {a}: {self.type_hint(a)} = [],\n" for a in event.attributes)
        call = "".join(f"            {a}={a},\n" for a in event.attributes)
        return (f'class {event.class_name}({event.parent_class_name}):\n    """{docstring(event)}"""\n'
                f"    def __init__(\n        self,\n{args}    ):\n        super().__init__(\n{call}        )\n")

    def render_context(self, event_name: str) -> str:
        """The code shown before the instruction: base classes, the entity classes the parent family
        uses, the parent class, then the event's own class."""
        event = self.event(event_name)
        parent_attributes = {a for child in self.children(event.parent) for a in child.attributes}
        entities = sorted({t for a in parent_attributes for t in self.allowed_types(a)})
        parts = [HEADER] + [self.render_entity(e) for e in entities] + [self.render_parent(event.parent), self.render_child(event)]
        return "\n".join(parts)


def class_name(name: str) -> str:
    """``Start-Position`` -> ``Start_Position`` (Code4Struct's normalisation)."""
    return re.sub(r"[ \-]", "_", name)


def docstring(event: EventType) -> str:
    """The template with ``<argN>`` replaced by ``self.<role>`` (``self.<role>[i]`` when a role repeats)."""
    counts: dict[str, int] = {}
    for role in event.roles:
        counts[role.lower()] = counts.get(role.lower(), 0) + 1
    seen: dict[str, int] = {}
    text = event.template
    for index, role in enumerate(event.roles, 1):
        attr = role.lower()
        ref = f"self.{attr}[{seen.get(attr, 0)}]" if counts[attr] > 1 else f"self.{attr}"
        seen[attr] = seen.get(attr, 0) + 1
        text = text.replace(f"<arg{index}>", ref)
    return text + "."


def load_ontology(path: str | Path | None = None) -> Ontology:
    """The built-in ACE05 ontology, or one in the same JSON layout from ``path``.

    Layout: ``{"name", "entity_types": {CODE: description}, "role_entity_types": {Role: [CODE, ...]},
    "event_types": {"Parent:Child": {"roles": [Role, ...], "template": "<arg1> ... <arg2> ..."}}}``.
    """
    source = Path(path) if path is not None else _DATA / "ace05_ontology.json"
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"ontology file not found: {source}") from None
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    missing = [k for k in ("event_types", "role_entity_types") if k not in data]
    if missing:
        raise DatasetFormatError(f"{source}: missing {missing}; see load_ontology's docstring for the layout")
    events = {}
    for name, spec in data["event_types"].items():
        if ":" not in name or not isinstance(spec.get("roles"), list) or not isinstance(spec.get("template"), str):
            raise DatasetFormatError(f"{source}: event type {name!r} needs a 'Parent:Child' name, a list of roles and a template")
        events[name] = EventType(name, tuple(spec["roles"]), spec["template"])
    return Ontology(data.get("name", source.stem), events,
                    {r: tuple(t) for r, t in data["role_entity_types"].items()}, dict(data.get("entity_types", {})))


def ace05() -> Ontology:
    """The ACE05 ontology shipped with leti (33 event types, 22 roles, 7 entity types)."""
    return load_ontology()
