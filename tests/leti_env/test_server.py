"""`leti serve`: a real OpenEnv server on loopback (a subprocess), driven by OpenEnv's own clients.

Reset, step, refinement turns, concurrent sessions on one sandbox pool, malformed actions (a clear error,
the server stays up), and a clean shutdown that leaves no sandbox process, cgroup or temp folder behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("openenv", reason="leti serve needs openenv-core (pip install 'leti[serve]')")
requests = pytest.importorskip("requests")

from leti_env import load_mbpp, refinement_prompt  # noqa: E402
from leti_env.execution.pool import _descendants  # noqa: E402
from leti_env.execution.sandbox import cgroups  # noqa: E402
from leti_env.server import CodeAction  # noqa: E402
from tests.leti_env.serving import Server  # noqa: E402

TASK, OTHER = load_mbpp("test")[:2]
WRONG = "\ndef nothing():\n    pass\n"


@pytest.fixture(scope="module")
def server():
    s = Server("--max_turns", "2", "--workers", "2", "--max_concurrent", "8")
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_an_episode_with_a_refinement_turn(server):
    with server.client() as env:
        first = env.reset(task_id=TASK.task_id)
        assert first.observation.prompt == TASK.prompt and first.observation.task_id == TASK.task_id
        assert first.done is False and first.reward is None

        failed = env.step(CodeAction(code=WRONG))
        assert failed.reward == 0.0 and failed.done is False
        assert failed.observation.status in ("failed", "error") and "Traceback" in failed.observation.feedback
        # the next model input: the task, the attempt, its feedback as comments, the task again
        assert failed.observation.prompt == refinement_prompt(TASK.prompt, WRONG, failed.observation.feedback)

        fixed = env.step(CodeAction(code=TASK.reference_solution))
        assert (fixed.reward, fixed.done, fixed.observation.passed, fixed.observation.turn) == (1.0, True, True, 2)
        assert fixed.observation.feedback == "" and fixed.observation.status == "passed"

        state = env.state()
        assert (state.task_id, state.step_count, state.max_turns, state.env_id) == (TASK.task_id, 2, 2, "LETI-MBPP")
        with pytest.raises(RuntimeError, match="episode has ended.*call reset"):
            env.step(CodeAction(code=TASK.reference_solution))

        env.reset(task_id=TASK.task_id)  # the same session goes on
        env.step(CodeAction(code=WRONG))
        last = env.step(CodeAction(code=WRONG))
        assert last.done is True and last.observation.truncated is True and last.reward == 0.0


def test_sessions_run_side_by_side_on_one_sandbox_pool(server):
    sleeper = "\nimport time\ntime.sleep(3)\n"
    rewards: list = []

    def session() -> None:
        with server.client() as env:
            env.reset(task_id=TASK.task_id)
            rewards.append(env.step(CodeAction(code=sleeper)).reward)

    threads = [threading.Thread(target=session) for _ in range(2)]
    for t in threads:
        t.start()
    most, deadline = 0, time.monotonic() + 2.8
    while time.monotonic() < deadline and most < 2:
        most = max(most, len(server.processes("leti-solution")))
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert most == 2, "two sessions' programs did not run at the same time"
    assert rewards == [0.0, 0.0]  # they ran to their end; the tests then failed


def test_malformed_requests_get_clear_errors_and_the_server_stays_up(server):
    from openenv.core import GenericEnvClient

    with GenericEnvClient(base_url=server.url).sync() as raw:
        raw.reset(task_id=TASK.task_id)
        for bad in ({"code": 5}, {"program": "pass"}, {"code": "x" * 70000}):
            with pytest.raises(RuntimeError, match="VALIDATION_ERROR"):
                raw.step(bad)
        with pytest.raises(RuntimeError, match=f"this session's episode is on {TASK.task_id}, not {OTHER.task_id}"):
            raw.step({"code": "pass", "task_id": OTHER.task_id})
        with pytest.raises(RuntimeError, match="no task 'MBPP/999999' in this environment"):
            raw.step({"code": "pass", "task_id": "MBPP/999999"})
        ok = raw.step({"code": TASK.reference_solution})  # the session survived all of that
        assert ok.reward == 1.0
    with server.client() as env, pytest.raises(RuntimeError, match="no task 'nope'"):
        env.reset(task_id="nope")
    with server.client() as env, pytest.raises(RuntimeError, match="no episode in progress: call reset"):
        env.step(CodeAction(code="pass"))

    # Stateless HTTP: one program scored by task id; bad input is a 4xx naming the problem.
    one = requests.post(server.url + "/step", json={"action": {"code": TASK.reference_solution,
                                                                 "task_id": TASK.task_id}}, timeout=30).json()
    assert one["reward"] == 1.0 and one["done"] is True and one["observation"]["status"] == "passed"
    reply = requests.post(server.url + "/step", json={"action": {"code": "pass", "task_id": "nope"}}, timeout=30)
    assert reply.status_code == 400 and "no task 'nope'" in reply.json()["detail"]
    assert requests.post(server.url + "/step", json={"action": {"cod": "pass"}}, timeout=30).status_code == 422
    assert requests.post(server.url + "/step", data="{not json", timeout=30).status_code == 422
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_shutdown_leaves_no_sandbox_behind():
    tmp_before = {n for n in os.listdir("/tmp") if n.startswith("leti-sandbox-")}
    server = Server("--workers", "2")
    try:
        with server.client() as env:
            env.reset(task_id=TASK.task_id)
            assert env.step(CodeAction(code=TASK.reference_solution)).reward == 1.0
        launchers = [pid for pid in _descendants(server.proc.pid) if _is_launcher(pid, server.proc.pid)]
        tree = _descendants(server.proc.pid)
        assert len(launchers) == 2 and tree
        code, out, err = server.stop()
    finally:
        if server.proc.poll() is None:  # a failed assertion above: never leave a server behind
            server.stop()
    assert code == 0, err
    assert "serving LETI-MBPP (test)" in out and "Traceback" not in err
    alive = [pid for pid in tree if os.path.exists(f"/proc/{pid}")]
    assert not alive, f"sandbox processes outlived the server: {alive}"
    own = cgroups._own_paths()
    dirs = list(cgroups._v1_dirs(own).values()) + [d for d in [cgroups._v2_dir(own)[0]] if d]
    left = [os.path.join(d, f"leti-{pid}") for d in dirs for pid in launchers if os.path.exists(os.path.join(d, f"leti-{pid}"))]
    assert not left, f"cgroups outlived the server: {left}"
    assert {n for n in os.listdir("/tmp") if n.startswith("leti-sandbox-")} == tmp_before


def _is_launcher(pid: int, parent: int) -> bool:
    """A sandbox worker's launcher (its command line reads ``leti-sandbox``), a child of ``parent``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return False
    return ppid == parent and argv[0] == b"leti-sandbox"


def test_trl_tool_environment_runs_its_programs_on_the_server(server):
    """trainers.tool_env.CodeToolEnv(server_url=...): TRL's environment_factory class with OpenEnv's client."""
    import pickle

    from trainers.tool_env import PASSED, CodeToolEnv

    tool_env = CodeToolEnv([TASK, OTHER], max_turns=2, server_url=server.url)
    tool_env.reset(task_id=TASK.task_id, prompt=[])
    feedback = tool_env.run_tests("```python\ndef nothing():\n    pass\n```")
    assert "Traceback" in feedback and tool_env.get_reward() == 0.0
    assert tool_env.run_tests(f"```python\n{TASK.reference_solution.strip()}\n```") == PASSED
    assert tool_env.get_reward() == 1.0 and tool_env.server_url == server.url
    assert tool_env.run_tests("anything").startswith("No attempts left")
    tool_env.reset(task_id=OTHER.task_id)  # the same session, a new episode
    assert tool_env.results == [] and tool_env.run_tests(OTHER.reference_solution) == PASSED
    clone = pickle.loads(pickle.dumps(tool_env))  # picklable: the connection is not copied
    assert clone._client is None and clone.server_url == server.url
    tool_env.close()


def test_a_full_server_refuses_a_session_with_a_clear_error():
    server = Server("--workers", "1", "--max_concurrent", "1")
    try:
        with server.client() as first:
            first.reset(task_id=TASK.task_id)
            with server.client() as second, pytest.raises(ConnectionError, match="--max_concurrent"):
                second.reset(task_id=TASK.task_id)
            assert first.step(CodeAction(code=TASK.reference_solution)).reward == 1.0  # unaffected
    finally:
        server.stop()
        assert server.proc.returncode == 0


@pytest.mark.slow
def test_grpo_tool_env_example_against_the_server(tmp_path, server):
    from tests.conftest import REPO

    env = {**os.environ, "LETI_CACHE": str(tmp_path / "cache"), "TRL_EXPERIMENTAL_SILENCE": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "grpo_tool_env.py"), "--server_url", server.url, "--split", "test",
         "--model_name_or_path", "tiny", "--chat_template", "qwen3", "--max_train_tasks", "2", "--max_turns", "2",
         "--max_steps", "1", "--num_generations", "4", "--per_device_train_batch_size", "4",
         "--max_completion_length", "24", "--output_dir", str(tmp_path / "tools"), "--report_to", "none",
         "--bf16", "false", "--use_cpu", "true"], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train_loss" in proc.stdout


def test_a_port_in_use_is_one_clear_error(server):
    proc = subprocess.run([sys.executable, "-m", "leti_env", "serve", "--env", "LETI-Arith", "--port", str(server.port)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"cannot listen on 127.0.0.1:{server.port} (Address already in use): pick another --port" in proc.stderr


ARITH = ("--env", "LETI-Arith")  # built in: no data files, quick to load
HUGE = 5_000_000  # characters: far past MAX_PROGRAM_CHARS, and past a default websockets client's 1 MiB frames


def test_bound_error_cuts_echoes_and_keeps_short_errors():
    from leti_env.server import MAX_ECHO_CHARS, bound_error

    short = {"detail": [{"type": "string_too_long", "loc": ["body", "action", "code"], "msg": "too long",
                         "input": "x" * MAX_ECHO_CHARS, "ctx": {"max_length": 65536}}]}
    assert bound_error(short) == short
    cut = bound_error({"detail": [{"msg": "too long", "input": "y" * HUGE, "ctx": {"max_length": 65536}}]})
    assert cut["detail"][0]["input"] == "y" * MAX_ECHO_CHARS + f"... (cut: {HUGE} characters in all)"
    assert cut["detail"][0]["ctx"] == {"max_length": 65536} and cut["detail"][0]["msg"] == "too long"
    whole = bound_error({"detail": [{"input": {"code": "z" * 10_000, "extra": 1}}]})  # a dict input: cut as JSON
    echo = whole["detail"][0]["input"]
    assert echo.startswith('{"code": "zzz') and "characters in all" in echo and len(echo) < 300
    many = bound_error({"errors": [{"input": i} for i in range(10_000)]})["errors"]
    assert len(many) == 21 and many[-1] == "... (cut: 10000 entries in all)"
    assert len(bound_error({"message": f"no task '{'q' * HUGE}'"})["message"]) < 600


def test_a_huge_action_gets_a_short_error_over_http_and_websocket(server):
    websockets_sync = pytest.importorskip("websockets.sync.client")
    import json

    huge = "x" * HUGE
    reply = requests.post(server.url + "/step", json={"action": {"code": huge, "task_id": TASK.task_id}}, timeout=60)
    assert reply.status_code == 422 and len(reply.content) < 4096
    assert int(reply.headers["content-length"]) == len(reply.content)
    error = reply.json()["detail"][0]
    assert error["type"] == "string_too_long" and error["loc"][-1] == "code"
    assert error["input"].startswith("xxx") and f"cut: {HUGE} characters in all" in error["input"]
    reply = requests.post(server.url + "/step", data="{not json" + huge, timeout=60)  # FastAPI's own 422
    assert reply.status_code == 422 and len(reply.content) < 4096 and "characters in all" in reply.text

    # A default websockets client takes frames of at most 1 MiB: the error must fit, and the session go on.
    with websockets_sync.connect(server.ws_url, open_timeout=30) as ws:
        assert ws.protocol.max_message_size == 2 ** 20
        ws.send(json.dumps({"type": "reset", "data": {"task_id": TASK.task_id}}))
        assert json.loads(ws.recv(timeout=30))["type"] == "observation"
        ws.send(json.dumps({"type": "step", "data": {"code": huge}}))
        text = ws.recv(timeout=60)
        assert len(text) < 4096
        error = json.loads(text)
        assert error["type"] == "error" and error["data"]["code"] == "VALIDATION_ERROR"
        assert error["data"]["errors"][0]["type"] == "string_too_long"
        assert f"cut: {HUGE} characters in all" in error["data"]["errors"][0]["input"]
        ws.send(json.dumps({"type": "reset", "data": {"task_id": "t" * HUGE}}))  # an unknown task, quoted
        text = ws.recv(timeout=60)
        assert len(text) < 4096 and "no task 'ttt" in text and "characters in all" in text
        ws.send(json.dumps({"type": "step", "data": {"code": TASK.reference_solution}}))
        assert json.loads(ws.recv(timeout=60))["data"]["reward"] == 1.0  # the same session, unharmed


def test_a_client_that_leaves_mid_step_costs_at_most_one_log_line():
    pytest.importorskip("websockets")
    import asyncio
    import json

    import websockets

    server = Server("--workers", "1", env=ARITH)
    sleeper = "\nimport time\ntime.sleep(1.5)\n"

    async def leave_mid_step(abort: bool) -> None:
        ws = await websockets.connect(server.ws_url, open_timeout=30)
        await ws.send(json.dumps({"type": "reset", "data": {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "observation"
        await ws.send(json.dumps({"type": "step", "data": {"code": sleeper}}))
        deadline = time.monotonic() + 20
        while not server.processes("leti-solution") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert server.processes("leti-solution"), "the program never started"
        if abort:
            ws.transport.abort()  # the client dies: no close frame
        else:
            await ws.close()  # the client leaves politely, without waiting for the step
        deadline = time.monotonic() + 30  # until the server has tried to answer
        while server.processes("leti-solution") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)

    try:
        for abort in (False, True):
            asyncio.run(leave_mid_step(abort))
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
        with server.client() as env:  # the server goes on serving
            assert env.reset().observation.prompt
    finally:
        code, out, err = server.stop()
    assert code == 0, err
    assert len(err.splitlines()) <= 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_with_a_session_open_stops_cleanly(sig):
    websockets_sync = pytest.importorskip("websockets.sync.client")
    import json

    from websockets.exceptions import ConnectionClosed

    server = Server("--workers", "2", env=ARITH)
    try:
        with websockets_sync.connect(server.ws_url, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "reset", "data": {}}))
            assert json.loads(ws.recv(timeout=30))["type"] == "observation"
            tree = _descendants(server.proc.pid)
            assert len([pid for pid in tree if _is_launcher(pid, server.proc.pid)]) == 2
            server.proc.send_signal(sig)
            with pytest.raises(ConnectionClosed):  # the server closes the open session as it stops
                ws.recv(timeout=30)
        out, err = server.proc.communicate(timeout=60)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate(timeout=30)
    assert server.proc.returncode == 0, err
    assert "stopped; the sandbox workers are closed" in out and "Traceback" not in err
    alive = [pid for pid in tree if os.path.exists(f"/proc/{pid}")]
    assert not alive, f"sandbox processes outlived the server: {alive}"


def test_served_programs_run_under_the_environments_own_limits_unless_timeout_is_given():
    """`leti serve --env LETI-EAE` runs its programs at LeTI's 30 s; `--timeout` (make_app's `timeout`) overrides."""
    from fastapi.testclient import TestClient

    from leti_env import ExecutionLimits, load_tasks
    from leti_env.server import make_app

    assert make_app("LETI-EAE", workers=1)[1].limits == ExecutionLimits(timeout=30.0)
    task = load_tasks("LETI-Arith", "heldout", 1)[0]
    late = "\nimport time\ntime.sleep(1.5)\n" + task.reference_solution  # a correct answer, 1.5 s late
    statuses = {}
    for timeout in (None, 3.0):
        app, runner = make_app("LETI-Arith", "heldout", workers=1, timeout=timeout)
        assert runner.limits == ExecutionLimits(timeout=timeout or 1.0)  # LETI-Arith's own 1 s, or the override
        with TestClient(app) as client:
            reply = client.post("/step", json={"action": {"code": late, "task_id": task.task_id}}).json()
        statuses[timeout] = reply["observation"]["status"]
    assert statuses == {None: "timeout", 3.0: "passed"}
