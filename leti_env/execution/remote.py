"""Execution on a fleet of ``leti serve`` servers: ``TaskRunner(limits, servers=[...])``.

A GPU node has few cores, and sampling 128 programs per task makes them the bottleneck; large RL systems run
their sandboxes on separate CPU machines. Each such machine runs ``leti serve`` (its own sandbox pool, its own
limits), and the trainer's ``TaskRunner`` sends its batches there instead of to this process's pool.

How a batch runs (``RemoteExecutor.run``):

* Each server is asked its capacity (``GET /capacity``: workers, free workers, its maximum limits and request
  size). Servers that do not answer are left out of this batch, with a warning; if none answers, one line
  names every URL and why (``ExecutionServerError``).
* The batch is split over the servers in proportion to their free workers, and each share is sent in
  chunks (``POST /execute``), two requests in flight per server, so that a server's workers never wait for
  the next request. A server that finishes its share takes chunks another has not started yet.
* A server streams each program's result as it finishes (NDJSON, with a heartbeat every few seconds).
  What arrived is kept; if the server dies mid-chunk (connection refused, reset, or silent past the
  read timeout), only the programs it had not answered run again, on the servers left. Each program's result
  appears exactly once, in input order; if every server is gone, ``ExecutionServerError`` names them.
* Verdicts are the sandbox's own: the server runs each program exactly as a local pool would, under the
  client's limits capped at the server's (a capped limit is warned about once: verdicts may then differ).

Standard library only (``http.client``): the trainer's side needs nothing of ``leti[serve]``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .limits import ExecutionLimits
from .program import Program
from .result import ExecutionResult

if TYPE_CHECKING:
    import http.client

PROTOCOL = 1  # the /execute wire format; the server reports its own in /capacity
HEARTBEAT_S = 5.0  # a server sends a line at least this often while a request runs
TOKEN_ENV = "LETI_SERVER_TOKEN"  # the shared token, on both sides, when the servers require one
STREAMS_PER_SERVER = 2  # requests in flight per server: one runs while the next is on its way
CHUNK_PER_WORKER = 8  # programs per request, per worker of the server

Progress = Callable[[int, int], None]


class ExecutionServerError(RuntimeError):
    """No ``leti serve`` execution server could run (the rest of) a batch."""


class ExecutionServerWarning(UserWarning):
    """An execution server was left out of a batch, failed during one, or caps the requested limits."""


def read_timeout(limits: ExecutionLimits) -> float:
    """Seconds a request may go without a single line from its server before the server is taken for dead.

    A server sends a heartbeat every ``HEARTBEAT_S`` seconds, and every result within ``limits.timeout`` plus
    its pool's 10 s watchdog of the program's start; this is that bound, with room for a loaded machine."""
    return limits.timeout + 10.0 + 2 * HEARTBEAT_S


@dataclasses.dataclass(frozen=True)
class ServerAddress:
    """One ``leti serve`` URL, split for ``http.client``."""

    url: str
    https: bool
    host: str
    port: int
    path: str  # the prefix before /capacity and /execute (a server behind a reverse proxy's path)

    @classmethod
    def parse(cls, url: str) -> ServerAddress:
        if not isinstance(url, str):
            raise TypeError(f"an execution server must be a URL string such as 'http://10.0.0.5:8000', got "
                            f"{type(url).__name__}")
        parts = urlsplit(url.strip())
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.query or parts.fragment:
            raise ValueError(f"{url!r} is not an execution server URL: write http://HOST:PORT (a `leti serve` "
                             "address, e.g. http://10.0.0.5:8000)")
        https = parts.scheme == "https"
        return cls(url.strip().rstrip("/"), https, parts.hostname, port or (443 if https else 80),
                   parts.path.rstrip("/"))

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        import http.client  # here: `import leti_env` stays light

        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=timeout)


def parse_servers(servers: str | Iterable[str] | None) -> list[str] | None:
    """Execution server URLs, validated: a list, or one string (URLs separated by commas or spaces, as an
    environment variable or a YAML scalar gives them); ``None`` or an empty list: run locally."""
    if servers is None:
        return None
    if isinstance(servers, str):
        servers = servers.replace(",", " ").split()
    urls = [ServerAddress.parse(s).url for s in servers]
    if len(set(urls)) != len(urls):
        raise ValueError(f"execution servers are listed twice: {urls}")
    return urls or None


class _Failed(Exception):
    """A server failed a request: the reason, in a few words."""


def _reason(exc: BaseException) -> str:
    import http.client

    if isinstance(exc, _Failed):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, (http.client.IncompleteRead, http.client.RemoteDisconnected, BrokenPipeError)):
        return "connection closed mid-answer"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:120] + "..."


def _error_text(response: http.client.HTTPResponse) -> str:
    """``HTTP 413: <the server's short message>`` (at most a few hundred characters of it)."""
    body = response.read(4096)
    try:
        detail = json.loads(body).get("detail", "")
    except (ValueError, AttributeError):
        detail = body.decode("utf-8", "replace")
    detail = detail if isinstance(detail, str) else json.dumps(detail)
    detail = " ".join(detail.split())
    return f"HTTP {response.status}" + (f": {detail[:300]}" if detail else "")


class RemoteExecutor:
    """Runs batches of programs on ``leti serve`` servers (see the module's docstring for how).

    Holds no connection between batches (each request opens its own), so it pickles, and a server that
    comes back after a failure is used again from the next batch on.

    Args:
        servers: ``leti serve`` URLs (``http://host:port``).
        token: The servers' shared token (``leti serve --token``), sent as ``Authorization: Bearer``; default:
            the ``LETI_SERVER_TOKEN`` environment variable, if set.
        connect_timeout: Seconds to connect to a server, and for its capacity to answer.
    """

    def __init__(self, servers: Sequence[str], token: str | None = None, *, connect_timeout: float = 5.0):
        urls = parse_servers(servers)
        if not urls:
            raise ValueError("RemoteExecutor needs at least one server URL")
        self.servers = [ServerAddress.parse(u) for u in urls]
        self.token = token
        self.connect_timeout = connect_timeout
        self._warned: set = set()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_warned": set()}

    # -- HTTP ---------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        token = self.token if self.token is not None else os.environ.get(TOKEN_ENV)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def capacity(self, server: ServerAddress) -> dict:
        """``GET /capacity`` of one server: its workers, free workers, maximum limits and request size."""
        import http.client

        conn = server.connection(self.connect_timeout)
        try:
            conn.request("GET", server.path + "/capacity", headers=self._headers())
            response = conn.getresponse()
            if response.status != 200:
                raise _Failed(_error_text(response) + (" (is it a `leti serve` of this version?)"
                                                       if response.status == 404 else ""))
            info = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _Failed(_reason(exc)) from None
        finally:
            conn.close()
        if not isinstance(info, dict) or info.get("protocol") != PROTOCOL:
            raise _Failed(f"speaks execution protocol {info.get('protocol') if isinstance(info, dict) else None}, "
                          f"this client {PROTOCOL}: run the same leti version on both sides")
        return info

    def capacities(self) -> dict[str, dict | str]:
        """Every server's capacity, asked in parallel: ``{url: capacity}``, or ``{url: why it failed}``."""
        found: dict[str, dict | str] = {}

        def ask(server: ServerAddress) -> None:
            try:
                found[server.url] = self.capacity(server)
            except _Failed as exc:
                found[server.url] = str(exc)

        threads = [threading.Thread(target=ask, args=(s,), daemon=True) for s in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {s.url: found[s.url] for s in self.servers}

    def check(self) -> dict[str, dict]:
        """The servers that answer, with their capacities; ``ExecutionServerError`` if none does (a run
        checks this before its first sampling phase, not after it)."""
        answers = self.capacities()
        alive = {url: info for url, info in answers.items() if isinstance(info, dict)}
        if not alive:
            raise ExecutionServerError(self._none_answered(answers))
        return alive

    @staticmethod
    def _none_answered(reasons: dict[str, dict | str]) -> str:
        listed = ", ".join(f"{url} ({why})" for url, why in reasons.items())
        return (f"no execution server answered: {listed}. Start `leti serve` there, or fix "
                "execution_servers / --execution_servers (and LETI_SERVER_TOKEN where the servers need a token).")

    def _stream(self, server: ServerAddress, body: bytes, timeout: float, chunk: list[int],
                events: queue.Queue) -> None:
        """One ``POST /execute``: each result goes to ``events`` as it arrives, then ``("end", server, chunk,
        error or None)``. Runs in its own thread."""
        import http.client

        error = None
        answered: set[int] = set()
        conn = server.connection(self.connect_timeout)
        try:
            conn.connect()
            conn.sock.settimeout(timeout)
            conn.request("POST", server.path + "/execute", body=body,
                         headers={**self._headers(), "Content-Type": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise _Failed(_error_text(response))
            finished = False
            while not finished:
                line = response.readline(16 * 2**20)
                if not line:
                    raise _Failed("connection closed mid-answer")
                message = json.loads(line)
                if "index" in message:
                    position = message["index"]
                    if not isinstance(position, int) or not 0 <= position < len(chunk) or position in answered:
                        raise _Failed(f"answered for a program it was not sent ({position!r})")
                    answered.add(position)
                    events.put(("result", server, chunk[position], _to_result(message["result"])))
                elif "error" in message:
                    raise _Failed(f"its sandbox failed: {str(message['error'])[:200]}")
                elif "done" in message:
                    finished = True
                elif "limits" in message:
                    events.put(("limits", server, message["limits"]))
            if len(answered) != len(chunk):
                raise _Failed(f"answered {len(answered)} of {len(chunk)} programs")
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError, _Failed) as exc:
            error = _reason(exc)
        finally:
            conn.close()
            events.put(("end", server, chunk, error))

    # -- a batch ------------------------------------------------------------------------------------

    def run(self, programs: Sequence[Program], limits: ExecutionLimits,
            progress: Progress | None = None) -> list[ExecutionResult]:
        """Every program's result, in input order (``progress(done, total)`` after each)."""
        total = len(programs)
        if not total:
            return []
        alive, dead = self._alive_servers()  # dead: {url: why} of the servers this batch runs without
        payloads = [json.dumps(_program_fields(p), separators=(",", ":")).encode() for p in programs]
        most = min(int(info.get("max_program_chars", 2**62)) for info in alive.values())
        for i, program in enumerate(programs):
            size = _program_chars(program)
            if size > most:
                raise ValueError(f"program {i} has {size} characters; the execution servers take at most {most} "
                                 "per program")
        limits_json = json.dumps(dataclasses.asdict(limits), separators=(",", ":")).encode()
        max_programs = min(int(info["max_programs"]) for info in alive.values())
        max_bytes = min(int(info["max_request_bytes"]) for info in alive.values()) - len(limits_json) - 64

        # the split: a contiguous share per server, in proportion to its free workers, cut into chunks
        weights = {url: int(info.get("free", 0)) for url, info in alive.items()}
        if not any(weights.values()):  # every server busy with other clients: by size, then
            weights = {url: max(1, int(info.get("workers", 1))) for url, info in alive.items()}
        own: dict[str, deque[list[int]]] = {}
        start = 0
        for url, count in zip(weights, _shares(total, list(weights.values()))):
            workers = max(1, int(alive[url].get("workers", 1)))
            size = max(1, min(max_programs, workers * CHUNK_PER_WORKER, math.ceil(count / STREAMS_PER_SERVER)))
            own[url] = deque(_chunks(range(start, start + count), size, payloads, max_bytes))
            start += count
        by_url = {s.url: s for s in self.servers}
        orphans: deque[list[int]] = deque()  # chunks a failed server did not finish: any server takes them first
        running: dict[str, int] = {url: 0 for url in alive}
        events: queue.Queue = queue.Queue()
        results: list[ExecutionResult | None] = [None] * total
        done = 0
        timeout = read_timeout(limits)

        finished: dict[str, int] = {url: 0 for url in alive}  # requests each server has answered in full

        def take(url: str, steal: bool) -> list[int] | None:
            if orphans:
                return orphans.popleft()
            if own[url]:
                return own[url].popleft()
            # a server that has shown it keeps up takes the last chunk another has not started
            others = [u for u in own if u not in dead and own[u]] if steal and finished[url] else []
            return own[max(others, key=lambda u: len(own[u]))].pop() if others else None

        while done < total:
            for steal in (False, True):  # every server starts its own share before any takes another's
                for url in alive:
                    while url not in dead and running[url] < STREAMS_PER_SERVER:
                        chunk = take(url, steal)
                        if chunk is None:
                            break
                        body = (b'{"programs":[' + b",".join(payloads[i] for i in chunk) + b'],"limits":'
                                + limits_json + b"}")
                        running[url] += 1
                        threading.Thread(target=self._stream, args=(by_url[url], body, timeout, chunk, events),
                                         daemon=True, name="leti-remote-execution").start()
            if not any(running.values()):  # work left, and no server to run it
                raise ExecutionServerError(
                    f"every execution server failed with {total - done} of {total} programs not run: "
                    + ", ".join(f"{url} ({why})" for url, why in dead.items()))
            kind, server, *event = events.get()
            if kind == "result":
                index, result = event
                if results[index] is None:
                    results[index] = result
                    done += 1
                    if progress is not None:
                        progress(done, total)
            elif kind == "limits":
                self._check_limits(server.url, limits, event[0])
            else:  # "end" of a request: the chunk, and why it failed (None: every result arrived)
                chunk, error = event
                running[server.url] -= 1
                finished[server.url] += error is None
                if error is not None:
                    left = [i for i in chunk if results[i] is None]
                    if left:
                        orphans.append(left)
                    if server.url not in dead:
                        dead[server.url] = error
                        orphans.extend(own[server.url])
                        own[server.url].clear()
                        self._warn(f"execution server {server.url} failed ({error}); the programs it had not "
                                   "answered run on the other servers")
        return results  # type: ignore[return-value]

    def _alive_servers(self) -> tuple[dict[str, dict], dict[str, str]]:
        """The capacities of the servers that answer, and why each other one is left out of this batch."""
        answers = self.capacities()
        alive = {url: info for url, info in answers.items() if isinstance(info, dict)}
        if not alive:
            raise ExecutionServerError(self._none_answered(answers))
        left_out = {url: why for url, why in answers.items() if not isinstance(why, dict)}
        for url, why in left_out.items():
            self._warn(f"execution server {url} is left out of this batch: {why}")
        return alive, left_out

    def _check_limits(self, url: str, asked: ExecutionLimits, effective: dict) -> None:
        mine = dataclasses.asdict(asked)
        capped = {k: v for k, v in effective.items() if k in mine and v != mine[k]}
        if capped and (url, tuple(sorted(capped.items()))) not in self._warned:
            self._warned.add((url, tuple(sorted(capped.items()))))
            listed = ", ".join(f"{k}={v} (asked {mine[k]})" for k, v in sorted(capped.items()))
            self._warn(f"execution server {url} caps the limits at its own: {listed}; verdicts may differ from a "
                       "local run's. Start it with larger limits (leti serve --timeout ...) to match.")

    @staticmethod
    def _warn(message: str) -> None:
        from .pool import _caller_outside_leti

        warnings.warn(message, ExecutionServerWarning, stacklevel=_caller_outside_leti())


def _program_fields(program: Program) -> dict:
    return {"solution": program.solution, "tests": program.tests, "prelude": program.prelude,
            "entry_points": list(program.entry_points), "modules": [list(m) for m in program.modules]}


def _program_chars(program: Program) -> int:
    return (len(program.solution) + len(program.tests) + len(program.prelude)
            + sum(len(name) + len(source) for name, source in program.modules))


def _to_result(fields: dict) -> ExecutionResult:
    known = ExecutionResult.__dataclass_fields__
    return ExecutionResult(**{k: v for k, v in fields.items() if k in known})


def _shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders; the counts add up to ``total``)."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)[:total - sum(counts)]:
        counts[i] += 1
    return counts


def _chunks(indices: Iterable[int], size: int, payloads: list[bytes], max_bytes: int) -> list[list[int]]:
    """Consecutive runs of at most ``size`` programs and ``max_bytes`` of JSON each."""
    chunks: list[list[int]] = []
    current: list[int] = []
    weight = 0
    for i in indices:
        cost = len(payloads[i]) + 1
        if current and (len(current) >= size or weight + cost > max_bytes):
            chunks.append(current)
            current, weight = [], 0
        current.append(i)
        weight += cost
    if current:
        chunks.append(current)
    return chunks
