# Runtime control of a mock over HTTP, for out-of-process mocks (the simulator, macro benchmarks).
#
#   GET  /_mock/stats       counters and settings (MockServer.stats())
#   GET  /_mock/config      current settings
#   POST /_mock/config      JSON object of settings to change, e.g. {"error_rate": 1.0, "ttft_ms": 200};
#                           answers the new settings, or 400 {"error": "..."} and changes nothing
#   POST /_mock/reset       zero the counters
#   POST /_mock/close_idle  close idle keep-alive connections; answers {"closed": N}
#
# Control requests are answered at once, need no API key, and are not counted. Cold path.

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .wire import Reply, Request, json_reply

if TYPE_CHECKING:
    from .server import MockServer


def handle(srv: MockServer, req: Request) -> Reply:
    """Answer one `/_mock/...` request."""
    action = req.path[len("/_mock/") :].rstrip("/")
    methods = _ROUTES.get(action)
    if methods is None:
        return json_reply(404, {"error": f"unknown control endpoint {req.path}"})
    fn = methods.get(req.method)
    if fn is None:
        return json_reply(405, {"error": f"{req.method} not allowed on {req.path}"})
    try:
        return json_reply(200, fn(srv, req))
    except ValueError as exc:
        return json_reply(400, {"error": str(exc)})


def _stats(srv: MockServer, req: Request) -> Any:
    return srv.stats()


def _get_config(srv: MockServer, req: Request) -> Any:
    return srv.config.to_dict()


def _set_config(srv: MockServer, req: Request) -> Any:
    try:
        changes = orjson.loads(req.body or b"{}")
    except orjson.JSONDecodeError:
        raise ValueError("body is not valid JSON") from None
    if not isinstance(changes, dict):
        raise ValueError("body must be a JSON object of settings")  # noqa: TRY004 (ValueError -> 400)
    srv.apply_config(changes)
    return srv.config.to_dict()


def _reset(srv: MockServer, req: Request) -> Any:
    srv.reset_stats()
    return {"ok": True}


def _close_idle(srv: MockServer, req: Request) -> Any:
    return {"closed": srv.close_idle_connections()}


_ROUTES = {
    "stats": {"GET": _stats},
    "config": {"GET": _get_config, "POST": _set_config, "PUT": _set_config},
    "reset": {"POST": _reset},
    "close_idle": {"POST": _close_idle},
}
