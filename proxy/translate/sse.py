# proxy/translate/sse.py: incremental server-sent-events parser for upstream streams.
#
# Owns: turning raw upstream body bytes, cut at any byte boundary, into complete
# (event name, data) pairs, following the WHATWG event-stream rules that both official
# SDKs use (API-FORMATS §4.4): lines end in LF, CRLF or CR; a line starting with ":" is
# a comment; one space after the colon is stripped; several data lines join with "\n";
# a blank line dispatches; an event without data lines is dropped; a leading BOM is
# ignored; `id` and `retry` are parsed away and ignored.
#
# Rules: nothing here does I/O, decodes text or parses JSON. Event names and data stay
# bytes (orjson reads bytes directly). No rescanning: a partial line is kept
# aside and only the newly fed bytes are searched for line ends, so a long line arriving
# in many small reads costs O(total), not O(n²).
from __future__ import annotations

from proxy.errors import UpstreamProtocolError

BOM = b"\xef\xbb\xbf"
MAX_LINE_BYTES = 16 * 1024 * 1024  # one SSE line (one event's JSON): a provider sending more is broken

Event = tuple[bytes, bytes]  # (event name, b"" when absent; data)


class SSEParser:
    """Reassembles SSE events from arbitrarily split reads.

    `feed(data)` returns the events completed by `data` (often an empty list);
    `flush()` is for upstream EOF and completes a trailing event that lacks its blank line.
    """

    __slots__ = (
        "_data",
        "_event",
        "_first_line",
        "_max_line",
        "_partial",
        "_skip_lf",
    )

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max_line = max_line_bytes
        self._partial = bytearray()  # bytes of an unfinished line
        self._skip_lf = False  # previous read ended in CR: a leading LF belongs to it
        self._first_line = True  # a BOM may only appear before the first line
        self._event = b""
        self._data: list[bytes] = []

    @property
    def idle(self) -> bool:
        """True between events: nothing of a line or an event is held back."""
        return not self._partial and not self._data and not self._event and not self._skip_lf

    def feed(self, data: bytes) -> list[Event]:
        """Consume one upstream read; return the events it completes, in order."""
        if self._skip_lf:
            if not data:
                return []
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        if b"\r" in data:
            lines = self._split_cr(data)
        elif b"\n" in data:
            # LF-only fast path (what every provider sends): split() is ~4x cheaper than
            # splitlines(keepends=True) plus per-line terminator stripping (timeit, one event).
            lines = data.split(b"\n")
            tail = lines.pop()
            if self._partial:
                self._partial += lines[0]
                lines[0] = bytes(self._partial)
                self._partial.clear()
            if tail:
                self._partial += tail
        else:
            self._partial += data
            self._bounded()
            return []
        self._bounded()
        return self._lines(lines)

    def _bounded(self) -> None:
        if len(self._partial) > self._max_line:
            self._partial.clear()
            raise UpstreamProtocolError(f"the provider sent an SSE line over {self._max_line} bytes")

    def flush(self) -> list[Event]:
        """At upstream EOF: finish a trailing unterminated line and event (lenient)."""
        lines = [b""]
        if self._partial:
            lines.insert(0, bytes(self._partial))
            self._partial.clear()
        return self._lines(lines)

    # internal

    def _split_cr(self, data: bytes) -> list[bytes]:
        # Reads with CR or CRLF line ends. bytes.splitlines() splits on exactly \r, \n, \r\n.
        raw = data.splitlines(keepends=True)
        last = raw[-1]
        tail = b""
        if last[-1] not in (0x0A, 0x0D):
            tail = raw.pop()
        elif last[-1] == 0x0D:
            self._skip_lf = True  # an LF at the start of the next read belongs to this CR
        lines = [r[:-2] if r[-2:] == b"\r\n" else r[:-1] for r in raw]
        if self._partial and lines:
            self._partial += lines[0]
            lines[0] = bytes(self._partial)
            self._partial.clear()
        if tail:
            self._partial += tail
        return lines

    def _lines(self, lines: list[bytes]) -> list[Event]:
        if self._first_line and lines:
            self._first_line = False
            if lines[0].startswith(BOM):
                lines[0] = lines[0][3:]
        events: list[Event] = []
        event = self._event
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append((event, data[0] if len(data) == 1 else b"\n".join(data)))
                    data = []
                event = b""
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            elif line[0] == 0x3A:  # ":" comment
                continue
            else:
                field, _, value = line.partition(b":")
                if field == b"event":
                    event = value[1:] if value[:1] == b" " else value
                elif field == b"data":  # "data" with no colon: an empty data line
                    data.append(b"")
                # id, retry and unknown fields are ignored: the translators never need them.
        self._event = event
        self._data = data
        return events


class SSETranslator:
    """What both stream translators share: reading upstream SSE and ending the stream honestly.

    A subclass provides `_event(payload, out)` (one upstream event in, client bytes appended to
    `out`), `error(message, type)` (its format's error frame, setting `done`) and `EOF_ERROR`, the
    (message, type) of the error frame sent when the upstream stops before its terminator.
    """

    __slots__ = ()
    EOF_ERROR: tuple[str, str] = ("upstream stream ended early", "api_error")
    _parser: SSEParser
    done: bool

    def feed(self, data: bytes) -> bytes:
        """Consume one upstream read (any split); return bytes for the client, maybe b""."""
        if self.done:
            return b""
        events = self._parser.feed(data)
        if not events:
            return b""
        out: list[bytes] = []
        for _name, payload in events:
            self._event(payload, out)
            if self.done:
                break
        return b"".join(out)

    def close(self) -> bytes:
        """Upstream EOF. Returns an error frame if the stream had not ended cleanly."""
        if self.done:
            return b""
        out: list[bytes] = []
        for _name, payload in self._parser.flush():
            self._event(payload, out)
            if self.done:
                return b"".join(out)
        out.append(self.error(*self.EOF_ERROR))
        return b"".join(out)

    def error(self, message: str, type: str) -> bytes:  # noqa: A002 (the error's API-level name)
        raise NotImplementedError

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        raise NotImplementedError
