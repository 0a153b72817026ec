"""The verifier process (trusted): runs only the task's tests, never a line of the program.

One file (about 410 lines): the handles, the RPC client and the verdict are one trust boundary, and a
reviewer checks that none of them lets the program's objects in by reading them together.

The tests' free names (``add``, ``Node``) resolve to handles in the solution process; calling a
handle sends the arguments over a socket and gets plain data back (``codec``). A returned object
that is not plain data stays an opaque handle that equals only itself, so ``AlwaysEqual``, patched
``math.isclose``, a shadowed ``set`` or a trace hook cannot make a test pass, and the expected values
never enter the untrusted process. A reply that breaks the protocol fails the program, and the tests
cannot catch that: the verdict checks the connection after the tests, whatever they did.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import os
import select
import socket
import sys
import types

from codec import decode, encode, known_module
from feedback import FILENAME, bounded_str, clip, code_objects, format_feedback, own_frames, status_of
from protocol import MessageReader, send_msg

_MAX_DEPTH = 200
decimal_errors = ArithmeticError  # decimal.InvalidOperation and friends, from malformed numbers

class SolutionGone(BaseException):
    """The solution process died or exited; a BaseException so tests' ``except Exception`` skip it."""


class ProtocolViolation(BaseException):
    """The solution process sent something that is not a valid reply."""


class RemoteError(Exception):
    """An exception raised by the program inside the solution process."""


_REMOTE_CLASSES: dict[type, type] = {}


def _remote_exception(payload: dict) -> BaseException:
    base = getattr(builtins, payload.get("type", ""), None)
    if base in (StopIteration, StopAsyncIteration):
        base = RuntimeError  # as PEP 479 does in generators: the program cannot end the tests' loops
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
        self.violation: ProtocolViolation | None = None  # sticky: the tests cannot swallow it
        self._poll = select.poll()  # registered once: every test call waits on it
        self._poll.register(fd, select.POLLIN)
        if pidfd is not None:
            self._poll.register(pidfd, select.POLLIN)

    def _violated(self, message: str) -> ProtocolViolation:
        if self.violation is None:
            self.violation = ProtocolViolation(message)
        return self.violation

    def _wait_readable(self) -> None:
        if self.reader.has_message():
            return
        while True:
            ready = [fd for fd, _ in self._poll.poll()]
            if self.fd in ready:  # readable, or hung up (the read then says so)
                return
            if self.pidfd in ready:  # exited; but read whatever it wrote before dying
                ready, _, _ = select.select([self.fd], [], [], 0)
                if self.fd in ready:
                    return
                raise SolutionGone

    def receive(self):
        if self.violation is not None:
            raise self.violation
        self._wait_readable()
        try:
            msg = self.reader.recv()
        except (OSError, ValueError) as exc:
            raise self._violated(str(exc)) from None
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
            raise self._violated(f"bad reply {str(reply)[:80]}")
        if reply[0] == "ok" and len(reply) == 2:
            try:
                return decode(reply[1], self.make_ref)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError,
                    RecursionError, decimal_errors) as exc:
                raise self._violated(f"undecodable value: {str(exc)[:200]}") from None
        if reply[0] == "stop" and req[0] == "next":
            raise StopIteration
        if reply[0] == "err" and len(reply) == 2 and isinstance(reply[1], dict):
            try:
                payload = _checked_payload(reply[1])
            except ProtocolViolation as exc:
                raise self._violated(str(exc)) from None
            raise _remote_exception(payload)
        raise self._violated(f"bad reply {str(reply)[:80]}")


def _checked_payload(payload: dict) -> dict:
    try:
        frames = [[int(n), str(f)[:200]] for n, f in payload.get("frames", [])][:10000]
        out = {"type": str(payload["type"])[:200], "module": str(payload.get("module", "builtins"))[:200],
               "message": str(payload.get("message", "")), "frames": frames}
        if "syntax" in payload:
            lineno, text = payload["syntax"]
            out["syntax"] = [int(lineno) if lineno is not None else None, str(text)]
        out["omitted"] = min(max(0, int(payload.get("omitted", 0))), _MAX_OMITTED)
        return out
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolViolation(f"bad exception payload: {exc}") from None


_MAX_OMITTED = 2**40  # what a payload may say its clipped texts left out (the solution's word: only its own feedback)


def _failure_verdict(frames: list, payload: dict, lines: list[str], max_chars: int, remote: bool) -> dict:
    """The verdict of a run that raised: status and feedback text, and ``omitted``, the characters of the
    payload's texts left out by ``clip`` (here, or in the solution process), for the zygote's one cut of
    the whole feedback (``feedback.truncate``). A payload from the solution process is clipped again: it
    is the program's word."""
    message, omitted = clip(payload["message"], max_chars)
    payload = {**payload, "message": message}
    if "syntax" in payload:
        text, more = clip(payload["syntax"][1], max_chars)
        payload["syntax"] = [payload["syntax"][0], text]
        omitted += more
    return {"kind": "exception", "status": status_of(payload, remote=remote),
            "feedback": format_feedback(frames, payload, lines), "omitted": omitted + payload.get("omitted", 0)}


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
            raise object.__getattribute__(self, "_conn")._violated("bool() did not return a bool")
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
        if name not in self._entry_points:
            if hasattr(builtins, name):
                raise KeyError(name)  # builtins resolve to the verifier's own, pristine ones
            module = _own_module(name)
            if module is not None:  # `math.isclose` in a test is the verifier's math, never the program's
                self[name] = module
                return module
        value = self._conn.request("global", name)
        if isinstance(value, SandboxObject) or isinstance(value, type(sys)):
            self[name] = value  # handles and modules are stable; plain values are re-read each time
        return value


def _own_module(name: str):
    """The verifier's own module for a free name of the tests, if a module of that name exists.

    The name comes from the trusted tests, so importing it here runs no program-chosen code.
    """
    module = known_module(name)
    if module is not None or not name.isidentifier():
        return module
    try:
        if importlib.util.find_spec(name) is None:
            return None
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - not importable here: the name is the program's to define
        return None


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
            self._remember(self._tests, key, (code, code_objects(code), counting.total))
        return self._tests[key]

    def _compiled_prelude(self, prelude: str):
        if prelude not in self._preludes:
            code = compile(prelude, FILENAME, "exec", dont_inherit=True)
            self._remember(self._preludes, prelude, (code, code_objects(code)))
        return self._preludes[prelude]

    def _install_modules(self, modules) -> None:
        """Trusted helper modules for the tests (compiled once; frames excluded from feedback)."""
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
                if type(first) is list and len(first) == 2 and first[0] == "error" and type(first[1]) is dict:
                    payload = _checked_payload(first[1])
                    verdict = _failure_verdict(payload["frames"], payload, lines, max_chars, remote=True)
                elif first != ["loaded"]:
                    raise conn._violated("expected the load report")
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
            if conn.violation is not None:  # whatever the tests caught, a protocol violation fails
                verdict = {"kind": "exception", "status": "error",
                           "feedback": f"SandboxProtocolError: the program broke the test protocol ({conn.violation})\n"}
        except BaseException as exc:  # noqa: BLE001 - a harness bug: report it, never hang
            import traceback

            verdict = {"kind": "harness_error", "feedback": "".join(traceback.format_exception(exc))[-4000:]}
        verdict["asserts"] = counter[0]
        verdict["total_asserts"] = total
        return verdict


def _test_failure(exc: BaseException, codes: set, lines: list[str], max_chars: int) -> dict:
    frames = own_frames(exc, codes)
    remote = getattr(exc, "leti_payload", None)
    if remote is not None:
        payload = remote
        frames += remote["frames"]
    else:
        payload = {"type": type(exc).__name__, "module": type(exc).__module__, "message": bounded_str(lambda: str(exc)),
                   "frames": []}
    return _failure_verdict(frames, payload, lines, max_chars, remote=remote is not None)

