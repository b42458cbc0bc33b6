"""The gateway's paths: what each serves, in which API's shape, and whether it needs a gateway key."""

from __future__ import annotations

from urllib.parse import unquote

from proxy.apis import ANTHROPIC, OPENAI
from proxy.errors import ConnectNotAllowedError, MethodNotAllowedError, NotFoundError

# path: (method, API endpoint (starts with "/") or admin page, the client's API, whether a key is required)
ENDPOINTS: dict[bytes, tuple[bytes, str, int, bool]] = {
    b"/v1/chat/completions": (b"POST", "/chat/completions", OPENAI, True),
    b"/v1/messages": (b"POST", "/messages", ANTHROPIC, True),
    b"/v1/embeddings": (b"POST", "/embeddings", OPENAI, True),
    b"/v1/models": (b"GET", "models", OPENAI, True),
    b"/healthz": (b"GET", "healthz", OPENAI, False),
    b"/stats": (b"GET", "stats", OPENAI, False),
    b"/metrics": (b"GET", "metrics", OPENAI, False),
    b"/dashboard": (b"GET", "dashboard", OPENAI, False),
    b"/dashboard.json": (b"GET", "dashboard.json", OPENAI, False),
}
# (method, path) -> what `route` answers for it, for the requests nearly all traffic is
USUAL: dict[tuple[bytes, bytes], tuple[str, int, bool, str]] = {
    (method, path): (endpoint, api, guarded, "") for path, (method, endpoint, api, guarded) in ENDPOINTS.items()
}
_MODEL = (b"GET", "model", OPENAI, True)  # GET /v1/models/{id}: guarded like the list


def route(method: bytes, url: bytes) -> tuple[str, int, bool, str]:
    """(endpoint or page, the client's API, whether a key is required, the path's argument) for a
    request, or the error that says why nothing here serves it."""
    if method == b"CONNECT":
        raise ConnectNotAllowedError("CONNECT is not supported: llm-edge is not a forward proxy")
    query = url.find(b"?")
    path = url[:query] if query >= 0 else url
    entry = ENDPOINTS.get(path)
    argument = url[query + 1 :].decode("latin-1") if query >= 0 else ""  # a page's query (/healthz?detail=1)
    if entry is None:
        if path.startswith(b"/admin/"):
            return "admin", OPENAI, False, path.decode("latin-1")  # the keys API: every method, its own checks
        if not path.startswith(b"/v1/models/"):
            raise NotFoundError(f"unknown path {path.decode('latin-1')[:200]!r}")
        entry = _MODEL
        argument = unquote(path[11:].decode("utf-8", "replace"))  # the SDKs escape the "/" of provider/model
    allowed, endpoint, api, guarded = entry
    if method != allowed and not (allowed == b"GET" and method == b"HEAD"):
        raise MethodNotAllowedError(f"{method.decode('latin-1')} is not allowed here; use {allowed.decode()}")
    return endpoint, api, guarded, argument
