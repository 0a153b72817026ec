"""The spawner: a clean process that forks the solution processes.

A forked child starts with a copy of its parent's memory. The zygote has held earlier runs' requests
(their tests and programs) and the verifier's verdicts, and freed memory is not wiped: a program
forked from it could scan its own memory for the tests it is judged by, or copy a sibling's passing
program. So solution processes are forked from this spawner instead, which the zygote forks once,
before reading any request, and which never receives a program or a test: only "fork" commands
(with the run's file descriptors) and "wait" questions. Each solution process reads its own program
from a pipe, then confines itself. The spawner reaps its children and reports how each one ended.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

from kernel import PR_SET_PDEATHSIG, prctl
import solution
from solution import solution_main

# The zygote's commands and our replies are a few plain bytes, not JSON: everything this process
# writes between a fork and its child's end is a page copied (fork shares memory copy-on-write), so
# the loop below does as little as it can.
FORK = b"F"  # with the run's descriptors; reply: the child's pid, or -errno
WAIT = b"W"  # b"W<pid> <seconds>"; reply: b"<wait status or -1> <CPU seconds>"
_MAX_COMMAND = 64
_MAX_ENDED = 256  # exit statuses kept for a "wait" (the zygote asks only about its last run)
_ended: dict[int, tuple[int, float]] = {}  # pid -> (wait status, CPU seconds)


def _reap(*_ignored) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _ended[pid] = (status, usage.ru_utime + usage.ru_stime)
        if len(_ended) > _MAX_ENDED:  # never asked about (its run was judged): forget the oldest
            del _ended[next(iter(_ended))]


def _read_request(fd: int) -> dict:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))


def serve(sock: socket.socket, confine, run_dir: str, report_bug) -> None:
    """Answer the zygote until it hangs up: fork a solution process, or say how one ended."""
    signal.signal(signal.SIGCHLD, _reap)
    confine.seal_spawner()
    # The stack below solution_main, measured once: serve -> _solution -> solution_main adds two calls.
    solution.set_harness_depth(solution.used_stack_budget() + 2)
    recv_fds, send, close = socket.recv_fds, sock.send, os.close
    while True:
        message, fds, _, _ = recv_fds(sock, _MAX_COMMAND, 4)
        if not message:
            return
        if message == FORK:
            pid = _fork()
            if pid == 0:
                _solution(sock, fds, run_dir, confine, report_bug)
            for fd in fds:
                close(fd)
            send(b"%d" % pid)
        elif message[:1] == WAIT:  # the exit status, waiting up to `seconds` for it
            pid_text, seconds_text = message[1:].split()
            pid = int(pid_text)
            deadline = time.monotonic() + float(seconds_text)
            while pid not in _ended and time.monotonic() < deadline:
                _reap()
                time.sleep(0.0005)
            _reap()
            status, cpu = _ended.pop(pid, (-1, 0.0))
            send(b"%d %r" % (status, cpu))


def _fork() -> int:
    """fork(), retried for a moment while the last run's killed processes still hold the slot's
    pids; -errno if it keeps failing (the zygote then reports a sandbox error, and we live on)."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            return os.fork()
        except OSError as exc:
            if time.monotonic() > deadline:
                return -(exc.errno or 1)
            _reap()
            time.sleep(0.002)


def _solution(sock: socket.socket, fds: list[int], run_dir: str, confine, report_bug) -> None:
    """In the new child: read the program, confine, run it. Never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the spawner gone (its slot killed): so is the run
        chan, out_w, program_r = fds[:3]
        ruleset_fd = fds[3] if len(fds) > 3 else None
        request = _read_request(program_r)
        confine.enter("solution", [chan], out_w, run_dir, request, ruleset_fd=ruleset_fd)
        solution_main(chan, request)
    except BaseException:  # noqa: BLE001 - a harness bug, before any untrusted code ran
        report_bug("solution setup")
    finally:
        os._exit(71)
