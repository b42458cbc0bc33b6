"""`--workers N`: N gateway processes on one port, so every core serves.

The parent binds N listening sockets to the same address with SO_REUSEPORT (the first one
picks the port when it is 0), maps the shared route table, and forks. Each worker serves on
its own socket; the kernel spreads new connections over them. The parent only relays
signals: SIGTERM/SIGINT to drain and stop, SIGHUP to reload. It exits 0 once every worker
has, and stops the others if one dies.

Hash randomisation must be the same in every worker for the shared rows' identities to
match: forking (not spawning) guarantees it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from proxy import config, server
from proxy.config import Settings
from proxy.shared import SharedRoutes

log = logging.getLogger("llm_edge")


def run(settings: Settings, workers: int, loop_kind: str, config_path: str | None, listen: str | None) -> int:
    """Fork the workers, relay signals, and return the exit code."""
    host, port = settings.server.host, settings.server.port
    sockets = []
    try:
        for _ in range(workers):
            sock = _listening_socket(host, port)
            port = sock.getsockname()[1]  # port 0: the first socket chose it; the others share it
            sockets.append(sock)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror)
        return 1
    shared = SharedRoutes(workers, capacity=max(64, 2 * len(settings.routes)))

    def reload() -> Settings:
        fresh = config.with_workers(config.load(config_path), workers)  # each worker keeps its share of the limits
        return config.with_listen(fresh, listen) if listen else fresh

    children: dict[int, int] = {}
    for index, sock in enumerate(sockets):
        pid = os.fork()
        if pid == 0:  # the worker
            for other in sockets:
                if other is not sock:
                    other.close()
            shared.worker = index
            code = 1
            try:
                code = server.run(settings, loop_kind, reload=reload, sock=sock, worker=index, shared=shared)
            finally:
                os._exit(code)
        children[pid] = index
    for sock in sockets:
        sock.close()
    print(f"llm-edge listening on {host}:{port}", flush=True)  # the same first line, whatever the workers
    log.info("%d workers share %s:%d", workers, host, port)

    def relay(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, relay)
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            worst = worst or (code if code > 0 else 1)
            log.error("worker exited with %d; stopping the others", code)
            relay(signal.SIGTERM, None)
    return worst


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: llm-edge --workers N")
