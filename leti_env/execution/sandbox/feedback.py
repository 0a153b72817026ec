"""LeTI's feedback text: a traceback of the program's own frames, built from plain data.

The solution process describes its exception as data (``exception_payload``, under a time budget,
since ``__str__`` is untrusted); the verifier turns data into text (``format_feedback``).
"""

from __future__ import annotations

import re
import signal

FILENAME = "<string>"  # the file name LeTI's feedback shows for program frames
_HEADER = "Traceback (most recent call last):\n"
_FORMAT_BUDGET_S = 0.5  # time the child may spend turning an exception into text
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def bounded_str(fn, fallback: str = "") -> str:
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


def code_objects(code) -> set:
    """Every code object compiled from one source: tells the program's frames from the harness's."""
    found, stack = set(), [code]
    while stack:
        c = stack.pop()
        found.add(c)
        stack.extend(k for k in c.co_consts if isinstance(k, type(code)))
    return found


def own_frames(exc: BaseException, codes: set) -> list:
    """``[line, function]`` of each traceback frame whose code is one of ``codes`` (not the harness's)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            frames.append([tb.tb_lineno, tb.tb_frame.f_code.co_name])
        tb = tb.tb_next
    return frames


def exception_payload(exc: BaseException, codes: set, max_chars: int) -> dict:
    """Describe an exception as plain data: type, message, and the program's own frames.

    Its texts are ``clip``-ped to what the feedback can show of them (``omitted`` counts the rest), so an
    exception with a megabyte message crosses the run's sockets as a few kilobytes.
    """
    frames = own_frames(exc, codes)
    etype = type(exc)
    name = bounded_str(lambda: etype.__name__, "Exception")[:200]
    module = bounded_str(lambda: etype.__module__, "builtins")[:200]
    if isinstance(exc, SyntaxError):
        message, omitted = clip(bounded_str(lambda: str(exc.msg)) if exc.msg is not None else "", max_chars)
        text, omitted_text = clip(exc.text if isinstance(exc.text, str) else "", max_chars)
        return {"type": name, "module": module, "message": message, "frames": frames,
                "syntax": [exc.lineno if type(exc.lineno) is int else None, text], "omitted": omitted + omitted_text}
    message, omitted = clip(bounded_str(lambda: str(exc)), max_chars)
    return {"type": name, "module": module, "message": message, "frames": frames, "omitted": omitted}


def exception_line(payload: dict) -> str:
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
    out.append(final_line if final_line is not None else exception_line(payload))
    return _ADDRESS.sub(" at 0x...", "".join(out))


def clip(text: str, max_chars: int) -> tuple[str, int]:
    """The first and the last ``max_chars`` characters of one part of the feedback (an exception's message,
    a syntax error's line), and how many characters between them were left out.

    ``truncate`` keeps at most ``max_chars`` of the whole feedback, its head and its tail, so nothing it
    would keep is lost here, and with the count it marks the cut as if the text had been whole. No marker
    here: feedback is cut once, by ``truncate``, with one marker.
    """
    if len(text) <= 2 * max_chars:
        return text, 0
    return text[:max_chars] + text[-max_chars:], len(text) - 2 * max_chars


def truncate(text: str, max_chars: int, omitted: int = 0) -> str:
    """Keep the head and the tail (the exception line) of long feedback, with one marker between them.

    The one place feedback is cut. ``omitted``: characters ``clip`` already left out of ``text``'s parts
    (counted in the marker; their gap lies inside the part this cut removes).
    """
    if len(text) <= max_chars:
        return text
    marker = f"\n[... {len(text) + omitted - max_chars} characters truncated ...]\n"
    keep = max(max_chars - len(marker), 0)
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head):]


def status_of(payload: dict, remote: bool) -> str:
    name = payload["type"]
    if "syntax" in payload or name in ("SyntaxError", "IndentationError", "TabError"):
        return "syntax_error"
    if name == "MemoryError":
        return "memory_exceeded"
    if name == "AssertionError":
        return "failed"
    return "error"

