"""`llm-edge --check-config --probe`: one cheap authenticated call per provider, and a table.

The call is `GET <base_url>/models` with the provider's own credentials (OpenAI, Anthropic,
vLLM, llama.cpp and Ollama all serve it, and none bills it). It tells apart what the gateway
would otherwise only learn from its first real request: the host does not answer, the key is
rejected, or the base URL points at the wrong place. Providers are probed in parallel threads.

What is printed: name, kind, base URL, reachability, auth, the status, and the time taken. Never
a key (the request's auth line comes from the precomputed `fixed_headers`, which nothing here
prints) and never a response body.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from proxy.config import ProviderSettings, Settings

MAX_TIMEOUT_S = 10.0


@dataclass(slots=True, frozen=True)
class ProbeResult:
    """What probing one provider found."""

    name: str
    kind: str
    base_url: str
    reachable: bool
    auth: str  # "ok", "rejected", "no key", "unknown" or "-" (not reached)
    status: int  # 0: no HTTP answer
    detail: str
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        """Reached, and the key (if any is needed) was accepted."""
        return self.reachable and self.auth in ("ok", "not needed")


def probe_provider(provider: ProviderSettings, unusable_reason: str | None = None,
                   timeout_s: float = MAX_TIMEOUT_S) -> ProbeResult:  # fmt: skip
    """GET the provider's model list once and classify the answer."""
    started = time.perf_counter()
    timeout = min(timeout_s, provider.connect_timeout_s)
    status = 0
    try:
        conn: http.client.HTTPConnection
        if provider.tls:
            context = ssl.create_default_context(cafile=provider.ca_file)
            conn = http.client.HTTPSConnection(provider.host, provider.port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(provider.host, provider.port, timeout=timeout)
        try:
            conn.putrequest("GET", provider.path("/models").decode("ascii"), skip_host=True,
                            skip_accept_encoding=True)  # fmt: skip
            for line in provider.fixed_headers.decode("latin-1").split("\r\n"):
                name, sep, value = line.partition(": ")
                if sep:
                    conn.putheader(name, value)
            conn.putheader("accept", "application/json")
            conn.endheaders()
            response = conn.getresponse()
            status = response.status
            response.read(64 * 1024)  # drained, never shown
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        reason = "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else type(exc).__name__
        text = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or reason
        return ProbeResult(provider.name, provider.kind, provider.base_url, False, "-", 0, f"not reached: {text}",
                           _ms(started))  # fmt: skip
    auth, detail = _classify(provider, status, unusable_reason)
    return ProbeResult(provider.name, provider.kind, provider.base_url, True, auth, status, detail, _ms(started))


def _classify(provider: ProviderSettings, status: int, unusable_reason: str | None) -> tuple[str, str]:
    has_key = provider.api_key is not None
    if 200 <= status < 300:
        if has_key:
            return "ok", "models listed"
        return ("not needed" if provider.kind == "local" else "unknown"), "models listed without a key"
    if status in (401, 403):
        if not has_key:
            return "no key", unusable_reason or "the provider wants a key and none is configured"
        return "rejected", "the provider rejected the configured key"
    if status == 404:
        return "unknown", "no models endpoint here: check base_url (it should end with the version prefix, e.g. /v1)"
    return "unknown", f"unexpected status {status}"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)


def probe_all(settings: Settings, timeout_s: float = MAX_TIMEOUT_S) -> list[ProbeResult]:
    """Probe every configured provider, in parallel; results in config order."""
    providers = settings.providers
    if not providers:
        return []
    unusable = dict(settings.unusable)
    with ThreadPoolExecutor(max_workers=min(8, len(providers))) as pool:
        futures = [pool.submit(probe_provider, p, unusable.get(p.id), timeout_s) for p in providers]
        return [f.result() for f in futures]


def table(results: Sequence[ProbeResult]) -> str:
    """The results as an aligned text table."""
    header = ("provider", "kind", "base_url", "reachable", "auth", "status", "ms", "detail")
    rows = [header] + [
        (r.name, r.kind, r.base_url, "yes" if r.reachable else "no", r.auth, str(r.status or "-"), f"{r.elapsed_ms:g}",
         r.detail)
        for r in results
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows)
