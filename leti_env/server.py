"""leti's environments over OpenEnv: the sandbox and the feedback for trainers in other processes.

    pip install "leti[serve]"
    leti serve --env LETI-MBPP --split test --port 8000          # 127.0.0.1 only, unless --host says otherwise

OpenEnv (``openenv-core``) is how TRL, SkyRL, open-instruct, prime-rl and torchforge reach environments that
live outside the trainer: an HTTP and WebSocket protocol with a Python client. ``leti serve`` serves one
registered environment with it. Each WebSocket connection is a session with its own episode; all sessions
share one sandbox pool of this process, so programs of different sessions run side by side, as many at a
time as the pool has workers.

An episode is LeTI's: ``reset`` shows a task's prompt; each ``step`` runs a program (the model's completion,
appended to the prompt) against the task's tests and answers with the reward (1.0 or 0.0), the status and
the interpreter's feedback. With ``max_turns > 1`` a failed attempt continues the episode, and the
observation's ``prompt`` is the next model input (the task, the attempt, its feedback as comments, the
task again: ``leti_env.refinement_prompt``).

    from leti_env.server import CodeAction, LetiEnvClient
    with LetiEnvClient(base_url="http://127.0.0.1:8000").sync() as env:
        first = env.reset(task_id="MBPP/11")
        result = env.step(CodeAction(code=completion))
        result.reward, result.observation.status, result.observation.feedback

The stateless HTTP endpoints work too: ``POST /reset`` returns a task, and ``POST /step`` with
``{"action": {"code": ..., "task_id": ...}}`` scores one program without a session.

Execution for a trainer elsewhere (``TaskRunner(limits, servers=[...])``, ``leti_env.execution.remote``): ``GET
/capacity`` reports the pool's workers, its free workers, and the most a request may ask (limits, programs,
bytes); ``POST /execute`` runs a batch of ``Program``s (``{"programs": [{"solution": ..., "tests": ...}, ...],
"limits": {...}}``) under the client's limits capped at this server's (its environment's, or ``--timeout``),
and streams each result as it finishes (NDJSON: a ``limits`` line, ``{"index": i, "result": {...}}`` lines,
``{}`` heartbeats, a final ``done`` line).

Trust: a server runs whatever programs its clients send (that is what an environment server is for), in its
sandbox. Let it listen on a private network only (the default is 127.0.0.1), and require a shared token
there (``--token``, or ``LETI_SERVER_TOKEN``: then every route but ``/health`` needs ``Authorization: Bearer
<token>``).

This module imports ``openenv`` at import time: ``import leti_env`` never imports it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import threading
import uuid
from typing import Any

from fastapi import Request
from openenv.core import EnvClient
from openenv.core.client_types import StepResult
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, EnvironmentMetadata, Observation, State
from pydantic import Field

from .envs import CodeEnv, load_env, refinement_prompt
from .execution.limits import ExecutionLimits
from .execution.program import Program
from .execution.result import ExecutionResult
from .execution.remote import HEARTBEAT_S, PROTOCOL, TOKEN_ENV
from .execution.runner import TaskRunner

__all__ = ["CodeAction", "CodeObservation", "CodeState", "LetiEnvClient", "LetiServerEnv", "RequestError",
           "bound_error", "make_app"]

MAX_PROGRAM_CHARS = 65536
MAX_EXECUTE_BYTES = 64 * 2**20  # one POST /execute body
MAX_EXECUTE_PROGRAMS = 4096  # programs in one POST /execute
MAX_EXECUTE_PROGRAM_CHARS = 2**20  # one program of it: solution, tests, prelude and modules together
MAX_EXECUTE_REQUESTS = 256  # POST /execute requests running at once
MAX_ECHO_CHARS = 200  # of a request's input quoted back in an error (pydantic's ``input``)
MAX_ERROR_TEXT_CHARS = 500  # of any other text in an error (a message that quotes a task id, ...)
MAX_ERROR_ITEMS = 20  # entries of a list in an error (pydantic reports one per bad field)
MAX_ERROR_BYTES = 8192  # a whole error reply, whatever its shape


class RequestError(ValueError):
    """A request the episode cannot serve (unknown task, step without an episode): the client's to fix.
    Over WebSocket OpenEnv sends its message as an error reply; over HTTP it is a 400 with the message."""


class CodeAction(Action):
    """One attempt: a program for the episode's task."""

    code: str = Field(..., max_length=MAX_PROGRAM_CHARS,
                      description="The program: the model's completion, appended to the task's prompt as in LeTI.")
    task_id: str | None = Field(
        default=None,
        description="Run on this task without a session's episode (one turn; what the stateless HTTP /step needs). "
                    "Inside an episode it may only name the episode's own task.")


class CodeObservation(Observation):
    """What the model sees, and how its last attempt did. ``reward`` and ``done`` are OpenEnv's own fields."""

    task_id: str = Field(default="", description="The episode's task.")
    prompt: str = Field(default="", description="The next model input: the task's prompt after reset; after a "
                                                "failed turn of an episode that goes on, the refinement prompt.")
    feedback: str = Field(default="", description="The interpreter's feedback on the last attempt (empty if it passed).")
    status: str = Field(default="", description="The last attempt's outcome: passed, failed, error, syntax_error, "
                                                "timeout, ... (empty after reset).")
    passed: bool = Field(default=False, description="Every test passed.")
    turn: int = Field(default=0, description="Attempts made in this episode.")
    truncated: bool = Field(default=False, description="The episode ended because its turns ran out.")


class CodeState(State):
    """The session's episode: OpenEnv's ``episode_id`` and ``step_count``, plus the task and the turn limit."""

    env_id: str = ""
    task_id: str | None = None
    max_turns: int = 1


class LetiServerEnv(Environment[CodeAction, CodeObservation, CodeState]):
    """One session's episode over a shared task list and a shared ``TaskRunner`` (hence sandbox pool).

    Build instances with ``make_app`` (it makes the factory OpenEnv calls per session and per HTTP call).
    """

    SUPPORTS_CONCURRENT_SESSIONS = True  # an episode's state is its own; the pool is thread-safe

    def __init__(self, env_id: str, base: CodeEnv, runner: TaskRunner, max_turns: int):
        super().__init__()
        self.env_id = env_id
        self._env = CodeEnv(base.tasks, limits=runner.limits, max_turns=max_turns)
        self._env.runner = runner
        self._state = CodeState(env_id=env_id, max_turns=max_turns)

    def reset(self, seed: int | None = None, episode_id: str | None = None, task_id: str | None = None,
              index: int | None = None, **_: Any) -> CodeObservation:
        """A new episode: the task named by ``task_id`` (or the ``index``-th task), else one drawn with ``seed``."""
        options: dict[str, Any] = {}
        if task_id is not None:
            options["task_id"] = self._task_id(task_id)
        elif index is not None:
            if not 0 <= int(index) < len(self._env.tasks):
                raise RequestError(f"index {index} is out of range: {self.env_id} has {len(self._env.tasks)} tasks")
            options["index"] = int(index)
        prompt, info = self._env.reset(seed=seed, options=options)
        self._state = CodeState(episode_id=episode_id or str(uuid.uuid4()), step_count=0, env_id=self.env_id,
                                task_id=info["task_id"], max_turns=self._env.max_turns)
        return CodeObservation(task_id=info["task_id"], prompt=prompt, done=False, reward=None)

    def step(self, action: CodeAction, **_: Any) -> CodeObservation:  # type: ignore[override]
        """Run ``action.code`` against the task's tests; the observation carries the verdict and the feedback."""
        if action.task_id is not None:
            task_id = self._task_id(action.task_id)
            if self._env.episode_over:  # no episode in progress: a one-turn episode on that task
                self.reset(task_id=task_id)
            elif task_id != self._state.task_id:
                raise RequestError(f"this session's episode is on {self._state.task_id}, not {task_id}: reset first, "
                                 "or leave task_id out")
        elif self._env.episode_over:
            raise RequestError("no episode in progress: call reset() first (or name the task in the action's "
                               "task_id for a one-turn run)" if self._state.task_id is None else
                               "this episode has ended (the tests passed or its turns ran out): call reset()")
        feedback, reward, terminated, truncated, info = self._env.step(action.code)
        self._state.step_count += 1
        task = self._env.task(info["task_id"])
        done = terminated or truncated
        return CodeObservation(
            task_id=info["task_id"], prompt="" if done else refinement_prompt(task.prompt, action.code, feedback),
            feedback=feedback, status=info["status"], passed=info["passed"], turn=info["turn"],
            truncated=truncated, done=done, reward=reward)

    @property
    def state(self) -> CodeState:
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(
            name=self.env_id,
            description=f"leti {self.env_id}: Python tasks judged by hidden tests in leti's sandbox, with LeTI's "
                        f"textual feedback ({len(self._env.tasks)} tasks, up to {self._env.max_turns} turns)",
            version="1.0.0")

    def close(self) -> None:
        """Nothing to free: the runner and its sandbox pool belong to the server, not to the session."""

    def _task_id(self, task_id: Any) -> str:
        try:
            return self._env.task(task_id).task_id
        except KeyError as exc:
            raise RequestError(exc.args[0]) from None


def make_app(env_id: str | None, split: str | None = None, *, max_turns: int = 1, max_concurrent: int = 32,
             workers: int | None = None, timeout: float | None = None, token: str | None = None, **env_kwargs: Any):
    """The FastAPI app that serves ``env_id`` (its ``split``), and the runner its sessions share.

    Args:
        env_id: A registered leti environment (``LETI-MBPP``, ``LETI-HumanEval``, ``LETI-EAE``, ``LETI-Arith``), or
            ``None``: execution only (``/health``, ``/capacity``, ``/execute``; no episodes, no dataset needed), for
            a machine that runs a remote trainer's programs, under ``ExecutionLimits()`` and ``timeout``.
        split: Its split (``None`` for environments without splits).
        max_turns: Attempts per episode (LeTI's refinement episodes: more than 1).
        max_concurrent: Most WebSocket sessions at once (each holds one episode).
        workers: Sandbox workers, shared by every session (default: one per core).
        timeout: Seconds per program (default: the environment's own limits, e.g. 5 for MBPP, 30 for EAE); the
            other limits are always the environment's.
        token: Require ``Authorization: Bearer <token>`` on every route but ``/health`` (HTTP and WebSocket).
        env_kwargs: Passed to the environment (``data_path``, ``sanitized``, ...).

    Returns:
        ``(app, runner)``: serve ``app`` with uvicorn; ``runner.limits`` is what every session's programs get,
        and the most ``POST /execute`` grants a client. The sandbox workers start now (a host that cannot
        confine programs fails here, not at the first step) and stop when the app shuts down.
    """
    if max_turns < 1:
        raise ValueError(f"`max_turns` must be at least 1, got {max_turns}")
    if max_concurrent < 1:
        raise ValueError(f"`max_concurrent` must be at least 1, got {max_concurrent}")
    if env_id is None:
        if split is not None or env_kwargs:
            raise ValueError("an execution-only server (no environment) takes no split or environment options")
        base = None
        runner = TaskRunner(ExecutionLimits().override(timeout=timeout), workers=workers)
    else:
        base = load_env(env_id, split, **env_kwargs)
        runner = TaskRunner(base.limits.override(timeout=timeout), workers=workers)
    pool = runner.pool()
    pool.protections()  # start the workers: a refused sandbox is an error now

    if base is None:
        from fastapi import FastAPI

        app = FastAPI(title="leti execution server", description="Runs batches of programs in leti's sandbox "
                      "for trainers on other machines (leti_env.TaskRunner(servers=...)).")
        app.get("/health", tags=["Health"])(lambda: {"status": "healthy"})
    else:
        def factory() -> LetiServerEnv:
            return LetiServerEnv(env_id, base, runner, max_turns)

        app = create_app(factory, CodeAction, CodeObservation, env_name=env_id, max_concurrent_envs=max_concurrent)
        from fastapi.responses import JSONResponse

        async def request_error(_request, exc: RequestError) -> JSONResponse:
            return JSONResponse(status_code=400, content={"detail": str(exc)})

        app.add_exception_handler(RequestError, request_error)
    _add_execution_routes(app, runner)
    app.add_middleware(_QuietDisconnect)
    if token:
        app.add_middleware(_TokenCheck, token=token)
    app.add_middleware(_BoundedErrors)
    app.router.on_shutdown.append(pool.close)
    app.state.leti_tasks = len(base.tasks) if base is not None else 0
    return app, runner


class _TooLarge(Exception):
    pass


def _add_execution_routes(app, runner: TaskRunner) -> None:
    """``GET /capacity`` and ``POST /execute`` (see the module's docstring), on ``runner``'s pool."""
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, ValidationError

    pool = runner.pool()
    maxima = runner.limits
    running = {"requests": 0}

    class ProgramIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        solution: str
        tests: str = ""
        prelude: str = ""
        entry_points: list[str] = Field(default_factory=list, max_length=64)
        modules: list[tuple[str, str]] = Field(default_factory=list, max_length=64)

    class LimitsIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
        memory_mb: int | None = None
        max_feedback_chars: int | None = None
        max_file_mb: int | None = None
        output_limit_mb: int | None = None
        max_output_bytes: int | None = None

    class ExecuteIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        programs: list[ProgramIn] = Field(..., max_length=MAX_EXECUTE_PROGRAMS)
        limits: LimitsIn = Field(default_factory=LimitsIn)

    def refuse(status: int, detail: Any) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": bound_error(detail)})

    @app.get("/capacity", tags=["Execution"], summary="Workers, free workers, and the most a request may ask")
    async def capacity() -> dict:
        return {"protocol": PROTOCOL, **pool.capacity(), "limits": dataclasses.asdict(maxima),
                "max_programs": MAX_EXECUTE_PROGRAMS, "max_request_bytes": MAX_EXECUTE_BYTES,
                "max_program_chars": MAX_EXECUTE_PROGRAM_CHARS}

    @app.post("/execute", tags=["Execution"], summary="Run a batch of programs; results streamed as NDJSON")
    async def execute(request: Request):
        try:
            body = await _read_bounded(request, MAX_EXECUTE_BYTES)
        except _TooLarge:
            return refuse(413, f"the request is over {MAX_EXECUTE_BYTES} bytes: send fewer programs per request "
                               "(GET /capacity gives max_request_bytes)")
        try:
            batch = ExecuteIn.model_validate_json(body)
        except ValidationError as exc:
            return refuse(422, exc.errors(include_url=False, include_input=False, include_context=False))
        for i, p in enumerate(batch.programs):
            size = len(p.solution) + len(p.tests) + len(p.prelude) + sum(len(a) + len(b) for a, b in p.modules)
            if size > MAX_EXECUTE_PROGRAM_CHARS:
                return refuse(413, f"program {i} has {size} characters; this server takes at most "
                                   f"{MAX_EXECUTE_PROGRAM_CHARS} per program")
        try:
            programs = [Program(p.solution, p.tests, p.prelude, tuple(p.entry_points), tuple(p.modules))
                        for p in batch.programs]
            asked = maxima.override(**batch.limits.model_dump())
            limits = asked.capped(maxima)  # never more than this server's operator allows
        except (TypeError, ValueError) as exc:
            return refuse(422, str(exc))
        if running["requests"] >= MAX_EXECUTE_REQUESTS:
            return refuse(503, f"this server runs {MAX_EXECUTE_REQUESTS} execute requests already: try again later")
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def post(item) -> None:
            try:
                loop.call_soon_threadsafe(lines.put_nowait, item)
            except RuntimeError:  # the server's loop is gone: nobody reads this any more
                stop.set()

        fields = [f.name for f in dataclasses.fields(ExecutionResult)]

        def work() -> None:
            try:
                pool.run(programs, limits, stop=stop,
                         on_result=lambda i, r: post({"index": i, "result": {k: getattr(r, k) for k in fields}}))
                post({"done": len(programs)})
            except Exception as exc:  # the sandbox itself failed (refused, could not start): the client's to know
                post({"error": f"{type(exc).__name__}: {exc}"[:1000]})
            finally:
                post(None)

        async def stream():
            running["requests"] += 1
            try:
                yield _line({"limits": dataclasses.asdict(limits), "programs": len(programs)})
                threading.Thread(target=work, daemon=True, name="leti-execute").start()
                ended = False
                while not ended:
                    try:
                        items = [await asyncio.wait_for(lines.get(), HEARTBEAT_S)]
                    except asyncio.TimeoutError:
                        yield b"{}\n"  # a heartbeat: the client tells a slow batch from a dead server
                        continue
                    while not lines.empty():  # what else has arrived goes in the same write
                        items.append(lines.get_nowait())
                    ended = items[-1] is None
                    yield b"".join(_line(item) for item in items if item is not None)
            finally:
                stop.set()  # the client left (or all is sent): start nothing more for it
                running["requests"] -= 1

        return StreamingResponse(stream(), media_type="application/x-ndjson")


def _line(message: dict) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def _read_bounded(request, limit: int) -> bytes:
    """The request's body, or ``_TooLarge`` as soon as it is over ``limit`` bytes (never all of it read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _TokenCheck:
    """ASGI middleware: every HTTP request and WebSocket but ``/health`` must carry ``Authorization: Bearer <token>``.

    The comparison takes the same time whatever the token sent (``hmac.compare_digest``). A refused WebSocket
    is closed before it is accepted (the client sees HTTP 403); a refused HTTP request gets a 401.
    """

    OPEN_PATHS = ("/health",)

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope.get("type") not in ("http", "websocket") or scope.get("path") in self.OPEN_PATHS:
            return await self.app(scope, receive, send)
        sent = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), b"")
        if hmac.compare_digest(sent, self.expected):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = json.dumps({"detail": "this leti server needs its token: send 'Authorization: Bearer <token>' "
                                     f"(clients read {TOKEN_ENV})"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... (cut: {len(text)} characters in all)"


def bound_error(payload: Any) -> Any:
    """``payload`` (an error reply, parsed from JSON) with every echo of the request cut to a few hundred characters.

    Why: pydantic's validation errors quote the offending value in full (``input``), and OpenEnv and FastAPI
    send them back as they are, so a 5 MB program that is refused came back as a 5 MB error, over HTTP and
    over WebSocket, where it exceeds a default ``websockets`` client's 1 MiB frame limit and the client is
    dropped (close code 1009) instead of reading the error. Cut text says how long it was; a short error
    is returned unchanged.
    """
    return _bound(payload, None)


def _bound(payload: Any, key: Any) -> Any:
    if key in ("input", "ctx"):  # the request's own data, of any type
        if isinstance(payload, str):
            return _cut(payload, MAX_ECHO_CHARS)
        import json

        text = json.dumps(payload, default=str)
        return payload if len(text) <= MAX_ECHO_CHARS else _cut(text, MAX_ECHO_CHARS)
    if isinstance(payload, str):
        return _cut(payload, MAX_ERROR_TEXT_CHARS)
    if isinstance(payload, list):
        kept = [_bound(item, None) for item in payload[:MAX_ERROR_ITEMS]]
        if len(payload) > MAX_ERROR_ITEMS:
            kept.append(f"... (cut: {len(payload)} entries in all)")
        return kept
    if isinstance(payload, dict):
        items = list(payload.items())
        kept = {_cut(str(name), MAX_ERROR_TEXT_CHARS): _bound(value, name) for name, value in items[:MAX_ERROR_ITEMS]}
        if len(items) > MAX_ERROR_ITEMS:
            kept["..."] = f"cut: {len(items)} entries in all"
        return kept
    return payload


def _bounded_json(body: bytes | str) -> bytes:
    """A JSON (or plain text) error body, bounded by ``bound_error`` and, whatever its shape, ``MAX_ERROR_BYTES``."""
    import json

    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        payload = json.loads(text)
    except ValueError:
        return _cut(text, MAX_ERROR_TEXT_CHARS).encode()
    out = json.dumps(bound_error(payload), ensure_ascii=False, separators=(",", ":")).encode()
    if len(out) > MAX_ERROR_BYTES:  # a shape the rules above do not shrink: keep its start, as text
        out = json.dumps({"detail": _cut(out.decode("utf-8", "replace"), MAX_ERROR_TEXT_CHARS)}).encode()
    return out


class _BoundedErrors:
    """ASGI middleware: error replies quote at most a few hundred characters of the request (``bound_error``).

    HTTP: the body of every 4xx/5xx response. WebSocket: every OpenEnv error message (``{"type": "error", ...}``);
    observations pass unchanged, however long their feedback.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "websocket":
            async def send_ws(message):
                text = message.get("text") if message.get("type") == "websocket.send" else None
                if text and text.startswith('{"type":"error"') and len(text) > MAX_ECHO_CHARS:
                    message = {**message, "text": _bounded_json(text).decode()}
                await send(message)

            return await self.app(scope, receive, send_ws)
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def send_http(message):
            nonlocal start
            if message["type"] == "http.response.start" and message.get("status", 200) >= 400:
                start = message  # held until the whole body is here: its length changes
                return
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if len(body) <= MAX_ECHO_CHARS:  # nothing to cut: the reply as it was
                await send(start)
                return await send({"type": "http.response.body", "body": body})
            body = _bounded_json(body)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_http)


class _QuietDisconnect:
    """ASGI middleware: a WebSocket whose client has left ends quietly.

    OpenEnv 0.3.0's ``/ws`` handler answers a failed send with another send, and closes the socket once more
    after the client hung up, catching only ``RuntimeError`` there. With current Starlette those raise
    ``WebSocketDisconnect`` (a session that ends) or, once the socket is closed, ``WebSocketDisconnected``
    (Starlette 1.x; a client that left while its program ran: uvicorn's ``ClientDisconnected`` on the reply,
    then the error reply fails too). Uvicorn printed either as an 80-line traceback. Nothing is lost by
    dropping them: the session is over, and OpenEnv has already closed its environment.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        from starlette import websockets

        gone = tuple(getattr(websockets, name) for name in ("WebSocketDisconnect", "WebSocketDisconnected")
                     if hasattr(websockets, name))
        try:
            await self.app(scope, receive, send)
        except gone:
            if scope.get("type") != "websocket":
                raise


class LetiEnvClient(EnvClient[CodeAction, CodeObservation, CodeState]):
    """OpenEnv's client for ``leti serve``: ``await client.reset(task_id=...)``, ``await client.step(CodeAction(code=...))``,
    or the same without ``await`` on ``client.sync()``.

    ``token``: the server's (``leti serve --token``), sent when the WebSocket opens; default: ``LETI_SERVER_TOKEN``.
    """

    def __init__(self, base_url: str, *args: Any, token: str | None = None, **kwargs: Any):
        super().__init__(base_url, *args, **kwargs)
        import os

        self._token = token if token is not None else os.environ.get(TOKEN_ENV)

    async def connect(self) -> LetiEnvClient:
        if self._ws is not None or not self._token:
            return await super().connect()
        from websockets.asyncio.client import connect as ws_connect

        try:
            self._ws = await ws_connect(self._ws_url, open_timeout=self._connect_timeout, max_size=self._max_message_size,
                                        additional_headers={"Authorization": f"Bearer {self._token}"})
        except Exception as exc:
            raise ConnectionError(f"Failed to connect to {self._ws_url}: {exc}") from exc
        return self

    async def _send_and_receive(self, message: dict[str, Any]) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        # A full server sends CAPACITY_REACHED and closes: the client sees the one or the other first.
        try:
            return await super()._send_and_receive(message)
        except ConnectionClosed as exc:
            why = str(exc)
        except RuntimeError as exc:
            if "CAPACITY_REACHED" not in str(exc):
                raise
            why = str(exc)
        raise ConnectionError(
            f"the leti server at {self._ws_url} refused or closed this session ({why}). It refuses sessions beyond "
            "its --max_concurrent (each open client holds one: TRL's environment_factory opens one per "
            "generation slot); start it with a larger --max_concurrent, or close() clients you no longer use.")

    def _step_payload(self, action: CodeAction) -> dict[str, Any]:
        return action.model_dump(exclude_none=True)

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[CodeObservation]:
        observation = CodeObservation(**payload.get("observation", {}), done=payload.get("done", False),
                                      reward=payload.get("reward"))
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> CodeState:
        return CodeState(**payload)
