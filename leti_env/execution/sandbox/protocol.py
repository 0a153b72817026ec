"""Framing between the caller, the zygote, the verifier and the solution process.

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
