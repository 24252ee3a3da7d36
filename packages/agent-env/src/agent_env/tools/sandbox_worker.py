"""Sandbox worker script: isolates itself, waits for one Python snippet on stdin, runs it, exits.

Run as ``python -I -u sandbox_worker.py SPEC_JSON`` by :mod:`agent_env.tools.python_sandbox`; it uses
the standard library only and is never imported by the host. Three processes take part:

* the **launcher** (host PID namespace, the host's uid) unshares the PID, network, mount, IPC and UTS
  namespaces, forks ``init``, reports ``pid <init pid>`` on the status pipe, and waits for ``init``.
  It exits only after ``init`` has been reaped, and the kernel reaps ``init`` only after every other
  process of its PID namespace is gone, so end-of-file on the status pipe means the whole sandbox is gone.
* **init** (PID 1 of the new namespace, still root) builds the file-system view: the root read-only,
  a fresh size-limited tmpfs on ``/tmp`` (also on ``/var/tmp`` and ``/dev/shm``), a fresh ``/proc``, an
  empty ``/run``, and the Python runtime made reachable when it lives under a directory the sandbox
  uid cannot enter (e.g. ``/root``). It forks the runner, writes ``exit <returncode>`` when the runner
  ends, and exits, which kills whatever the snippet left behind.
* the **runner** (PID 2) sets resource limits, drops to the unprivileged sandbox uid with no
  supplementary groups and ``no_new_privs``, writes ``ready <json report>``, closes the status pipe, and
  blocks reading ``RUN\\n`` + source from stdin. It then runs the source as ``__main__`` in this process
  (a warm worker has already paid Python's start-up), joins its threads, runs its atexit handlers and
  exits without the interpreter's slow module teardown.

In ``unisolated`` mode (only when the user opted in) the launcher forks the runner directly: resource
limits and a scrubbed environment apply, namespaces and the uid drop do not, and the launcher kills its
own process group once the runner ends. Any set-up failure is reported as ``error <message>``.
"""

import atexit
import ctypes
import importlib
import json
import os
import resource
import signal
import sys
import traceback
import types

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

SYS_MOUNT_SETATTR = 442  # the same number on every architecture that has it
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
WORK_SUBDIR = "work"
"""The snippet's working directory inside the sandbox's fresh /tmp (`/tmp/work`)."""
"""Each gets the sandbox's one fresh tmpfs (its working directory)."""
MASKED_DIRS = (*SCRATCH_DIRS, "/run")
"""Covered by fresh mounts, so host temp files and sockets (e.g. in /run) are out of the sandbox's reach."""
STAGE_CANDIDATES = ("/mnt", "/media", "/srv", "/opt", "/boot", "/home", "/etc")
"""Directories that can briefly hold a scratch tmpfs while the file-system view is built."""

SNIPPET_NAME = "snippet.py"
RUN_HEADER = b"RUN\n"

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def _make_root_read_only() -> None:
    attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
    rc = _libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        b"/",
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(rc, "mount_setattr(/, read-only, recursive) (needs Linux >= 5.12)")


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _runtime_paths() -> list[str]:
    """Directories and files the Python runtime reads: prefixes and the import path."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path}
    real = sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})
    kept: list[str] = []
    for p in real:  # sorted, so a parent comes before its children
        if not any(_under(p, k) for k in kept):
            kept.append(p)
    return kept


def _blocking_ancestor(path: str) -> str | None:
    """The first proper ancestor of `path` that other users cannot enter, if any."""
    current = "/"
    for part in path.strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


def _cover(path: str) -> str | None:
    """The directory whose new mount would hide `path`: a masked one it lies in, or an unenterable ancestor."""
    for directory in MASKED_DIRS:
        if _under(path, directory) and os.path.isdir(directory):
            return directory
    return _blocking_ancestor(path)


def _pick_stage(runtime: list[str]) -> str:
    """An existing directory to mount a scratch tmpfs on for a moment; it must not hide a runtime path."""
    for candidate in STAGE_CANDIDATES:
        if os.path.isdir(candidate) and not any(_under(p, candidate) for p in runtime):
            return candidate
    raise OSError(f"none of {STAGE_CANDIDATES} can serve as a staging mount point")


def _stage_hidden(runtime: list[str], stage: str) -> tuple[list[tuple[str, str]], set[str]]:
    """Bind each runtime path that a new mount will hide to a point under `stage`.

    Returns the `(point, path)` pairs and the unenterable directories that must be covered with an
    empty tmpfs (mode 755) so that the sandbox uid can reach the paths moved back on top of it.
    """
    staged: list[tuple[str, str]] = []
    blockers: set[str] = set()
    for path in runtime:
        cover = _cover(path)
        if cover is None:
            continue
        if cover not in MASKED_DIRS:
            blockers.add(cover)
        point = os.path.join(stage, str(len(staged)))
        if os.path.isdir(path):
            os.mkdir(point)
        else:
            open(point, "w").close()
        _mount(path, point, None, MS_BIND | MS_REC)
        staged.append((point, path))
    return staged, blockers


def _unstage(staged: list[tuple[str, str]]) -> None:
    """Move staged binds to their original paths, now inside fresh tmpfs mounts."""
    for point, path in staged:
        if os.path.isdir(point):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()
        _mount(point, path, None, MS_MOVE)


def _build_filesystem(spec: dict) -> None:
    """Run in init: private mounts, a read-only root, fresh /tmp and /run and /proc, the runtime reachable."""
    uid, workdir = spec["uid"], spec["workdir"]
    scratch_flags = MS_NOSUID | MS_NODEV
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    runtime = _runtime_paths()
    stage = _pick_stage(runtime)
    _mount("tmpfs", stage, "tmpfs", scratch_flags, "size=1m,mode=0700")
    staged, blockers = _stage_hidden(runtime, stage)
    for blocker in sorted(blockers):
        _mount("tmpfs", blocker, "tmpfs", scratch_flags, "size=1m,mode=0755")
    _mount(
        "tmpfs", workdir, "tmpfs", scratch_flags, f"size={spec['tmp_bytes']},mode=0700,uid={uid},gid={uid}"
    )
    scratch = [workdir] + [d for d in SCRATCH_DIRS if d != workdir and os.path.isdir(d)]
    for extra in scratch[1:]:
        _mount(workdir, extra, None, MS_BIND)
    if os.path.isdir("/run"):
        _mount("tmpfs", "/run", "tmpfs", scratch_flags | MS_NOEXEC, "size=1m,mode=0755")
    _unstage(staged)
    _check(_libc.umount2(stage.encode(), MNT_DETACH), f"umount {stage}")
    _make_root_read_only()
    for directory in scratch:  # writable again; what is mounted inside them stays read-only
        _mount(None, directory, None, MS_REMOUNT | MS_BIND | scratch_flags)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _set_limits(spec: dict) -> None:
    limits = spec["limits"]
    resource.setrlimit(resource.RLIMIT_AS, (limits["as_bytes"], limits["as_bytes"]))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize_bytes"], limits["fsize_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"], limits["nproc"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != uid:
        raise OSError(f"could not switch to uid/gid {uid}")


def _write_line(fd: int, line: str) -> None:
    os.write(fd, line.encode() + b"\n")


def _read_source() -> bytes | None:
    data = sys.stdin.buffer.read()
    if not data.startswith(RUN_HEADER):
        return None  # the host went away or shut the pool down before sending code
    return data[len(RUN_HEADER) :]


def _exit_status(exc: SystemExit) -> int:
    """The process exit status `python script.py` gives for an uncaught SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finish(returncode: int) -> None:
    """End the process as the interpreter would, minus tearing down its modules (about 20 ms).

    Non-daemon threads are joined, atexit handlers run and the standard streams are flushed; objects are
    not finalized, which only the sandbox (about to vanish) could notice.
    """
    threading_module = sys.modules.get("threading")
    if threading_module is not None:
        shutdown = getattr(threading_module, "_shutdown", None)
        if shutdown is not None:
            shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(returncode)


def _run_snippet(source: bytes, workdir: str) -> int:
    """Run `source` as the script `<workdir>/snippet.py`, as `python snippet.py` would; return its exit status."""
    path = os.path.join(workdir, SNIPPET_NAME)
    with open(path, "wb") as f:
        f.write(source)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [path]
    sys.path.insert(0, workdir)
    try:
        code = compile(source, path, "exec")
        exec(code, main.__dict__)
    except SystemExit as exc:
        return _exit_status(exc)
    except BaseException as exc:  # noqa: BLE001 - report it as the interpreter would
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
        return 1
    return 0


def _preload(modules: list[str]) -> list[str]:
    """Import `modules` now, as the snippet would; return those that imported."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - a module that is missing or broken is simply not preloaded
            pass
    return loaded


def _runner(spec: dict, status_fd: int) -> int:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = spec["workdir"]
    isolated = spec["mode"] == "isolated"
    if isolated:
        # The snippet gets a directory of its own inside the fresh /tmp: where the Python runtime itself lives
        # under /tmp (a venv in a /tmp checkout), its mount point shows in /tmp, never in the working directory.
        workdir = os.path.join(workdir, WORK_SUBDIR)
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        os.chown(workdir, spec["uid"], spec["uid"])
    os.chdir(workdir)
    _set_limits(spec)
    if isolated:
        _drop_privileges(spec["uid"])
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    preloaded = _preload(spec.get("preload", []))
    report = {
        "mode": spec["mode"],
        "uid": os.getuid(),
        "pid": os.getpid(),
        "namespaces": ["pid", "net", "mount", "ipc", "uts"] if isolated else [],
        "read_only_root": isolated,
        "preloaded": preloaded,
    }
    _write_line(status_fd, "ready " + json.dumps(report))
    os.close(status_fd)
    source = _read_source()
    if source is None:
        return 0
    sys.stdout.flush()
    return _run_snippet(source, workdir)


def _report_exit(status_fd: int, wait_status: int) -> None:
    _write_line(status_fd, f"exit {os.waitstatus_to_exitcode(wait_status)}")


def _init(spec: dict, status_fd: int) -> None:
    """PID 1 of the sandbox: build the file system, run the runner, report its exit, then die."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the launcher's death ends the sandbox
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # PID 1 ignores signals without a handler
    try:
        _build_filesystem(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the host, which decides what to do
        _write_line(status_fd, f"error setting up the sandbox file system: {exc}")
        os._exit(1)
    runner = os.fork()
    if runner == 0:
        _exit_from_child(spec, status_fd)
    while True:
        pid, wait_status = os.wait()
        if pid == runner:
            _report_exit(status_fd, wait_status)
            os._exit(0)


def _exit_from_child(spec: dict, status_fd: int) -> None:
    """Body of the runner process; never returns."""
    try:
        rc = _runner(spec, status_fd)
    except BaseException as exc:  # noqa: BLE001 - set-up failure before the snippet ran
        try:
            _write_line(status_fd, f"error preparing the sandbox process: {exc}")
        except OSError:
            pass
        os._exit(1)
    _finish(rc)


def main() -> None:
    spec = json.loads(sys.argv[1])
    status_fd = spec["status_fd"]
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the host's death (of its spawning thread) ends the sandbox
    if os.getppid() != spec["host_pid"]:
        os._exit(1)
    if spec["mode"] == "isolated":
        try:
            flags = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
            _check(_libc.unshare(ctypes.c_int(flags)), "unshare")
        except OSError as exc:
            _write_line(status_fd, f"error creating PID/network/mount namespaces (unshare): {exc}")
            os._exit(1)
    child = os.fork()
    if child == 0:
        if spec["mode"] == "isolated":
            _init(spec, status_fd)
        _exit_from_child(spec, status_fd)
    if spec["mode"] == "isolated":
        _write_line(status_fd, f"pid {child}")
    for fd in (0, 1, 2):
        os.close(fd)
    _, wait_status = os.waitpid(child, 0)
    if spec["mode"] != "isolated":
        _report_exit(status_fd, wait_status)
        os.killpg(0, signal.SIGKILL)  # whatever the snippet left in this process group, and us
    os._exit(0)


if __name__ == "__main__":
    main()
