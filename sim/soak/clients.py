# sim/soak/clients.py: the soak's clients on the wire: one request on a keep-alive connection,
# judged; one stream request left early on purpose; and a plain call for the control endpoints.
#
# Rules: every request gets a Result, whatever happens on the socket. A request is only ever sent
# on a connection that was open when it was written: one the gateway closed between two responses
# is noticed before reuse, as HTTP clients do, and counted in `closed_after` by what the last
# response on it was ("ok", "error_event" or "other"). An `abort` client sends a stream request on
# a fresh connection and leaves right after sending, after the response head, or after the first
# body bytes (ABORT_STAGES), by FIN or by RST, in turn.
from __future__ import annotations

import asyncio
import random
import socket
import struct
import time

from sim.loadgen import request_bytes
from sim.soak.answers import CutError, check_body, read_body, read_head
from sim.soak.mix import ABORT_STAGES, CLIENT_TIMEOUT_S, HEAD_LIMIT, Kind
from sim.soak.verdicts import Result


async def http_call(host: str, port: int, method: str, path: str, body: bytes | None = None,
                    timeout: float = 5.0) -> tuple[int, bytes]:  # fmt: skip
    """One request on a fresh connection: (status, body)."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT)
        try:
            headers = [("connection", "close")]
            if body is not None:
                headers.append(("content-type", "application/json"))
            writer.write(request_bytes(method, path, f"{host}:{port}", headers, body or b""))
            status, head = await read_head(reader)
            return status, await read_body(reader, head)
        finally:
            writer.close()

    async with asyncio.timeout(timeout):
        return await go()


class ClientConn:
    """A client's keep-alive connection to the gateway, and how its last response went."""

    __slots__ = ("last", "reader", "writer")

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last = ""  # "ok", "error_event" or "other"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def exchange(host: str, port: int, kind: Kind, conn: ClientConn, r: Result, payload: bytes, expected: str,
                   closed_after: dict[str, int]) -> None:  # fmt: skip
    """Send one request on `conn` (opened if needed) and judge the answer into `r`."""
    if conn.writer is not None and conn.reader is not None:
        await asyncio.sleep(0)  # let the loop take in a close that arrived with the last response
        if conn.reader.at_eof() or conn.reader.exception() is not None:
            # The gateway closed it between two responses (it does after a stream it had to
            # end with an error): as HTTP clients do, notice that before reusing it, not after.
            closed_after[conn.last] = closed_after.get(conn.last, 0) + 1
            conn.close()
    if conn.writer is None:
        try:
            conn.reader, conn.writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT)
        except OSError as exc:
            r.outcome = f"connect failed ({exc.strerror or type(exc).__name__})"
            return
    reader, writer = conn.reader, conn.writer
    assert reader is not None
    keep = False
    try:
        writer.write(payload)
        r.status, headers = await read_head(reader)
        r.provider = headers.get("x-llm-edge-provider", "")
        r.cache = headers.get("x-cache", "")
        keep = headers.get("connection", "").lower() != "close"
        try:
            body = await read_body(reader, headers)
            cut = False
        except CutError:
            body, cut = b"", True
            keep = False
        if r.status != 200:
            r.outcome = f"status {r.status}"
        elif cut:
            r.outcome = "cut"
        else:
            r.outcome = check_body(kind, body, expected)
    except CutError as exc:
        r.outcome = str(exc)
    except (ConnectionError, OSError) as exc:
        r.outcome = f"connection error ({type(exc).__name__})"
    except ValueError as exc:  # also a bad chunk size or content-length
        keep = False
        r.outcome = f"bad: malformed response ({exc})"
    finally:
        conn.last = "ok" if r.outcome == "ok" else "error_event" if r.outcome == "error_event" else "other"
        if not keep:
            conn.close()


async def one(host: str, port: int, kind: Kind, conn: ClientConn, payload: bytes, expected: str,
              closed_after: dict[str, int]) -> Result:  # fmt: skip
    """One request of `kind`, bounded by CLIENT_TIMEOUT_S."""
    r = Result(kind.name, time.monotonic())
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the inner
        # call finishes, and then Ctrl-C would not stop the soak.
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            await exchange(host, port, kind, conn, r, payload, expected, closed_after)
    except TimeoutError:
        r.outcome = f"timeout after {CLIENT_TIMEOUT_S:g} s"
        conn.close()
    r.t1 = time.monotonic()
    return r


async def abort(host: str, port: int, payload: bytes, n: int, rng: random.Random) -> Result:
    """Abort number `n`: a stream request on a fresh connection, left early (stage and FIN/RST by turn)."""
    stage = ABORT_STAGES[n % len(ABORT_STAGES)]
    rst = (n // len(ABORT_STAGES)) % 2 == 1
    r = Result("abort", time.monotonic(), outcome="aborted", stage=stage)
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT)
        writer.write(payload)
        if stage == "after_send":
            await asyncio.sleep(rng.random() * 0.004)  # somewhere between parsing and the first byte
        else:
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                r.status, headers = await read_head(reader)
                r.provider = headers.get("x-llm-edge-provider", "")
                if stage == "mid_body":
                    await reader.read(512)
    except TimeoutError:
        r.outcome = "timeout before the planned abort"
    except (CutError, ConnectionError, OSError, ValueError) as exc:
        r.outcome = f"failed before the planned abort ({exc})"
    finally:
        if writer is not None:
            if rst:
                sock = writer.get_extra_info("socket")
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except (OSError, AttributeError):
                    pass
                writer.transport.abort()
            else:
                writer.close()
    r.t1 = time.monotonic()
    return r
