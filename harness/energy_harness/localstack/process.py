"""Child processes that never outlive the process that started them.

Every local service (Kafka node, PostgreSQL, Mosquitto, later the Kubernetes control plane)
runs as a `ManagedProcess`. Three layers make sure none is left behind:

1. the owner calls `stop()` (fixtures' finalizers, `LocalStack.stop()`, Ctrl-C);
2. an `atexit` hook stops whatever is still registered when the interpreter exits normally
   or on an unhandled exception;
3. the kernel sends `death_signal` to the child when its parent dies, even by SIGKILL
   (`prctl(PR_SET_PDEATHSIG)`), which covers a killed test run.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so processes must be
started from a long-lived thread (the main thread in practice); only waiting may happen
on helper threads.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import os
import pwd
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A local service could not be installed, started or reached.

    The message always names what is missing or where the log of the failing process is.
    """


def _child_setup(run_as: pwd.struct_passwd | None, death_signal: int, parent_pid: int) -> None:
    """Runs in the forked child before exec: drop privileges, then arm the parent-death signal.

    The death signal must be armed after setuid: the kernel clears it on credential changes.
    """
    if run_as is not None:
        os.setgroups([])
        os.setgid(run_as.pw_gid)
        os.setuid(run_as.pw_uid)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
    # The parent may have died between fork and prctl; then nobody would ever signal us.
    if os.getppid() != parent_pid:
        os._exit(1)


def user_for_service(preferred: str) -> pwd.struct_passwd | None:
    """The account a service should run as: `preferred` when we are root, else ourselves.

    PostgreSQL refuses to run as root; every other service is simply better off without it.
    """
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(preferred)
    except KeyError as exc:
        raise ServiceError(
            f"running as root, but system user {preferred!r} does not exist "
            f"(install the Debian package that creates it, or run as a normal user)"
        ) from exc


def grant_traverse(path: Path, user: pwd.struct_passwd | None) -> None:
    """Let `user` reach `path`: add search (x, not read) permission on our ancestor dirs.

    Temp dirs are created 0700; a service running under another account could not enter them.
    """
    if user is None:
        return
    for directory in [path, *path.parents]:
        info = directory.stat()
        if info.st_uid == os.geteuid() and not info.st_mode & 0o001:
            directory.chmod(info.st_mode | 0o001)


def chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


@dataclass
class ManagedProcess:
    """One long-running service process with its own log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    run_as: pwd.struct_passwd | None = None
    death_signal: int = signal.SIGKILL
    stop_signal: int = signal.SIGTERM
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        if self.alive():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self.env is None else self.env)
        parent_pid = os.getpid()
        with open(self.log_path, "ab") as log:
            try:
                self._popen = subprocess.Popen(
                    list(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.cwd,
                    # Own session: Ctrl-C in a terminal reaches only us, and we stop the
                    # services in order instead of all of them at once.
                    start_new_session=True,
                    preexec_fn=lambda: _child_setup(self.run_as, self.death_signal, parent_pid),
                )
            except FileNotFoundError as exc:
                raise ServiceError(f"{self.name}: executable not found: {self.argv[0]}") from exc
        _registry.add(self)

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the process to stop, wait up to `timeout`, then kill it."""
        self.request_stop()
        self.wait_stopped(timeout)

    def request_stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(self.stop_signal)

    def wait_stopped(self, timeout: float) -> None:
        """Wait for a requested stop; kill the process if it takes longer than `timeout`."""
        if self._popen is None:
            return
        try:
            self._popen.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.kill()
        _registry.discard(self)

    def kill(self) -> None:
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # The whole session: some services fork helpers of their own.
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(10)
        _registry.discard(self)

    def log_tail(self, lines: int = 20) -> str:
        try:
            content = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(content[-lines:])

    def failure(self, what: str) -> ServiceError:
        return ServiceError(
            f"{self.name}: {what}; log: {self.log_path}\n--- last lines ---\n{self.log_tail()}"
        )


class _Registry:
    """Processes still running, stopped at interpreter exit in reverse start order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[ManagedProcess] = []

    def add(self, proc: ManagedProcess) -> None:
        with self._lock:
            if proc not in self._procs:
                self._procs.append(proc)

    def discard(self, proc: ManagedProcess) -> None:
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)

    def stop_all(self) -> None:
        with self._lock:
            procs = list(reversed(self._procs))
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)


_registry = _Registry()
atexit.register(_registry.stop_all)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: ManagedProcess | None = None,
    interval: float = 0.2,
) -> None:
    """Poll `check` until it returns True; fail early, with the log, if `process` died."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if process is not None and not process.alive():
            raise process.failure(f"exited with code {process.returncode()} while {what}")
        try:
            if check():
                return
        except ServiceError:
            raise
        except Exception as exc:  # readiness probes fail in many ways until the service is up
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            if process is not None:
                raise process.failure(f"not ready after {timeout:.0f}s while {what}{detail}")
            raise ServiceError(f"timed out after {timeout:.0f}s while {what}{detail}")
        time.sleep(interval)


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on `host`, never the same one twice in this process."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise ServiceError("could not find a free TCP port")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_get(
    port: int, path: str, timeout: float = 3.0, host: str = "127.0.0.1",
    context: ssl.SSLContext | None = None,
) -> tuple[int, str]:
    """Status and body of one GET (health endpoints of local services); HTTPS with `context`."""
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
        if context is not None else http.client.HTTPConnection(host, port, timeout=timeout)
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()
