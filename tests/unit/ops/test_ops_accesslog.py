"""JSON-lines access log: settings, the bounded buffer, formatting, one write per flush, the file sink."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.accesslog import FIELDS, ROW, AccessLog, AccessLogSettings, FileSink
from proxy.cache.policy import Outcome
from proxy.errors import ConfigError

WALL = 1_754_049_600.0  # 2025-08-01T12:00:00Z
MONO = 5_000.0  # the monotonic clock at the same instant


def row(**overrides: Any) -> tuple[Any, ...]:
    values = {
        "t_end": MONO - 1.5, "request_id": "req_1", "endpoint": "/v1/chat/completions", "model": "fast",
        "provider": "openai", "route": 2, "status": 200, "stream": True, "latency_s": 0.812345,
        "overhead_s": 0.0000412, "ttfb_s": 0.095, "tokens_in": 120, "tokens_out": 512, "cost_nusd": 4_456_000,
        "cache": "miss", "attempts": 1, "key": "team-a", "trace": None,
    }  # fmt: skip
    values.update(overrides)
    assert list(values) == list(ROW)
    return tuple(values.values())


class Sink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.writes.append(data)

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for data in self.writes for line in data.splitlines()]


def make(max_pending: int = 100) -> tuple[AccessLog, Sink]:
    sink = Sink()
    return AccessLog(AccessLogSettings("-", max_pending), sink=sink), sink


# -- settings --------------------------------------------------------------------------------------


def test_settings(tmp_path: Path) -> None:
    assert not AccessLogSettings.from_table(None).enabled
    assert not AccessLogSettings.from_table({}).enabled
    assert not AccessLogSettings.from_table({"access_log": ""}).enabled
    assert AccessLogSettings.from_table({"access_log": "-"}) == AccessLogSettings("-", 20_000)
    path = str(tmp_path / "access.jsonl")
    assert AccessLogSettings.from_table({"access_log": path, "access_log_buffer": 5}) == AccessLogSettings(path, 5)
    assert AccessLogSettings.from_table({"access_log": "-", "level": "info"}, ignore=("level",)).enabled


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"access_log": 1}, "log.access_log: expected a file path"),
        ({"access_log": "/no/such/dir/access.log"}, "log.access_log: no such directory: /no/such/dir"),
        ({"access_log": "-", "access_log_buffer": 0}, "log.access_log_buffer: expected an integer from 1"),
        ({"access_log": "-", "access_log_buffer": True}, "log.access_log_buffer: expected an integer"),
        ({"access_log": "-", "access_log_buffer": 1.5}, "log.access_log_buffer: expected an integer"),
        ({"level": "info"}, "log.level: unknown key"),
    ],
)
def test_settings_errors_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        AccessLogSettings.from_table(table)
    assert str(info.value).startswith(message)


def test_settings_refuse_a_directory_and_a_non_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="log.access_log: is a directory"):
        AccessLogSettings.from_table({"access_log": str(tmp_path)})
    with pytest.raises(ConfigError, match="log: expected a table"):
        AccessLogSettings.from_table([])  # type: ignore[arg-type]


def test_an_unconfigured_log_needs_a_sink() -> None:
    with pytest.raises(ValueError):
        AccessLog(AccessLogSettings())


# -- lines -----------------------------------------------------------------------------------------


def test_a_line_has_exactly_the_documented_fields() -> None:
    log, sink = make()
    log.append(row())
    assert log.flush(WALL, MONO) == 1
    assert len(sink.writes) == 1 and sink.writes[0].endswith(b"\n") and sink.writes[0].count(b"\n") == 1
    line = sink.lines()[0]
    assert tuple(line) == FIELDS
    assert line == {
        "time": "2025-08-01T11:59:58.500Z", "request_id": "req_1", "endpoint": "/v1/chat/completions",
        "model": "fast", "provider": "openai", "route": 2, "status": 200, "stream": True, "latency_us": 812345,
        "overhead_us": 41, "ttfb_us": 95000, "tokens_in": 120, "tokens_out": 512, "cost_usd": 0.004456,
        "cache": "miss", "attempts": 1, "key": "team-a", "trace_id": None, "span_id": None,
    }  # fmt: skip
    for forbidden in ("prompt", "messages", "content", "completion", "authorization", "api_key"):
        assert all(forbidden not in field for field in FIELDS)


def test_absent_values_are_null_and_outcomes_are_normalised() -> None:
    log, sink = make()
    log.append(row(provider="", route=-1, status=0, ttfb_s=0.0, cache="", key="", request_id=b"req-bytes"))
    log.append(row(cache=Outcome.HIT, request_id=""))
    log.append(row(cache=b"BYPASS", stream=0, cost_nusd=0))
    log.flush(WALL, MONO)
    first, second, third = sink.lines()
    assert first["provider"] is first["route"] is first["ttfb_us"] is first["cache"] is first["key"] is None
    assert first["status"] == 0 and first["request_id"] == "req-bytes"
    assert second["cache"] == "hit" and second["request_id"] is None
    assert third["cache"] == "bypass" and third["stream"] is False and third["cost_usd"] == 0.0


def test_wall_time_comes_from_the_clocks_read_at_flush() -> None:
    log, sink = make()
    for t in (MONO - 3600.0, MONO - 0.0004, MONO):
        log.append(row(t_end=t))
    log.flush(WALL, MONO)
    assert [line["time"] for line in sink.lines()] == [
        "2025-08-01T11:00:00.000Z", "2025-08-01T11:59:59.999Z", "2025-08-01T12:00:00.000Z"
    ]  # fmt: skip
    expected = datetime.datetime.fromtimestamp(WALL - 3600.0, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert sink.lines()[0]["time"].startswith(expected)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.text(), st.text(), st.text()), min_size=1, max_size=20))
def test_any_strings_make_one_valid_json_line_each(values: list[tuple[str, str, str]]) -> None:
    log, sink = make()
    for request_id, model, key in values:
        log.append(row(request_id=request_id, model=model, key=key))
    assert log.flush(WALL, MONO) == len(values)
    data = sink.writes[0]
    assert data.count(b"\n") == len(values)  # a newline in a value is escaped, never raw
    for (request_id, model, key), line in zip(values, sink.lines()):
        assert (line["request_id"], line["model"], line["key"]) == (request_id or None, model or None, key or None)


# -- buffer and flush -------------------------------------------------------------------------------


def test_the_buffer_is_bounded_and_drops_are_counted() -> None:
    log, sink = make(max_pending=3)
    for i in range(5):
        log.append(row(request_id=f"r{i}"))
    assert len(log.pending) == 3 and log.dropped == 2
    assert log.flush(WALL, MONO) == 3
    assert [line["request_id"] for line in sink.lines()] == ["r0", "r1", "r2"]
    log.append(row(request_id="r5"))  # room again after a flush
    assert log.flush(WALL, MONO) == 1
    assert (log.lines, log.dropped, log.write_errors) == (4, 2, 0)
    assert "dropped=2" in repr(log)


def test_one_write_per_flush_and_nothing_when_empty() -> None:
    log, sink = make()
    assert log.flush(WALL, MONO) == 0 and sink.writes == []
    for i in range(50):
        log.append(row(request_id=f"r{i}"))
    assert log.flush(WALL, MONO) == 50
    assert len(sink.writes) == 1 and len(sink.lines()) == 50


def test_flush_in_chunks_keeps_order() -> None:
    log, sink = make()
    for i in range(10):
        log.append(row(request_id=f"r{i}"))
    assert log.flush(WALL, MONO, max_lines=4) == 4
    assert len(log.pending) == 6
    log.append(row(request_id="r10"))
    assert log.flush(WALL, MONO, max_lines=4) == 4
    assert log.flush(WALL, MONO, max_lines=4) == 3
    assert not log.pending
    assert [line["request_id"] for line in sink.lines()] == [f"r{i}" for i in range(11)]
    assert len(sink.writes) == 3


def test_a_failed_write_is_counted_not_raised() -> None:
    def broken(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    log = AccessLog(AccessLogSettings("-"), sink=broken)
    log.append(row())
    log.append(row())
    assert log.flush(WALL, MONO) == 0
    assert (log.lines, log.dropped, log.write_errors) == (0, 2, 1)
    assert not log.pending


def test_a_malformed_row_is_skipped_and_counted() -> None:
    log, sink = make()
    log.append(row(request_id="good-1"))
    log.append(("too", "short"))
    log.append(row(latency_s="not a number"))
    log.append(row(request_id=object()))
    log.append(row(request_id="good-2"))
    assert log.flush(WALL, MONO) == 2
    assert [line["request_id"] for line in sink.lines()] == ["good-1", "good-2"]
    assert log.dropped == 3

    only_bad, bad_sink = make()
    only_bad.append(("x",))
    assert only_bad.flush(WALL, MONO) == 0 and bad_sink.writes == [] and only_bad.dropped == 1


# -- the file sink ----------------------------------------------------------------------------------


def test_file_sink_appends_and_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    path.write_bytes(b'{"earlier":1}\n')
    sink = FileSink(str(path))
    log = AccessLog(AccessLogSettings(str(path)), sink=sink.write)
    log.append(row(request_id="a"))
    log.flush(WALL, MONO)
    assert path.read_bytes().startswith(b'{"earlier":1}\n{"time"')
    assert oct(os.stat(path).st_mode & 0o777) in (oct(0o644), oct(0o640), oct(0o600))  # not world-writable
    rotated = tmp_path / "access.jsonl.1"
    path.rename(rotated)
    sink.reopen()
    log.append(row(request_id="b"))
    log.flush(WALL, MONO)
    assert b'"request_id":"a"' in rotated.read_bytes()
    assert orjson.loads(path.read_bytes())["request_id"] == "b"
    sink.close()
    assert sink.fd == -1 and "access.jsonl" in repr(sink)


def test_default_sink_opens_the_configured_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AccessLog(AccessLogSettings(str(path)))
    log.append(row())
    assert log.flush(WALL, MONO) == 1
    assert orjson.loads(path.read_bytes())["model"] == "fast"


def test_stderr_sink(capfd: pytest.CaptureFixture[str]) -> None:
    sink = FileSink("-")
    log = AccessLog(AccessLogSettings("-"), sink=sink.write)
    log.append(row(request_id="to-stderr"))
    log.flush(WALL, MONO)
    sink.close()  # never closes fd 2
    err = capfd.readouterr().err
    assert orjson.loads(err)["request_id"] == "to-stderr"
    os.fstat(2)


# -- trace ids and OTLP logs ------------------------------------------------------------------------

TRACE = (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 0, 1)


def test_every_line_has_its_trace_id_column() -> None:
    log, sink = make()
    log.append(row(trace=TRACE))
    log.append(row()[:17])  # a row from before the column: still a line, with no trace id
    log.flush(WALL, MONO)
    traced, untraced = sink.lines()
    assert (traced["trace_id"], traced["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert untraced["trace_id"] is None and list(untraced) == list(FIELDS)


def test_lines_also_go_out_as_otlp_records_or_only_there() -> None:
    batches: list[tuple[list[dict[str, Any]], float]] = []
    sink = Sink()
    log = AccessLog(AccessLogSettings("-"), sink=sink, otlp=lambda lines, offset: batches.append((lines, offset)))
    log.append(row(trace=TRACE, t_end=MONO - 2.0))
    assert log.flush(WALL, MONO) == 1
    [(lines, offset)] = batches
    assert offset == WALL - MONO and lines[0]["t_end"] == MONO - 2.0
    assert lines[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and len(sink.lines()) == 1
    only = AccessLog(AccessLogSettings(None), otlp=lambda lines, offset: batches.append((lines, offset)))
    only.append(row())
    assert only.flush(WALL, MONO) == 1 and len(batches) == 2 and only.lines == 1

    def broken(lines: list[dict[str, Any]], offset: float) -> None:
        raise RuntimeError("exporter down")

    failing = AccessLog(AccessLogSettings(None), otlp=broken)
    failing.append(row())
    failing.flush(WALL, MONO)  # never raises into the tick
    assert failing.write_errors == 1
    with pytest.raises(ValueError):
        AccessLog(AccessLogSettings(None))
