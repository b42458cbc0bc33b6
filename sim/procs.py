# sim/procs.py: child processes that announce their address on stdout, and their shutdown.
#
# Rules: start children with sys.executable in their own session (a terminal Ctrl-C reaches
# only us; we stop them), and stop them by pid: SIGTERM, then SIGKILL after a grace period.
# Readiness is a signal, never a guessed sleep: the child's first stdout line (read with a
# deadline; EOF means it died), then, for HTTP servers, GET /healthz. stderr goes to a log
# file so a failed start can show its tail. After the first line a daemon thread drains
# stdout so a chatty child can never block on a full pipe.
from __future__ import annotations

import http.client
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)  # the repository root: holds sim/, proxy/, mocks/


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment plus ``extra``, with the repository root first on PYTHONPATH.

    So ``python -m proxy`` / ``-m mocks`` import this checkout whatever the working directory.
    """
    env = dict(os.environ)
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    return env


class StartError(RuntimeError):
    """A child did not become ready; the message includes the tail of its log."""


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` (or a line ending in it) → ``("127.0.0.1", 8080)``."""
    host, sep, port = text.strip().rsplit(None, 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"no HOST:PORT in {text!r}")
    return host, int(port)


class Child:
    """One child process (see module header)."""

    __slots__ = ("name", "argv", "env", "log_path", "proc", "_drain")

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None

    def start(self) -> Child:
        """Launch the child (returns at once; see :meth:`wait_line`)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                env=self.env, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The child's pid (0 before start)."""
        return self.proc.pid if self.proc is not None else 0

    def wait_line(self, timeout: float) -> str:
        """Return the child's first stdout line, waiting at most ``timeout`` seconds."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StartError(f"{self.name}: no address line within {timeout:g}s\n{self.log_tail()}")
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait()
                    raise StartError(f"{self.name} exited with {code} before it was ready\n{self.log_tail()}")
                buf += chunk
        self._drain = threading.Thread(target=self._drain_stdout, name=f"drain-{self.name}", daemon=True)
        self._drain.start()
        return buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip()

    def _drain_stdout(self) -> None:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the child's stderr log."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(f"  | {line}" for line in text.splitlines()[-lines:])

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM the child by pid, SIGKILL it after ``grace`` seconds; return its exit code."""
        proc = self.proc
        if proc is None:
            return None
        terminate(proc, grace)
        if self._drain is not None:
            self._drain.join(1.0)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode


def python_child(
    name: str, module: str, args: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
) -> Child:
    """A ``sys.executable -m module args...`` child logging to ``log_dir/name.log`` (not started).

    Its environment is :func:`child_env` of ``env``.
    """
    return Child(name, [sys.executable, "-m", module, *args], log_dir / f"{name}.log", child_env(env))


def http_request(
    method: str, host: str, port: int, path: str, body: bytes | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """One blocking request on a fresh connection (cold path only); returns ``(status, body)``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_get(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One blocking GET (cold path only); returns ``(status, body)``."""
    return http_request("GET", host, port, path, None, timeout)


def wait_healthy(child: Child, host: str, port: int, path: str = "/healthz", timeout: float = 10.0) -> None:
    """Wait until GET ``path`` answers 200.

    The child has printed its address, so its socket is listening and the first GET normally
    succeeds. A refused connection or a non-200 answer (still loading) is retried after a 10 ms
    poll interval until ``timeout``; the child dying ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            status, body = http_get(host, port, path, timeout=max(0.1, deadline - time.monotonic()))
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        if not child.alive():
            raise StartError(f"{child.name} exited while waiting for {path}\n{child.log_tail()}")
        if time.monotonic() >= deadline:
            raise StartError(f"{child.name}: {path} not healthy within {timeout:g}s (last: {last})\n{child.log_tail()}")
        time.sleep(0.01)  # poll interval for a server that is up but not ready, not a start-up guess


def terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a child by pid: SIGTERM, then SIGKILL if it is still there after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()
