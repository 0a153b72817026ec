"""`leti serve` as a real subprocess on loopback, for the tests that talk to it (a free port, a wait for
/health, and always a stop)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from leti_env.execution.pool import _descendants


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m leti_env serve ENV... --port P ARGS...``, up (``/health`` answers) when the constructor returns.

    ``environ``: extra environment variables of the server process (``LETI_SERVER_TOKEN``, ...).
    """

    def __init__(self, *args: str, env: tuple[str, ...] = ("--env", "LETI-MBPP", "--split", "test"),
                 environ: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leti_env", "serve", *env, "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(environ or {})})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"leti serve exited: {self.proc.communicate()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("leti serve did not come up in 90 s")

    def processes(self, name: str) -> list[int]:
        found = []
        for pid in _descendants(self.proc.pid):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == name:
                        found.append(pid)
            except OSError:
                pass
        return found

    def client(self, **kwargs):
        from leti_env.server import LetiEnvClient

        return LetiEnvClient(base_url=self.url, **kwargs).sync()

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str, str]:
        self.proc.send_signal(sig)  # Ctrl-C by default
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        """SIGKILL, as a machine that dies: no shutdown at all. Its sandbox workers see their pipe close and exit."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)

    def close(self) -> None:
        """Stop it if it still runs (a fixture's teardown)."""
        if self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.kill()
