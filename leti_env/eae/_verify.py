"""Checks an extracted event against the gold arguments, raising LeTI's feedback messages.

Standard library only and self-contained: its source is shipped to the executor's *verifier*
process as a trusted test module, where ``event`` is a handle to the object the program built (its
attributes and ``.name`` are read over RPC; the program never sees the gold arguments). The span
rules here are also what ``leti_env.eae.metrics`` scores with.

Head matching, with no parser: gold argument spans in OneIE/TextEE/DyGIE++ ACE data are already
entity *heads* (mostly one token). A predicted string is located in the sentence as a token sequence
(case-insensitive, a leading "a"/"an"/"the" dropped, hyphenated words also tried split, the
occurrence nearest the trigger), and its head is its last token (the head of an English noun phrase
is usually its last word: "a 30-foot patrol boat" -> "boat"). A prediction matches a gold argument
when the two heads are the same token of the sentence. Text that is not in the sentence matches
nothing and, as in LeTI, is ignored unless ``check_spans`` is set.
"""

ARTICLES = ("a", "an", "the")
_MISSING = object()


def normalise(text):
    words = str(text).split()
    if len(words) > 1 and words[0].lower() in ARTICLES:
        words = words[1:]
    return words


def locate(tokens, text, trigger_start=0):
    """(start, end) of ``text`` in ``tokens`` (end exclusive), nearest the trigger; None if absent."""
    lowered = [t.lower() for t in tokens]
    words = [w.lower() for w in normalise(text)]
    candidates = [words]
    split = [p for w in words for p in w.replace("-", " - ").split()]
    if split != words:
        candidates.append(split)
    for seq in candidates:
        n = len(seq)
        if not n:
            continue
        hits = [i for i in range(len(lowered) - n + 1) if lowered[i:i + n] == seq]
        if hits:
            start = min(hits, key=lambda i: abs(i - trigger_start))
            return (start, start + n)
    return None


def gold_head(start, end, tokens):
    """The head token index of a gold span (its last token; a leading article is not a head)."""
    return end - 1


def _type_repr(value):
    name = getattr(value, "_type", None)  # the executor's handle to a program object knows its type name
    if not isinstance(name, str):
        name = type(value).__name__
    return f"<class '{name}'>"


class EAEVerifier:
    """LeTI's EAE verifier semantics (leti/verifier/eae), deterministic, with two opt-in stricter checks."""

    def __init__(self, tokens, trigger, gold, roles, role_entity_types=None, check_entity_types=False,
                 check_spans=False):
        self.tokens = list(tokens)
        self.trigger = tuple(trigger)
        self.gold = [(int(s), int(e), str(text), str(role)) for s, e, text, role in gold]
        self.roles = dict(roles)  # attribute -> role name as in the data ("vehicle" -> "Vehicle")
        self.role_entity_types = dict(role_entity_types or {})
        self.check_entity_types = check_entity_types
        self.check_spans = check_spans

    def arguments(self, event):
        """(attribute, text, entity type name) for every argument the event holds, in role order."""
        found = []
        for attr in sorted(self.roles):
            value = getattr(event, attr, _MISSING)
            if value is _MISSING:
                continue
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"Expecting a list of Entity instance for role {attr}, but got {_type_repr(value)}")
            for item in value:
                name = getattr(item, "name", _MISSING)
                if not isinstance(name, str):
                    raise ValueError(f"Expecting a list of Entity instance for role {attr} with .name attribute, "
                                     f"but got a list of {_type_repr(item)}")
                found.append((attr, name, getattr(item, "_type", type(item).__name__)))
        return found

    def verify(self, event):
        gold_by_head = {gold_head(s, e, self.tokens): (text, role) for s, e, text, role in self.gold}
        correct = set()
        for attr, text, entity_type in self.arguments(event):
            if self.check_entity_types:
                allowed = self.role_entity_types.get(self.roles[attr], ())
                if allowed and entity_type not in allowed:
                    raise ValueError(f"Entity type {entity_type} is not allowed for role {attr} "
                                     f"(allowed: {', '.join(sorted(allowed))})")
            span = locate(self.tokens, text, self.trigger[0])
            if span is None:
                if self.check_spans:
                    raise ValueError(f'Argument "{text}" is not a span of the sentence')
                continue  # as LeTI: text that is not in the sentence is ignored
            head = span[1] - 1
            if head not in gold_by_head:
                raise ValueError(f'An identified argument "{text}" does not match any ground truth argument.')
            gold_text, gold_role = gold_by_head[head]
            if gold_role.lower() != attr:
                raise ValueError(f'A successfully identified argument "{text}" is assigned to wrong role "{self.roles[attr]}"')
            correct.add((head, attr))
        if len(correct) < len(self.gold):
            names = "{" + ", ".join(repr(self.tokens[h]) for h, _ in sorted(correct)) + "}" if correct else "set()"
            raise ValueError(f"Only {len(correct)} out of {len(self.gold)} arguments are correctly identified: {names}")
        return True
