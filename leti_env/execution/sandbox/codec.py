"""The value codec: what may cross from the solution process to the verifier.

``encode`` runs in the untrusted process, so its behaviour there does not matter for safety.
``decode`` runs in the verifier and only ever rebuilds builtin objects from JSON. It never imports:
a module or class named by the program must be one the verifier had loaded before any program ran
(``freeze_known_modules``), reached through plain ``__dict__`` lookups, and builtin functions come
from a short allowlist. Anything else is a ``ValueError``, which the verifier turns into a
``ProtocolViolation`` (the program fails).
"""

from __future__ import annotations

import builtins
import collections
import decimal
import fractions
import sys

_MAX_DEPTH = 200
# Larger ints travel as hex strings (JSON parsers elsewhere may cap them). A constant: `10**300` written
# inline is recomputed on every call (CPython folds only small powers), and encode runs on every reply.
_INT_LIMIT = 10**300
# Builtin functions a program may hand back by name (pure functions; never eval, open, __import__ ...).
SAFE_BUILTIN_FUNCTIONS = frozenset(
    "abs all any ascii bin callable chr divmod format hash hex isinstance issubclass iter len max min "
    "next oct ord pow repr round sorted sum".split()
)
# Modules a program may hand to the tests by name, and the modules whose classes it may: pure
# value types and math. Never ctypes, io, os, socket, importlib or the harness: the tests might
# call what they receive, in the trusted verifier.
SHAREABLE_MODULES = frozenset(
    "math cmath string itertools functools operator collections heapq bisect statistics decimal "
    "fractions numbers datetime enum".split()
)
# Classes: value types only (operator's and functools' callables build calls from their arguments).
_CLASS_MODULES = (SHAREABLE_MODULES - {"operator", "functools"}) | {"builtins", "collections.abc"}
_KNOWN_MODULES: dict[str, object] = {}


def freeze_known_modules() -> None:
    """Remember the modules loaded now (before any program ran): the only ones ``decode`` resolves."""
    _KNOWN_MODULES.clear()
    _KNOWN_MODULES.update({name: m for name, m in sys.modules.items() if isinstance(m, type(sys))})


def known_module(name: str):
    """The verifier's own module called ``name``, if it was loaded at start; else None."""
    return _KNOWN_MODULES.get(name) if isinstance(name, str) else None


def _shareable_module(name):
    return known_module(name) if name in SHAREABLE_MODULES else None


def _nameable(value) -> bool:
    """Does ``decode`` accept ``value`` back as a 'ty' reference (a class, or an allowlisted builtin)?"""
    if isinstance(value, type):
        module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
            return False
        if module not in _CLASS_MODULES:
            return False
        target = known_module(module)
        for part in qualname.split("."):
            target = getattr(target, part, None)
        return target is value
    return (isinstance(value, type(len)) and getattr(value, "__self__", None) is builtins
            and value.__name__ in SAFE_BUILTIN_FUNCTIONS)


def encode(value, register, depth: int = 0):
    """Encode ``value`` as JSON-able plain data; objects that are not plain data become handles.

    Subclasses of builtin types are reduced to their base type through the base type's own methods
    (so a ``Counter`` still equals a ``dict`` and an ``int`` subclass loses any ``__eq__`` it defines).
    """
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_INT_LIMIT < value < _INT_LIMIT else ["i", format(value, "x")]
    if t is float:
        return ["x", value.hex()]  # exact, and covers nan/inf without JSON extensions
    if depth > _MAX_DEPTH:
        return register(value)
    d = depth + 1
    if t is list:
        return ["l", [encode(v, register, d) for v in value]]
    if t is tuple:
        return ["t", [encode(v, register, d) for v in value]]
    if t is dict:
        return ["d", [[encode(k, register, d), encode(v, register, d)] for k, v in value.items()]]
    if t is set:
        return ["s", [encode(v, register, d) for v in value]]
    if t is frozenset:
        return ["f", [encode(v, register, d) for v in value]]
    if t is bytes:
        return ["b", value.hex()]
    if t is bytearray:
        return ["ba", bytes(value).hex()]
    if t is complex:
        return ["c", value.real.hex(), value.imag.hex()]
    if t is range:
        return ["r", value.start, value.stop, value.step]
    if t.__module__ == "collections":
        name = t.__name__
        if name == "OrderedDict":
            return ["od", [[encode(k, register, d), encode(v, register, d)] for k, v in dict.items(value)]]
        if name == "Counter":
            return ["ctr", [[encode(k, register, d), encode(v, register, d)] for k, v in dict.items(value)]]
        if name == "deque":
            return ["dq", [encode(v, register, d) for v in value], value.maxlen]
    if t.__module__ in ("decimal", "_pydecimal") and t.__name__ == "Decimal":
        return ["dec", str(value)]
    if t.__module__ == "fractions" and t.__name__ == "Fraction":
        return ["fr", encode(value.numerator, register, d), encode(value.denominator, register, d)]
    if isinstance(value, type(sys)) and _shareable_module(getattr(value, "__name__", None)) is value:
        return ["mod", value.__name__]
    if _nameable(value):
        return ["ty", value.__module__, value.__qualname__]
    # Subclasses of builtin types (namedtuple, defaultdict, user classes): the base value.
    for base in (bool, int, float, str, bytes, complex):
        if isinstance(value, base):
            return encode(base(value) if base is not int else int.__index__(value), register, d)
    if isinstance(value, tuple):
        return ["t", [encode(v, register, d) for v in tuple.__iter__(value)]]
    if isinstance(value, list):
        return ["l", [encode(v, register, d) for v in list.__iter__(value)]]
    if isinstance(value, dict):
        return ["d", [[encode(k, register, d), encode(v, register, d)] for k, v in dict.items(value)]]
    if isinstance(value, (set, frozenset)):
        return ["s", [encode(v, register, d) for v in set.__iter__(set(value))]]
    return register(value)



def decode(data, make_ref):
    """Rebuild plain builtin objects from ``encode``'s output; handles go through ``make_ref``."""
    if data is None or isinstance(data, (bool, str, int)):
        return data
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ValueError(f"malformed value from the sandbox: {str(data)[:80]}")
    tag, rest = data[0], data[1:]
    if tag == "x":
        return float.fromhex(rest[0])
    if tag == "i":
        return int(rest[0], 16)
    if tag in ("l", "t", "s", "f", "dq"):
        items = [decode(v, make_ref) for v in rest[0]]
        if tag == "l":
            return items
        if tag == "t":
            return tuple(items)
        if tag == "s":
            return set(items)
        if tag == "f":
            return frozenset(items)
        return collections.deque(items, rest[1] if type(rest[1]) is int else None)
    if tag in ("d", "od", "ctr"):
        pairs = [(decode(k, make_ref), decode(v, make_ref)) for k, v in rest[0]]
        if tag == "d":
            return dict(pairs)
        return collections.OrderedDict(pairs) if tag == "od" else collections.Counter(dict(pairs))
    if tag == "b":
        return bytes.fromhex(rest[0])
    if tag == "ba":
        return bytearray.fromhex(rest[0])
    if tag == "c":
        return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
    if tag == "r":
        return range(int(rest[0]), int(rest[1]), int(rest[2]))
    if tag == "dec":
        return decimal.Decimal(str(rest[0]))
    if tag == "fr":
        return fractions.Fraction(decode(rest[0], make_ref), decode(rest[1], make_ref))
    if tag == "mod":
        module = _shareable_module(rest[0])
        if module is None:
            raise ValueError(f"the program named a module the tests cannot use: {str(rest[0])[:80]!r}")
        return module
    if tag == "ty":
        return _named_object(rest[0], rest[1])
    if tag == "ref":
        return make_ref(int(rest[0]), str(rest[1])[:200])
    raise ValueError(f"unknown value tag {tag!r} from the sandbox")


def _named_object(module_name, qualname):
    """A class (or allowlisted builtin) by name, through ``__dict__`` lookups only: no getattr hooks."""
    obj = known_module(module_name) if module_name in _CLASS_MODULES else None
    if obj is None or not isinstance(qualname, str) or len(qualname) > 200:
        raise ValueError(f"the program named an object the tests cannot use: {str(module_name)[:80]!r}")
    for part in qualname.split("."):
        if not part.isidentifier() or (part.startswith("__") and part.endswith("__")):
            raise ValueError(f"bad name {qualname[:80]!r} from the sandbox")
        namespace = obj.__dict__ if isinstance(obj, (type, type(sys))) else {}
        if part not in namespace:
            raise ValueError(f"no {qualname[:80]!r} in {module_name!r}")
        obj = namespace[part]
    if isinstance(obj, type):
        return obj
    if obj is getattr(builtins, getattr(obj, "__name__", ""), None) and obj.__name__ in SAFE_BUILTIN_FUNCTIONS:
        return obj
    raise ValueError(f"{module_name}.{qualname[:80]} is not a class the tests may receive")
