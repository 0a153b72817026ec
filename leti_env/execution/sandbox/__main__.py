"""The launcher: the sandbox worker's entry point, ``python -I <this directory> CONFIG_JSON``.

It leaves the caller's session keyring, creates the slot's cgroups (removing any left by dead
workers), unshares the user (when not root), PID, network, IPC and UTS namespaces, and forks the
zygote as PID 1 of the new PID namespace. It stays outside the zygote's mount namespace, so that it
can remove the cgroups when the zygote exits. Requests arrive on stdin, results leave on stdout.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

import cgroups as cgroups_module
import zygote as zygote_module
from kernel import (
    CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS, PR_SET_PDEATHSIG,
    join_new_session_keyring, libc, prctl, set_command_line,
)
from protocol import complete_request, recv_msg, send_msg


def main(argv: list[str]) -> int:
    # Programs read their worker's command line (/proc/self/cmdline): it names no host path.
    set_command_line(b"leti-sandbox")
    # The configuration arrives as the first message on stdin (argv would show in /proc/*/cmdline).
    config = json.loads(argv[1]) if len(argv) > 1 else (recv_msg(0) or {})
    disabled = set(config.get("disable", ()))
    notes: list[str] = []
    protections: dict = {"notes": notes}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the caller, who closes our pipe
    if config.get("cpu") is not None:
        # One slot, one core: the solution and verifier processes ping-pong on every call, and a
        # same-core round trip is ~4x faster than a cross-core one on small VMs. It also keeps
        # parallel workers from stealing each other's time (timeouts stay load-independent).
        try:
            os.sched_setaffinity(0, {int(config["cpu"])})
        except (OSError, AttributeError) as exc:
            notes.append(f"could not pin the worker to cpu {config['cpu']}: {exc}")
    protections["session_keyring"] = join_new_session_keyring()
    if not protections["session_keyring"]:
        notes.append("could not leave the caller's session keyring (keyctl refused)")

    sweep_stale_run_roots()
    cgroups = _slot_cgroups(config, disabled, notes)
    protections["cgroup_pids"] = protections["cgroup_memory"] = cgroups is not None
    protections["cgroup_version"] = cgroups.version if cgroups is not None else None
    protections.update(_enter_namespaces(disabled, notes))

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


def _slot_cgroups(config: dict, disabled: set, notes: list[str]):
    """The slot's pids and memory cgroups, or None (disabled, or the host refused them)."""
    if "cgroup" in disabled:
        return None
    cgroups_module.sweep_stale()
    try:
        return cgroups_module.Cgroups.create(f"leti-{os.getpid()}", config.get("pids_max", 128),
                                             (2 * config.get("memory_mb", 1024) + 64) * 2**20)
    except OSError as exc:
        if os.geteuid() == 0:
            notes.append(f"no cgroup limits: {exc}")
        return None


def _enter_namespaces(disabled: set, notes: list[str]) -> dict:
    """Unshare the PID, network, IPC/UTS (and, when not root, user) namespaces that are not disabled;
    returns which ones this process is now in."""
    wanted = {"pidns": CLONE_NEWPID, "netns": CLONE_NEWNET, "ipcns": CLONE_NEWIPC | CLONE_NEWUTS}
    flags = 0
    for key, flag in wanted.items():
        if key not in disabled:
            flags |= flag
    if "mountns" in disabled:  # a PID namespace needs a /proc of its own, hence a mount namespace
        flags &= ~CLONE_NEWPID
    wants_mounts = "mountns" not in disabled
    user_ns = os.geteuid() != 0 and "userns" not in disabled and (flags != 0 or wants_mounts)
    uid, gid = os.getuid(), os.getgid()
    if user_ns:
        flags |= CLONE_NEWUSER
    applied = 0
    if flags:
        if libc().unshare(flags) == 0:
            applied = flags
        else:
            notes.append(f"unshare refused ({os.strerror(ctypes.get_errno())}): running without namespaces")
    if applied & CLONE_NEWUSER:
        try:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        except OSError as exc:
            notes.append(f"user namespace id maps failed: {exc}")
    entered = {
        "user_namespace": bool(applied & CLONE_NEWUSER),
        "pid_namespace": bool(applied & CLONE_NEWPID),
        "network_namespace": bool(applied & CLONE_NEWNET),
        "ipc_namespace": bool(applied & CLONE_NEWIPC),
    }
    if applied & CLONE_NEWUSER:  # root of our own user namespace: we may now mount
        entered["user_namespace_root"] = True
    return entered


def sweep_stale_run_roots() -> None:
    """Remove the run folders of dead workers (Landlock-only mode keeps them on the host's /tmp)."""
    import re
    import tempfile

    base = tempfile.gettempdir()
    try:
        entries = os.listdir(base)
    except OSError:
        return
    for name in entries:
        match = re.fullmatch(r"leti-sandbox-(\d+)-\w+", name)
        path = os.path.join(base, name)
        try:
            if not match or os.lstat(path).st_uid != os.getuid() or _alive(int(match.group(1))):
                continue
            zygote_module.remove_tree(path)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mode(protections: dict) -> str:
    """namespaces (full), landlock (namespaces refused: Landlock + seccomp), or unconfined."""
    if protections.get("minimal_root") and protections.get("network_namespace"):
        return "namespaces"
    if protections.get("landlock_filesystem"):
        return "landlock"
    return "unconfined"


def _serve(config: dict, protections: dict, cgroups) -> int:
    if protections["pid_namespace"]:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # launcher gone: so are we
    zygote_module._HARNESS_STDERR = os.dup(2)
    os.set_inheritable(zygote_module._HARNESS_STDERR, False)
    zygote = zygote_module.Zygote(config, protections, cgroups)
    protections["mount_namespace"] = zygote.view is not None
    protections["mode"] = _mode(protections)
    hello = {"event": "ready", "protections": protections, "pid": os.getpid(),
             "cgroup_paths": list(cgroups.paths) if cgroups is not None else []}
    send_msg(1, hello)
    try:
        while True:
            request = recv_msg(0)
            if request is None:
                return 0
            complete_request(request)  # the whole program as one file: what feedback line numbers refer to
            try:
                result = zygote.run(request)
            except Exception as exc:  # noqa: BLE001 - report; the slot restarts (its state is unknown)
                import traceback

                zygote.broken = True
                result = {"status": "sandbox_error", "feedback": f"SandboxError: {exc}\n",
                          "detail": traceback.format_exc()[-4000:]}
            result["id"] = request.get("id")
            if zygote.broken:
                result["restart"] = True  # the pool replaces this slot; nothing dirty is reused
            send_msg(1, result)
            if zygote.broken:
                return 75
    finally:
        if not protections["pid_namespace"]:  # else the namespace dies with us, and all in it
            zygote.shutdown()
        if zygote.view is None:
            try:
                zygote_module.remove_tree(zygote.tmp_root)
            except OSError:
                pass
        if cgroups is not None and not protections["pid_namespace"]:
            cgroups.remove()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
