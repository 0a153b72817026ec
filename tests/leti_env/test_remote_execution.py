"""Execution on a fleet of `leti serve` servers: `TaskRunner(limits, servers=[...])`.

Real servers on loopback (subprocesses, killed for real), and in-process stand-ins where a test needs a server
to misbehave on cue (answer part of a request and die, go silent, speak another protocol). Verdicts must be
those of local execution, each result must appear once and in input order whatever dies, the server must cap
what a client asks, and refuse what it should, briefly.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from leti_env import ExecutionLimits, ExecutorPool, Program, TaskRunner, load_tasks
from leti_env.execution import remote
from leti_env.execution.remote import ExecutionServerError, ExecutionServerWarning, parse_servers
from tests.leti_env.serving import Server, free_port

TOKEN = "fleet-test-token"
TIMINGS = ("duration_s", "cpu_s")  # the only fields a remote verdict may differ in


def verdict(result) -> dict:
    return {k: v for k, v in dataclasses.asdict(result).items() if k not in TIMINGS}


def needs_serve():
    pytest.importorskip("openenv", reason="leti serve needs openenv-core (pip install 'leti[serve]')")


@pytest.fixture(scope="module")
def fleet():
    """Two execution-only servers (`--env none`) of one sandbox worker each, behind a shared token. They allow
    30 s per program: a slow reference (MBPP/123 takes 2-3 s alone) must not time out on a loaded machine."""
    needs_serve()
    servers = []
    try:
        for _ in range(2):
            servers.append(Server("--workers", "1", "--timeout", "30", env=("--env", "none"),
                                  environ={"LETI_SERVER_TOKEN": TOKEN}))
        yield servers
    finally:
        for server in servers:
            server.close()


def mbpp():
    try:
        return load_tasks("LETI-MBPP", "test")
    except (FileNotFoundError, OSError) as exc:  # no MBPP here (LETI_DATA_DIR): nothing to compare on
        pytest.skip(f"MBPP is not available: {exc}")


# -- real servers ------------------------------------------------------------------------------------


def test_verdicts_are_those_of_local_execution_on_the_mbpp_references_and_failures(fleet):
    tasks = mbpp()
    programs = [t.program(t.reference_solution) for t in tasks]
    for task in list(tasks)[:12]:
        programs += [task.program(c) for c in (
            "\ndef nothing():\n    pass\n",  # NameError in the tests: error
            task.reference_solution.replace("return ", "return None and ", 1),  # a wrong answer: failed
            "\ndef (:\n",  # syntax_error
            "\nraise ValueError('boom')\n",
            "\nprint('hello ' * 50)\n" + task.reference_solution)]  # output, and a pass
    urls = [s.url for s in fleet]
    limits = tasks.limits.override(timeout=30.0)  # verdicts, not the machine's load
    local = TaskRunner(limits)
    far = TaskRunner(limits, servers=urls, token=TOKEN)
    assert far.servers == urls and far.remote is not None
    done: list[tuple[int, int]] = []
    here, there = local.run_programs(programs), far.run_programs(programs, progress=lambda d, n: done.append((d, n)))
    assert [verdict(r) for r in there] == [verdict(r) for r in here]
    assert {r.status for r in here} >= {"passed", "failed", "error", "syntax_error"}
    assert done == [(i, len(programs)) for i in range(1, len(programs) + 1)]

    # what a program may not do: the same verdicts under the same (short) limits
    short = ExecutionLimits(timeout=1.0, max_output_bytes=100)
    hostile = ["while True:\n    pass\n", "import os\nos._exit(3)\n", "x = bytearray(3 * 2**30)\n",
               "print('x' * 1_000_000)\n", "import sys\nsys.stderr.write('to stderr')\n1 / 0\n",
               "import time\ntime.sleep(5)\n"]
    here = TaskRunner(short).run_programs(hostile)
    there = TaskRunner(short, servers=urls, token=TOKEN).run_programs(hostile)
    assert [verdict(r) for r in there] == [verdict(r) for r in here]
    assert [r.status for r in there] == ["timeout", "exited_early", "memory_exceeded", "passed", "error", "timeout"]


def test_deduplication_works_the_same_on_servers(fleet):
    tasks = list(mbpp())[:3]
    pairs = [(t, c) for t in tasks for c in (t.reference_solution, "\ndef nothing():\n    pass\n")] * 3
    runs = {}
    for name, servers in (("local", None), ("remote", [s.url for s in fleet])):
        runner = TaskRunner(ExecutionLimits(), deduplicate=True, servers=servers, token=TOKEN)
        totals: list[int] = []
        first = runner.run(pairs, progress=lambda d, n: totals.append(n))
        again = runner.run(pairs, progress=lambda d, n: totals.append(-n))
        runs[name] = ([verdict(r) for r in first + again], totals[-1])
    assert runs["remote"] == runs["local"]
    assert runs["remote"][1] == 6  # six distinct programs ran once; the second call ran none


def test_a_server_killed_mid_batch_loses_nothing(fleet):
    needs_serve()
    victim = Server("--workers", "1", env=("--env", "none"), environ={"LETI_SERVER_TOKEN": TOKEN})
    try:
        programs = [Program(f"import time\ntime.sleep(0.3)\nassert {i} % 4 != 0, 'program {i}'\n") for i in range(24)]
        runner = TaskRunner(ExecutionLimits(timeout=5.0), servers=[fleet[0].url, victim.url], token=TOKEN)
        seen: list[int] = []

        def progress(done: int, total: int) -> None:
            seen.append(done)
            if done == 4:  # both servers are running their first requests
                victim.kill()

        with pytest.warns(ExecutionServerWarning, match=f"execution server {victim.url} failed"):
            results = runner.run_programs(programs, progress=progress)
        assert victim.proc.returncode == -9
        assert seen == list(range(1, 25))  # each program counted once
        for i, result in enumerate(results):  # each result is its own program's, in input order
            if i % 4:
                assert result.status == "passed", (i, result)
            else:
                assert result.status == "failed" and f"AssertionError: program {i}" in result.feedback, (i, result)
        # the next batch leaves the dead server out, with a warning, and runs on the one left
        with pytest.warns(ExecutionServerWarning, match=f"{victim.url} is left out of this batch: connection refused"):
            assert [r.status for r in runner.run_programs(["assert True"] * 3)] == ["passed"] * 3
    finally:
        victim.close()


def test_limits_are_capped_at_the_servers_own(fleet):
    # the servers allow MBPP's 1024 MiB: a client asking for 3 GiB still gets 1 GiB
    greedy = ExecutionLimits(memory_mb=3072)
    program = "x = bytearray(1536 * 2**20)\n"
    with pytest.warns(ExecutionServerWarning, match=r"caps the limits at its own: memory_mb=1024 \(asked 3072\)"):
        result = TaskRunner(greedy, servers=[fleet[0].url], token=TOKEN).run_programs([program])[0]
    assert result.status == "memory_exceeded" and "1024 MiB" in result.feedback
    # asking for less than the server allows is granted as asked, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExecutionServerWarning)
        result = TaskRunner(ExecutionLimits(timeout=0.5), servers=[fleet[0].url], token=TOKEN).run_programs(
            ["import time\ntime.sleep(1)\n"])[0]
    assert result.status == "timeout"


def test_a_client_that_leaves_stops_its_batch_on_the_server(fleet):
    body = json.dumps({"programs": [{"solution": "import time\ntime.sleep(0.4)\n"}] * 20}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", fleet[1].port, timeout=30)
    conn.request("POST", "/execute", body=body, headers={"Authorization": f"Bearer {TOKEN}"})
    reply = conn.getresponse()
    assert json.loads(reply.readline())["limits"]["timeout"] == 30.0  # no limits asked: the server's own
    assert json.loads(reply.readline())["index"] == 0
    conn.close()  # 19 programs (7.6 s) left: the server must not run them for nobody
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        capacity = remote.RemoteExecutor([fleet[1].url], TOKEN).capacity(remote.ServerAddress.parse(fleet[1].url))
        if capacity["free"] == 1:
            break
        time.sleep(0.1)
    assert capacity == {**capacity, "workers": 1, "free": 1}


def test_an_execution_only_server_serves_no_episodes_and_says_so(fleet):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path, method in (("/reset", "POST"), ("/ws", "GET"), ("/capacity", "GET")):
        conn = http.client.HTTPConnection("127.0.0.1", fleet[0].port, timeout=10)
        conn.request(method, path, headers=auth)
        assert conn.getresponse().status == (200 if path == "/capacity" else 404)
        conn.close()
    server = fleet[1]  # the fleet's last test stops one of its servers, to read what it printed
    code, out, err = server.stop()
    assert code == 0 and "Traceback" not in err
    assert out.startswith(f"serving execution only, on {server.url} (execution for remote trainers: /execute "
                          "/capacity, at most 30 s and 1024 MiB per program); 1 sandbox workers") and \
        "a token required" in out


def test_no_server_answering_is_one_line_naming_them():
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    runner = TaskRunner(ExecutionLimits(), servers=urls)
    for call in (lambda: runner.run_programs(["pass"]), runner.check_servers):
        with pytest.raises(ExecutionServerError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and message.startswith("no execution server answered: ")
        assert all(f"{url} (connection refused)" in message for url in urls)
    assert runner.run_programs([]) == []  # nothing to run: no server needed


def test_server_urls_are_checked_when_the_runner_is_built():
    assert parse_servers("http://a:1, http://b:2/") == ["http://a:1", "http://b:2"]
    assert parse_servers([]) is None and parse_servers(None) is None
    assert TaskRunner(servers=[]).remote is None
    for bad in ("a:1", "ftp://a:1", "http://:80", "http://a:port", "http://a:1?x=1"):
        with pytest.raises(ValueError, match="is not an execution server URL"):
            TaskRunner(servers=[bad])
    with pytest.raises(ValueError, match="listed twice"):
        TaskRunner(servers=["http://a:1", "http://a:1/"])
    with pytest.raises(ValueError, match="give one or the other"):
        TaskRunner(servers=["http://a:1"], workers=2)


# -- the server's side, in process (FastAPI's TestClient) -----------------------------------------------


@pytest.fixture(scope="module")
def application():
    """LETI-Arith's server (built in: no data), 1 worker, 1 s per program, a token required."""
    needs_serve()
    from leti_env.server import make_app

    return make_app("LETI-Arith", "train", workers=1, timeout=1.0, token="s3cret")[0]


@pytest.fixture(scope="module")
def app(application):
    from fastapi.testclient import TestClient

    with TestClient(application) as client:
        yield client


AUTH = {"Authorization": "Bearer s3cret"}


def execute(client, body, headers=AUTH) -> list[dict]:
    with client.stream("POST", "/execute", content=json.dumps(body), headers=headers) as reply:
        assert reply.status_code == 200, reply.read()
        return [json.loads(line) for line in reply.iter_lines() if line]


def test_capacity_reports_workers_and_the_most_a_request_may_ask(app):
    info = app.get("/capacity", headers=AUTH).json()
    assert info == {"protocol": remote.PROTOCOL, "workers": 1, "free": 1,
                    "limits": dataclasses.asdict(ExecutionLimits(timeout=1.0)), "max_programs": 4096,
                    "max_request_bytes": 64 * 2**20, "max_program_chars": 2**20}


def test_execute_streams_results_under_capped_limits(app, monkeypatch):
    import leti_env.server

    monkeypatch.setattr(leti_env.server, "HEARTBEAT_S", 0.2)
    programs = [{"solution": "def f(x):\n    return x + 1\n", "tests": "assert f(1) == 2\n", "entry_points": ["f"]},
                {"solution": "import time\ntime.sleep(0.6)\n1 / 0\n"},
                {"solution": "import time\ntime.sleep(3)\n"}]
    lines = execute(app, {"programs": programs, "limits": {"timeout": 30, "memory_mb": 4096, "max_output_bytes": 10}})
    assert lines[0] == {"limits": {**dataclasses.asdict(ExecutionLimits(timeout=1.0)), "max_output_bytes": 10},
                        "programs": 3}  # timeout and memory capped at the server's; less output is granted
    assert lines[-1] == {"done": 3} and {} in lines  # heartbeats while the slow programs ran
    results = {m["index"]: m["result"] for m in lines if "index" in m}
    assert [results[i]["status"] for i in range(3)] == ["passed", "error", "timeout"]
    assert "ZeroDivisionError" in results[1]["feedback"] and results[2]["duration_s"] < 2


def test_bad_or_huge_requests_are_refused_briefly_without_echoing_them(app, monkeypatch):
    import leti_env.server

    secret = "s" * 5000
    cases = [({"programs": [{"solution": 5}]}, 422), ({"programs": [{"code": secret}]}, 422),
             ({"programs": [{"solution": secret}], "limits": {"timeout": -1}}, 422),
             ({"programs": [{"solution": secret}], "limits": {"tiemout": 1}}, 422),
             ({"programs": [{"solution": secret, "prelude": "x"}]}, 422),
             ({"programs": [{"solution": secret}], "limits": {"memory_mb": 4}}, 422),
             ({"programs": [{"solution": "pass"}] * 4097}, 422),
             ({"programs": [{"solution": secret * 300}]}, 413)]
    for body, status in cases:
        reply = app.post("/execute", content=json.dumps(body), headers=AUTH)
        assert reply.status_code == status, (body.keys(), reply.text[:300])
        assert secret[:300] not in reply.text and len(reply.content) < 2000
    assert app.post("/execute", content="{not json", headers=AUTH).status_code == 422
    monkeypatch.setattr(leti_env.server, "MAX_EXECUTE_BYTES", 1000)
    reply = app.post("/execute", content=json.dumps({"programs": [{"solution": secret}]}), headers=AUTH)
    assert reply.status_code == 413 and "send fewer programs per request" in reply.json()["detail"]
    assert len(reply.content) < 500


def test_the_token_guards_every_route_but_health(app):
    assert app.get("/health").status_code == 200
    for method, path in (("GET", "/capacity"), ("POST", "/execute"), ("POST", "/step"), ("POST", "/reset"),
                         ("GET", "/schema")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            reply = app.request(method, path, headers=headers)
            assert reply.status_code == 401 and "needs its token" in reply.json()["detail"], (path, headers)
    assert app.post("/reset", json={}, headers=AUTH).status_code == 200
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with app.websocket_connect("/ws") as ws:
            ws.send_json({"type": "reset", "data": {}})
            ws.receive_json()
    with app.websocket_connect("/ws", headers=AUTH) as ws:
        ws.send_json({"type": "reset", "data": {}})
        assert ws.receive_json()["type"] == "observation"


def test_openenvs_client_sends_the_token(application, app, monkeypatch):
    import uvicorn

    from leti_env import load_tasks
    from leti_env.server import CodeAction, LetiEnvClient

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        task = load_tasks("LETI-Arith", "train", 1)[0]
        with LetiEnvClient(base_url=f"http://127.0.0.1:{port}", token="s3cret").sync() as env:
            env.reset(task_id=task.task_id)
            assert env.step(CodeAction(code=task.reference_solution)).reward == 1.0
        monkeypatch.setenv("LETI_SERVER_TOKEN", "s3cret")  # what every client reads by default
        with LetiEnvClient(base_url=f"http://127.0.0.1:{port}").sync() as env:
            assert env.reset(task_id=task.task_id).observation.task_id == task.task_id
        monkeypatch.delenv("LETI_SERVER_TOKEN")
        with pytest.raises(ConnectionError, match="403"):
            with LetiEnvClient(base_url=f"http://127.0.0.1:{port}").sync() as env:
                env.reset(task_id=task.task_id)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_pool_streams_results_and_stops_when_asked():
    stop = threading.Event()
    seen: list[tuple[int, str]] = []

    def on_result(index, result):
        seen.append((index, result.status))
        stop.set()  # after the first result: start nothing more

    with ExecutorPool(1) as pool:
        results = pool.run(["assert True", "1 / 0", "pass", "pass"], on_result=on_result, stop=stop)
        assert seen[0] == (0, "passed") and results[0].passed
        assert results[2:] == [None, None] and len(seen) == sum(r is not None for r in results)
        assert [r.status for r in pool.run(["pass", "1 / 0"])] == ["passed", "error"]  # the pool is in step


# -- the client's side, against stand-ins that misbehave on cue ------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a connection dropped on purpose: no traceback
        pass


class FakeServer:
    """`/capacity` and `/execute` as `leti serve` speaks them, in process; each "result" is its program's
    solution as feedback, so a test sees which program a result came from.

    ``die_after``: answer that many programs in all, then drop the connection and refuse any other (a
    machine that dies mid-batch). ``silent_after``: answer that many, then say nothing (a hung machine).
    """

    def __init__(self, workers: int = 1, free: int | None = None, die_after: int | None = None,
                 silent_after: int | None = None, protocol: int = remote.PROTOCOL):
        self.workers, self.free = workers, workers if free is None else free
        self.die_after, self.silent_after, self.protocol = die_after, silent_after, protocol
        self.received: list[str] = []  # solutions sent to it
        self.answered: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = json.dumps({"protocol": fake.protocol, "workers": fake.workers, "free": fake.free,
                                   "limits": dataclasses.asdict(ExecutionLimits()), "max_programs": 4096,
                                   "max_request_bytes": 2**26, "max_program_chars": 2**20}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                solutions = [p["solution"] for p in batch["programs"]]
                with fake.lock:
                    fake.received += solutions
                self.send_response(200)
                self.end_headers()
                self.wfile.write(json.dumps({"limits": batch["limits"], "programs": len(solutions)}).encode() + b"\n")
                for i, solution in enumerate(solutions):
                    with fake.lock:
                        if fake.die_after is not None and len(fake.answered) >= fake.die_after:
                            fake.die()
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)  # mid-answer, no "done"
                            self.close_connection = True
                            return
                        if fake.silent_after is not None and len(fake.answered) >= fake.silent_after:
                            time.sleep(3)
                            return
                        fake.answered.append(solution)
                    line = {"index": i, "result": {"status": "failed", "feedback": solution}}
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    self.wfile.flush()
                    time.sleep(0.002)
                self.wfile.write(b'{"done": %d}\n' % len(solutions))

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.dead = False

    def die(self) -> None:
        if not self.dead:
            self.dead = True
            self.httpd.socket.close()  # new connections are refused from now on
            threading.Thread(target=self.httpd.shutdown, daemon=True).start()

    def close(self) -> None:
        if not self.dead:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def fakes():
    made: list[FakeServer] = []
    yield lambda **kwargs: made.append(FakeServer(**kwargs)) or made[-1]
    for fake in made:
        fake.close()


def numbered(n: int) -> list[Program]:
    return [Program(f"program {i}") for i in range(n)]


def test_a_server_that_dies_after_answering_part_of_a_batch(fakes):
    good, dying = fakes(), fakes(die_after=3)
    programs = numbered(60)
    seen: list[int] = []
    with pytest.warns(ExecutionServerWarning, match=f"execution server {dying.url} failed"):
        results = TaskRunner(servers=[good.url, dying.url]).run_programs(programs, progress=lambda d, n: seen.append(d))
    assert [r.feedback for r in results] == [p.solution for p in programs]  # each its own, in input order
    assert seen == list(range(1, 61))
    assert len(dying.answered) == 3 and len(dying.received) > 3
    # what the dying server answered ran nowhere else; everything else ran on the good one, once
    assert not set(dying.answered) & set(good.received) and len(good.received) == len(set(good.received)) == 57


def test_a_server_that_goes_silent_is_left_after_the_read_timeout(fakes, monkeypatch):
    monkeypatch.setattr(remote, "read_timeout", lambda limits: 0.5)
    good, silent = fakes(), fakes(silent_after=2)
    programs = numbered(30)
    start = time.monotonic()
    with pytest.warns(ExecutionServerWarning, match=f"execution server {silent.url} failed \\(timed out\\)"):
        results = TaskRunner(servers=[good.url, silent.url]).run_programs(programs)
    assert time.monotonic() - start < 2.5
    assert [r.feedback for r in results] == [p.solution for p in programs]


def test_every_server_failing_mid_batch_is_one_line(fakes):
    first, second = fakes(die_after=2), fakes(die_after=2)
    never = f"http://127.0.0.1:{free_port()}"  # down from the start: named too
    with pytest.raises(ExecutionServerError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore", ExecutionServerWarning)
        TaskRunner(servers=[first.url, never, second.url]).run_programs(numbered(40))
    message = str(caught.value)
    assert "\n" not in message and "every execution server failed with 36 of 40 programs not run" in message
    assert f"{first.url} (connection closed mid-answer)" in message and second.url in message
    assert f"{never} (connection refused)" in message


def test_a_batch_is_shared_in_proportion_to_free_workers(fakes):
    assert remote._shares(100, [3, 1]) == [75, 25] and remote._shares(5, [1, 1, 1]) == [2, 2, 1]
    assert remote._shares(3, [0, 4]) == [0, 3]
    busy, idle = fakes(workers=4, free=0), fakes(workers=4, free=4)
    runner = TaskRunner(servers=[busy.url, idle.url])
    first_requests = []
    original = remote.RemoteExecutor._stream

    def spy(self, server, body, timeout, chunk, events):
        first_requests.append((server.url, len(chunk)))
        return original(self, server, body, timeout, chunk, events)

    remote.RemoteExecutor._stream = spy
    try:
        results = runner.run_programs(numbered(64))
    finally:
        remote.RemoteExecutor._stream = original
    assert [r.feedback for r in results] == [f"program {i}" for i in range(64)]
    # the busy server's share was nothing, and it never answered a request to show it keeps up: no work for it
    assert first_requests[:2] == [(idle.url, 32)] * 2 and len(idle.received) == 64 and busy.received == []


def test_a_server_of_another_protocol_is_left_out_with_the_reason(fakes):
    other = fakes(protocol=remote.PROTOCOL + 1)
    with pytest.raises(ExecutionServerError, match="speaks execution protocol 2, this client 1"):
        TaskRunner(servers=[other.url]).run_programs(["pass"])
