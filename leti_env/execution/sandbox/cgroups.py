"""One worker slot's cgroups: a pids and a memory limit, an OOM counter, and removal.

One file (about 580 lines) by necessity: the worker imports it as a top-level module with no sibling
imports (below), and cgroup v1 and v2 must be read side by side to see that both get the same limits.

Standard library only, and no sibling imports: the worker imports this as a top-level module
(``import cgroups``) and the caller's pool may import it through the package (``remove_paths``).

Layouts (``<own>`` is this process's cgroup, from ``/proc/self/cgroup``, under the hierarchy's mount
point, from ``/proc/self/mountinfo``; ``<name>`` is ``leti-<launcher pid>``):

* cgroup v1: ``<pids mount><own>/<name>/run`` and ``<memory mount><own>/<name>/run``; the limits
  (``pids.max``; ``memory.limit_in_bytes`` and, where swap is accounted,
  ``memory.memsw.limit_in_bytes``) are on ``run``. Nothing runs in ``<name>`` itself.
* cgroup v2: ``<unified mount><own>/<name>/run``. ``<own>`` must delegate ``pids`` and ``memory`` to
  its children (its ``cgroup.subtree_control``; we try to enable them, which the kernel refuses with
  EBUSY when ``<own>`` holds processes and is not the root cgroup); ``<name>`` enables them for
  ``run``, which gets ``pids.max``, ``memory.max`` and ``memory.swap.max = 0``.

The creating process is NOT moved anywhere; ``join_run`` moves the caller into ``run`` (the zygote,
whose children inherit it). ``remove`` first moves the caller back to ``<own>`` if it is inside
(otherwise its own membership keeps the group busy), then rmdirs deepest first, retrying briefly
while exiting processes leave. ``sweep_stale`` removes the groups of launchers that died without
``remove`` (SIGKILL): a group ``leti-<pid>`` whose pid is dead and whose subtree holds no process.
"""

from __future__ import annotations

import errno
import os
import re
import time

__all__ = ["Cgroups", "can_use", "remove_paths", "sweep_stale"]

# Module-level so tests can point them at a fake tree.
MOUNTINFO = "/proc/self/mountinfo"
PROC_CGROUP = "/proc/self/cgroup"

CONTROLLERS = ("pids", "memory")
REMOVE_TIMEOUT_S = 2.0
_DELEGATE_HINT = ("run under a delegated cgroup, e.g. `systemd-run --user --scope -p Delegate=yes …` "
                  "(the worker's own cgroup must hold no processes of its own, or be the root cgroup)")


# ----------------------------------------------------------------------------------------------
# Small helpers.
# ----------------------------------------------------------------------------------------------


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _own_paths() -> dict[str, str]:
    """controller (or ``name=...``) -> this process's cgroup path; ``""`` -> the v2 path (``0::``)."""
    own: dict[str, str] = {}
    for line in _read(PROC_CGROUP).splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier_id, controllers, path = parts
        if hier_id == "0" and controllers == "":
            own[""] = path
        else:
            for c in controllers.split(","):
                if c:
                    own[c] = path
    return own


def _mounts() -> list[tuple[str, str, str, set[str], str]]:
    """(fstype, mount root, mount point, controllers, device) of every cgroup/cgroup2 mount."""
    found = []
    for line in _read(MOUNTINFO).splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        controllers = set()
        if fstype == "cgroup":
            controllers = {o for o in fields[sep + 3].split(",") if o not in ("rw", "ro")}
        found.append((fstype, _unescape(fields[3]), _unescape(fields[4]), controllers, fields[2]))
    return found


def _own_dir(mount_root: str, mount_point: str, own: str) -> str | None:
    """The directory of cgroup ``own`` as seen through a mount of (part of) its hierarchy."""
    if own.startswith("/.."):  # outside our cgroup namespace: not reachable through this mount
        return None
    root = mount_root.rstrip("/")
    if root:
        if own != root and not own.startswith(root + "/"):
            return None
        own = own[len(root):] or "/"
    path = os.path.normpath(os.path.join(mount_point, own.lstrip("/")))
    mp = os.path.normpath(mount_point)
    if path != mp and not path.startswith(mp.rstrip("/") + "/"):
        return None
    return path


def _v1_dirs(own_paths: dict[str, str], mounts=None) -> dict[str, str]:
    """controller -> ``<mount><own>`` for every mounted v1 hierarchy (one entry per controller)."""
    dirs: dict[str, str] = {}
    for fstype, root, point, controllers, _ in (mounts if mounts is not None else _mounts()):
        if fstype != "cgroup":
            continue
        for c in controllers:
            if c in dirs or c not in own_paths:
                continue
            d = _own_dir(root, point, own_paths[c])
            if d is not None and os.path.isdir(d):
                dirs[c] = d
    return dirs


def _v2_dir(own_paths: dict[str, str], mounts=None) -> tuple[str | None, bool]:
    """(``<unified mount><own>``, whether ``<own>`` is the hierarchy's root cgroup) or (None, False)."""
    if "" not in own_paths:
        return None, False
    for fstype, root, point, _, _ in (mounts if mounts is not None else _mounts()):
        if fstype != "cgroup2":
            continue
        d = _own_dir(root, point, own_paths[""])
        if d is not None and os.path.isdir(d):
            return d, own_paths[""] == "/" and root == "/"
    return None, False


def _writable(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    euid = os.geteuid()
    return (euid == 0 or st.st_uid == euid) and os.access(path, os.W_OK)


def _words(path: str) -> set[str]:
    try:
        return set(_read(path).split())
    except OSError:
        return set()


def _v2_probe(own: str, is_root: bool) -> str | None:
    """None when ``own`` can hold our slot groups (possibly after enabling its subtree_control),
    else why not. Does not write anything."""
    available = _words(os.path.join(own, "cgroup.controllers"))
    missing = [c for c in CONTROLLERS if c not in available]
    if missing:
        return f"cgroup v2 at {own}: controller(s) {', '.join(missing)} not available in cgroup.controllers"
    if not _writable(own) or not os.access(os.path.join(own, "cgroup.subtree_control"), os.W_OK):
        return (f"cgroup v2 at {own} is not writable by uid {os.geteuid()} (not root, not delegated "
                f"to us); {_DELEGATE_HINT}")
    enabled = _words(os.path.join(own, "cgroup.subtree_control"))
    if all(c in enabled for c in CONTROLLERS):
        return None
    if not is_root and _read_pids(own):
        return (f"cgroup v2 at {own}: the current cgroup has processes and does not delegate "
                f"pids/memory (cgroup.subtree_control: {' '.join(sorted(enabled)) or 'empty'}); "
                f"{_DELEGATE_HINT}")
    return None


def _read_pids(directory: str) -> list[int]:
    try:
        return [int(p) for p in _read(os.path.join(directory, "cgroup.procs")).split()]
    except (OSError, ValueError):
        return []


def _subtree_pids(directory: str) -> list[int]:
    """Processes in ``directory`` and every cgroup below it."""
    pids: list[int] = []
    for dirpath, _, _ in os.walk(directory):
        pids.extend(_read_pids(dirpath))
    return pids


def _subtree_busy(directory: str) -> bool:
    """True when any cgroup at or below ``directory`` holds a process (or cannot be read)."""
    for dirpath, _, _ in os.walk(directory):
        try:
            if _read(os.path.join(dirpath, "cgroup.procs")).split():
                return True
        except FileNotFoundError:
            if dirpath == directory and not os.path.isdir(directory):
                return False
            return True  # a cgroup directory without cgroup.procs: not what we think it is
        except OSError:
            return True
    return False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never a launcher: treat as alive (keep)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: exists, not ours
    return True


def _depth_first(paths) -> list[str]:
    unique = list(dict.fromkeys(os.path.normpath(p) for p in paths))
    return sorted(unique, key=lambda p: p.count("/"), reverse=True)  # stable: deepest first


# ----------------------------------------------------------------------------------------------
# The public API.
# ----------------------------------------------------------------------------------------------


def remove_paths(paths: list[str], timeout: float | None = None) -> None:
    """rmdir every path, deepest first; retry EBUSY/ENOTEMPTY until ``timeout`` seconds (default
    ``REMOVE_TIMEOUT_S``, shared by all paths) have passed, while killed processes finish leaving.
    Never raises, never kills."""
    try:
        deadline = time.monotonic() + (REMOVE_TIMEOUT_S if timeout is None else timeout)
        for path in _depth_first(paths):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() >= deadline:
                        break
                    time.sleep(0.02)
    except Exception:  # noqa: BLE001 - cleanup must never raise
        pass


def kill_paths(paths: list[str], timeout: float = 2.0) -> None:
    """SIGKILL every process still in these groups (a supervisor whose worker it SIGKILLed: the
    groups hold only that worker's sandboxed processes). v2 has ``cgroup.kill``; v1 is a loop
    until the groups are empty. Never raises."""
    try:
        deadline = time.monotonic() + timeout
        for path in paths:
            kill_file = os.path.join(path, "cgroup.kill")
            if os.path.exists(kill_file):
                try:
                    _write(kill_file, "1")
                except OSError:
                    pass
        while time.monotonic() < deadline:
            pids = [pid for path in paths for pid in _read_pids(path)]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            time.sleep(0.01)
    except Exception:  # noqa: BLE001 - cleanup must never raise
        pass


def sweep_stale(prefix: str = "leti-") -> int:
    """Remove groups named ``<prefix><pid>`` in this process's own cgroup directory of every mounted
    hierarchy (v1, each controller; and v2) whose ``<pid>`` is not alive and whose subtree holds no
    process. Returns how many such groups were removed (one per hierarchy directory). Never raises;
    never touches other names; never signals anything. Call it in the namespace the launchers' pids
    belong to (before unsharing a PID namespace), or live launchers would look dead."""
    removed = 0
    try:
        pattern = re.compile(re.escape(prefix) + r"([0-9]+)")
        own_paths = _own_paths()
        mounts = _mounts()
        parents = list(_v1_dirs(own_paths, mounts).values())
        v2, _ = _v2_dir(own_paths, mounts)
        if v2 is not None:
            parents.append(v2)
        seen: set[str] = set()
        for parent in parents:
            key = os.path.realpath(parent)
            if key in seen:
                continue
            seen.add(key)
            try:
                entries = os.listdir(parent)
            except OSError:
                continue
            for entry in entries:
                match = pattern.fullmatch(entry)
                if not match or _pid_alive(int(match.group(1))):
                    continue
                group = os.path.join(parent, entry)
                if not os.path.isdir(group) or os.path.islink(group) or _subtree_busy(group):
                    continue
                inner = [dirpath for dirpath, _, _ in os.walk(group)]
                remove_paths(inner, timeout=0)  # empty of processes: no waiting needed
                if not os.path.exists(group):
                    removed += 1
    except Exception:  # noqa: BLE001 - a sweep must never break a worker's start
        pass
    return removed


def can_use() -> tuple[bool, str]:
    """Cheap probe (reads only): is there a usable v2 hierarchy (pids+memory available and writable)
    or a writable v1 pids+memory pair, and if not, why."""
    try:
        own_paths = _own_paths()
        mounts = _mounts()
    except OSError as exc:
        return False, f"cannot read {PROC_CGROUP} / {MOUNTINFO}: {exc}"
    reasons = []
    v2, is_root = _v2_dir(own_paths, mounts)
    if v2 is not None:
        why = _v2_probe(v2, is_root)
        if why is None:
            return True, f"cgroup v2 at {v2}"
        reasons.append(why)
    else:
        reasons.append("no cgroup v2 hierarchy holding this process")
    why = _v1_probe(own_paths, mounts)
    if why is None:
        dirs = _v1_dirs(own_paths, mounts)
        return True, "cgroup v1 " + ", ".join(f"{c} at {dirs[c]}" for c in CONTROLLERS)
    reasons.append(why)
    return False, "; ".join(reasons)


def _v1_probe(own_paths: dict[str, str], mounts=None) -> str | None:
    dirs = _v1_dirs(own_paths, mounts)
    missing = [c for c in CONTROLLERS if c not in dirs]
    if missing:
        return f"no cgroup v1 {'/'.join(missing)} hierarchy holding this process"
    for c in CONTROLLERS:
        if not _writable(dirs[c]):
            return f"cgroup v1 {c} at {dirs[c]} is not writable by uid {os.geteuid()}"
    return None


class Cgroups:
    """One worker slot's cgroups: a pids and a memory limit, an OOM counter, and removal."""

    version: int
    paths: list[str]

    def __init__(self, version: int, run_dirs: dict[str, str], parents: dict[str, str], paths: list[str]):
        # Use Cgroups.create. run_dirs: controller -> run dir; parents: run dir -> the <own> dir the
        # caller returns to on remove(); paths: every directory created, deepest first.
        self.version = version
        self.run_dirs = run_dirs
        self.parents = parents
        self.paths = paths
        self.memory_bytes = 0

    @classmethod
    def create(cls, name: str, pids_max: int, memory_bytes: int) -> Cgroups:
        """Create ``<own>/<name>/run`` (v2 preferred when pids+memory are available in the unified
        hierarchy, else v1 pids and memory). Raises OSError with the reason when neither works."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"bad cgroup name {name!r}")
        try:
            own_paths = _own_paths()
            mounts = _mounts()
        except OSError as exc:
            raise OSError(exc.errno or errno.ENOENT, f"cannot read {PROC_CGROUP} / {MOUNTINFO}: {exc}") from exc
        reasons = []
        v2, is_root = _v2_dir(own_paths, mounts)
        if v2 is not None and all(c in _words(os.path.join(v2, "cgroup.controllers")) for c in CONTROLLERS):
            try:
                return cls._create_v2(v2, is_root, name, pids_max, memory_bytes)
            except OSError as exc:
                reasons.append(exc.strerror if exc.filename is None and exc.strerror else f"cgroup v2: {exc}")
        elif v2 is not None:
            reasons.append(f"cgroup v2 at {v2}: pids and memory not both available in cgroup.controllers")
        why = _v1_probe(own_paths, mounts)
        if why is None:
            try:
                return cls._create_v1(_v1_dirs(own_paths, mounts), name, pids_max, memory_bytes)
            except OSError as exc:
                reasons.append(f"cgroup v1: {exc}")
        else:
            reasons.append(why)
        raise OSError(errno.ENOTSUP, "no usable cgroup hierarchy: " + "; ".join(reasons))

    @classmethod
    def _create_v1(cls, dirs: dict[str, str], name: str, pids_max: int, memory_bytes: int) -> Cgroups:
        run_dirs: dict[str, str] = {}
        parents: dict[str, str] = {}
        created: list[str] = []
        self = cls(1, run_dirs, parents, [])
        try:
            for controller in CONTROLLERS:
                own = dirs[controller]
                slot = os.path.join(own, name)
                run = os.path.join(slot, "run")
                if run not in parents:  # pids and memory co-mounted: one pair of directories
                    for d in (slot, run):
                        try:
                            os.mkdir(d)
                        except FileExistsError:
                            pass  # left by a dead process with our pid: ours now
                        created.append(d)
                run_dirs[controller] = run
                parents[run] = own
            self._limit(created, run_dirs["pids"], pids_max, memory_bytes)
        except BaseException:
            self.paths = _depth_first(created)
            self.remove()
            raise
        return self

    @classmethod
    def _create_v2(cls, own: str, is_root: bool, name: str, pids_max: int, memory_bytes: int) -> Cgroups:
        why = _v2_probe(own, is_root)
        if why is not None:
            raise OSError(errno.EACCES, why)
        control = os.path.join(own, "cgroup.subtree_control")
        missing = [c for c in CONTROLLERS if c not in _words(control)]
        if missing:
            try:
                _write(control, " ".join("+" + c for c in missing))
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise OSError(exc.errno, f"cgroup v2 at {own}: the current cgroup has processes and does "
                                  f"not delegate pids/memory (writing +{' +'.join(missing)} to "
                                  f"cgroup.subtree_control: EBUSY); {_DELEGATE_HINT}") from exc
                if exc.errno in (errno.EACCES, errno.EPERM):
                    raise OSError(exc.errno, f"cgroup v2 at {own}: not allowed to enable "
                                  f"+{' +'.join(missing)} in cgroup.subtree_control ({exc.strerror}); "
                                  f"{_DELEGATE_HINT}") from exc
                raise OSError(exc.errno, f"cgroup v2 at {own}: enabling +{' +'.join(missing)} in "
                              f"cgroup.subtree_control failed: {exc.strerror}") from exc
        slot = os.path.join(own, name)
        run = os.path.join(slot, "run")
        created: list[str] = []
        self = cls(2, {c: run for c in CONTROLLERS}, {run: own}, [])
        try:
            try:
                os.mkdir(slot)
            except FileExistsError:
                pass
            created.append(slot)
            self.paths = [slot]
            _write(os.path.join(slot, "cgroup.subtree_control"), " ".join("+" + c for c in CONTROLLERS))
            try:
                os.mkdir(run)
            except FileExistsError:
                pass
            created.append(run)
            self._limit(created, run, pids_max, memory_bytes)
        except BaseException:
            self.paths = _depth_first(created)
            self.remove()
            raise
        return self

    def _limit(self, created: list[str], pids_run: str, pids_max: int, memory_bytes: int) -> None:
        """Record what was created (for removal), then set the run group's limits."""
        self.paths = _depth_first(created)
        _write(os.path.join(pids_run, "pids.max"), str(int(pids_max)))
        self.set_memory(memory_bytes)

    def set_memory(self, memory_bytes: int) -> None:
        memory_bytes = int(memory_bytes)
        run = self.run_dirs["memory"]
        if self.version == 2:
            _write(os.path.join(run, "memory.max"), str(memory_bytes))
            swap = os.path.join(run, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")
        else:
            limit = os.path.join(run, "memory.limit_in_bytes")
            memsw = os.path.join(run, "memory.memsw.limit_in_bytes")
            # memsw (memory + swap) must stay >= the memory limit: raise it first, lower it last.
            try:
                growing = memory_bytes >= int(_read(limit))
            except (OSError, ValueError):
                growing = True
            has_memsw = os.path.exists(memsw)
            if has_memsw and growing:
                self._try_write(memsw, memory_bytes)
            _write(limit, str(memory_bytes))
            if has_memsw and not growing:
                self._try_write(memsw, memory_bytes)
        self.memory_bytes = memory_bytes

    @staticmethod
    def _try_write(path: str, value: int) -> None:
        try:
            _write(path, str(value))
        except OSError:
            pass  # swap accounting is best effort

    def join_run(self) -> None:
        """Move the calling process into the run group; its children inherit it."""
        for run in dict.fromkeys(self.run_dirs.values()):
            _write(os.path.join(run, "cgroup.procs"), "0")  # "0": the writing process

    def keep_open(self) -> None:
        """Hold the run groups' directories open, so that ``oom_kills`` and ``run_pids`` keep working
        after the caller's filesystem view changes (the zygote pivots into a root with no /sys)."""
        self._fds = {c: os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) for c, d in self.run_dirs.items()}

    def _read_run(self, controller: str, name: str) -> str:
        fds = getattr(self, "_fds", None)
        if not fds:
            return _read(os.path.join(self.run_dirs[controller], name))
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=fds[controller])
        try:
            return os.read(fd, 1 << 16).decode()
        finally:
            os.close(fd)

    def oom_kills(self) -> int:
        try:
            if self.version == 2:
                for line in self._read_run("memory", "memory.events").splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
                return 0
            try:
                for line in self._read_run("memory", "memory.oom_control").splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            except OSError:
                pass
            return int(self._read_run("memory", "memory.failcnt"))
        except (OSError, ValueError):
            return 0

    def run_pids(self) -> list[int]:
        """Processes in the run group (and any group below it, while its directory is reachable)."""
        if getattr(self, "_fds", None):
            try:
                return [int(p) for p in self._read_run("pids", "cgroup.procs").split()]
            except (OSError, ValueError):
                return []
        return list(dict.fromkeys(_subtree_pids(self.run_dirs["pids"])))

    def remove(self) -> None:
        """Move the caller out if it is inside, then rmdir everything created (retrying briefly
        while processes exit). Never raises; idempotent."""
        try:
            self._leave()
        except Exception:  # noqa: BLE001
            pass
        remove_paths(self.paths)

    def _leave(self) -> None:
        """If the calling process sits in one of our groups (the zygote that joined ``run`` and now
        cleans up), move it back to the ``<own>`` directory, or its membership keeps rmdir busy."""
        me = os.getpid()  # cgroup.procs lists pids as the reader's PID namespace numbers them
        for run, own in self.parents.items():
            slot = os.path.dirname(run)
            if os.path.isdir(slot) and me in _subtree_pids(slot):
                try:
                    _write(os.path.join(own, "cgroup.procs"), "0")
                except OSError:
                    pass
