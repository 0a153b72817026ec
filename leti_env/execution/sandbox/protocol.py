"""What the caller, the zygote, the verifier and the solution process send each other: the request
schema (one program and its limits) and the framing.

A message is a 4-byte big-endian length and UTF-8 JSON. JSON, never pickle: the peer may be hostile.
Standard library only; imported by the worker (as ``protocol``) and by the caller's pool.
"""

from __future__ import annotations

import json
import os
import struct

_LEN = struct.Struct(">I")
MAX_MESSAGE_BYTES = 64 * 2**20
# One encoder and decoder for every message: ``json.dumps`` with ``separators`` builds an encoder per
# call, and ``json.loads`` sniffs the encoding and strips whitespace with regexes. Each costs a few
# microseconds, paid twice per test call crossing the sandbox (RPC latency is most of a run's time).
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder()

# The only environment the worker and every program see: nothing of the caller's (secrets).
SAFE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


# -- the request: what the pool sends a worker per program, and what each process of the run gets of it --
#
# Defined here once: the pool builds requests with ``program_request``, the launcher completes them with
# ``complete_request``, and the zygote hands the solution process and the verifier only their own keys.

PROGRAM_KEYS = ("solution", "tests", "prelude", "entry_points", "modules")  # leti_env.Program's fields
# leti_env.ExecutionLimits' fields (``program_request`` refuses a request that lacks one or adds another)
LIMIT_KEYS = ("timeout", "memory_mb", "max_feedback_chars", "max_file_mb", "output_limit_mb", "max_output_bytes")
DERIVED_KEYS = ("text", "tests_line_offset")  # added by the launcher: the whole program, as feedback numbers it
# The untrusted solution process gets its program and its own limits, never the tests.
SOLUTION_KEYS = ("solution", "timeout", "memory_mb", "max_file_mb", "max_feedback_chars")
# The verifier gets the tests, the program's text (for feedback lines) and the feedback size.
VERIFIER_KEYS = ("text", "tests", "prelude", "entry_points", "tests_line_offset", "max_feedback_chars", "modules")


def program_request(program: dict, limits: dict) -> dict:
    """The request for one program: ``program`` has exactly ``PROGRAM_KEYS``, ``limits`` exactly ``LIMIT_KEYS``
    (JSON types: lists, not tuples). The pool adds an ``id`` when it sends it."""
    for name, given, keys in (("program", program, PROGRAM_KEYS), ("limits", limits, LIMIT_KEYS)):
        if set(given) != set(keys):
            raise ValueError(f"a request's {name} must have the keys {keys}, got {sorted(given)}")
    return {**program, "timeout": float(limits["timeout"]), "memory_mb": int(limits["memory_mb"]),
            "max_feedback_chars": int(limits["max_feedback_chars"]), "max_file_mb": int(limits["max_file_mb"]),
            "output_limit_mb": int(limits["output_limit_mb"]), "max_output_bytes": int(limits["max_output_bytes"])}


def complete_request(request: dict) -> dict:
    """Add ``DERIVED_KEYS``: the whole program as one file (``Program.text``), which the feedback's line
    numbers refer to, and where the tests start in it."""
    solution, tests = request["solution"], request["tests"]
    request["text"] = solution + "\n" + tests if tests else solution
    request["tests_line_offset"] = solution.count("\n") + 1
    return request


def part(request: dict, keys: tuple[str, ...]) -> dict:
    """What one process of the run is given of ``request`` (``SOLUTION_KEYS`` or ``VERIFIER_KEYS``)."""
    return {k: request[k] for k in keys}


def send_msg(fd: int, obj) -> None:
    data = _ENCODER.encode(obj).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    view = memoryview(_LEN.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _loads(body: bytes):
    """A message body as ``send_msg`` writes it: UTF-8 JSON, nothing around it (else ValueError)."""
    text = body.decode()
    value, end = _DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError(f"{len(text) - end} characters of extra data after a message")
    return value


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class MessageReader:
    """Buffered ``recv_msg``: one ``read`` per message in the common case (RPC latency matters)."""

    def __init__(self, fd: int):
        self.fd, self.buf = fd, bytearray()

    def has_message(self) -> bool:
        return len(self.buf) >= _LEN.size and len(self.buf) >= _LEN.size + _LEN.unpack_from(self.buf)[0]

    def recv(self):
        """Return the next message, or None at end of file."""
        while len(self.buf) < _LEN.size:
            if not self.fill():
                return None
        (size,) = _LEN.unpack_from(self.buf)
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"peer sent a {size}-byte message, over the limit")
        while len(self.buf) < _LEN.size + size:
            if not self.fill():
                return None
        body = bytes(self.buf[_LEN.size:_LEN.size + size])
        del self.buf[:_LEN.size + size]
        return _loads(body)

    def fill(self) -> bool:
        chunk = os.read(self.fd, 1 << 16)
        self.buf += chunk
        return bool(chunk)


def recv_msg(fd: int):
    """Return the next message, or None at end of file (unbuffered: for one-shot reads)."""
    head = _read_exact(fd, _LEN.size)
    if head is None:
        return None
    (size,) = _LEN.unpack(head)
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"peer sent a {size}-byte message, over the limit")
    body = _read_exact(fd, size)
    if body is None:
        return None
    return _loads(body)
