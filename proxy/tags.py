"""Attribution: who a request is for (its tags and end user), and spend per tag for `/metrics`. Pure.

- `x-llm-edge-tags: team=search,feature=autocomplete`: comma-separated `name=value` pairs. At most
  `max_tags` pairs are kept and a pair longer than `max_pair_bytes` is dropped; names and values
  are limited to letters, digits and `_ . : / -` (the rest of the pair is dropped, not the
  request: attribution never fails a request).
- The end user: OpenAI's `user` (or its newer `safety_identifier`), Anthropic's
  `metadata.user_id`. `end_user` looks for them only when the body can contain them, so a body
  without them costs one substring search and no parse.
- `TagSpend` counts requests, tokens and spend per `(tag, value)`, with at most `max_series`
  distinct series; later values count into `value="other"` of their tag (and unknown tags, once
  full, into `tag="other"`), so a client inventing values cannot grow `/metrics`.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.apis import ANTHROPIC

TAGS_HEADER = b"x-llm-edge-tags"
OTHER = "other"
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:/-")
# A body naming an end user holds one of these; `"role":"user"` does not (a quote follows "user").
_USER_MARKS = (b'"user":', b'"user" :', b'"user_id"', b'"safety_identifier"')


def parse_tags(raw: bytes | None, max_tags: int = 8, max_pair_bytes: int = 64) -> tuple[tuple[str, str], ...]:
    """The well-formed pairs of an `x-llm-edge-tags` value, first ones first, duplicates' first value."""
    if not raw:
        return ()
    out: list[tuple[str, str]] = []
    seen: set[bytes] = set()
    for part in raw.split(b",", max_tags * 4):  # a bounded split: a huge header is not walked in full
        if len(out) >= max_tags:
            break
        pair = part.strip()
        if len(pair) > max_pair_bytes:
            continue
        name, eq, value = pair.partition(b"=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value or name in seen:
            continue
        if not _SAFE.issuperset(name) or not _SAFE.issuperset(value):
            continue
        seen.add(name)
        out.append((name.decode("ascii"), value.decode("ascii")))
    return tuple(out)


def end_user(api: int, body: bytes, max_bytes: int = 64) -> str | None:
    """The end user a request body names, cut to `max_bytes` and stripped of unsafe characters."""
    if not any(mark in body for mark in _USER_MARKS):
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return end_user_of(api, doc, max_bytes)


def end_user_of(api: int, doc: Any, max_bytes: int = 64) -> str | None:
    """Like `end_user`, from an already parsed body."""
    if not isinstance(doc, dict):
        return None
    value: Any = None
    if api == ANTHROPIC:
        metadata = doc.get("metadata")
        if isinstance(metadata, dict):
            value = metadata.get("user_id")
    else:
        value = doc.get("user")
        if not isinstance(value, str) or not value:
            value = doc.get("safety_identifier")
    if not isinstance(value, str) or not value:
        return None
    cleaned = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "?" for c in value[:max_bytes])
    return cleaned


class TagSpend:
    """Requests, tokens and spend (pico-dollars) per (tag, value), with capped cardinality."""

    __slots__ = ("max_series", "names", "series")

    def __init__(self, max_series: int = 100) -> None:
        self.max_series = max_series
        self.series: dict[tuple[str, str], list[int]] = {}  # -> [requests, input tokens, output tokens, pusd]
        self.names: set[str] = set()  # tag names with a series of their own

    def record(self, tags: tuple[tuple[str, str], ...], in_tokens: int, out_tokens: int, spend_pusd: int) -> None:
        """Count one finished request against each of its tags."""
        for tag in tags:
            row = self.series.get(tag)
            if row is None:
                row = self._row_for(tag)
            row[0] += 1
            row[1] += in_tokens
            row[2] += out_tokens
            row[3] += spend_pusd

    def _row_for(self, tag: tuple[str, str]) -> list[int]:
        series = self.series
        if len(series) < self.max_series:
            key = tag
            self.names.add(tag[0])
        elif tag[0] in self.names:
            key = (tag[0], OTHER)
        else:
            key = (OTHER, OTHER)
        row = series.get(key)
        if row is None:
            row = series[key] = [0, 0, 0, 0]  # "other" rows may pass max_series by one per tag name
        return row

    def metric_lines(self) -> list[str]:
        """Prometheus text lines (HELP, TYPE, samples) for `/metrics`; empty when nothing was tagged."""
        if not self.series:
            return []
        rows = sorted(self.series.items())
        out = [
            "# HELP llm_edge_tag_requests_total Requests per x-llm-edge-tags tag and value.",
            "# TYPE llm_edge_tag_requests_total counter",
        ]
        out += [f"llm_edge_tag_requests_total{_labels(k)} {v[0]}" for k, v in rows]
        out += [
            "# HELP llm_edge_tag_tokens_total Tokens per x-llm-edge-tags tag and value.",
            "# TYPE llm_edge_tag_tokens_total counter",
        ]
        for k, v in rows:
            out.append(f"llm_edge_tag_tokens_total{_labels(k, _INPUT)} {v[1]}")
            out.append(f"llm_edge_tag_tokens_total{_labels(k, _OUTPUT)} {v[2]}")
        out += [
            "# HELP llm_edge_tag_spend_usd_total Spend in USD per x-llm-edge-tags tag and value.",
            "# TYPE llm_edge_tag_spend_usd_total counter",
        ]
        out += [f"llm_edge_tag_spend_usd_total{_labels(k)} {v[3] / 1e12:.12g}" for k, v in rows]
        return out

    def render(self) -> bytes:
        """`metric_lines` as bytes ready to append to the `/metrics` body."""
        lines = self.metric_lines()
        return ("\n".join(lines) + "\n").encode() if lines else b""


_INPUT, _OUTPUT = ',kind="input"', ',kind="output"'


def _labels(key: tuple[str, str], extra: str = "") -> str:
    return f'{{tag="{_escape(key[0])}",value="{_escape(key[1])}"{extra}}}'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
