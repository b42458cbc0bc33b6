"""Mock LLM providers (OpenAI and Anthropic wire formats) for tests, the simulator and benchmarks.

In process::

    server = await start_mock(MockConfig(kind="anthropic", ttft_ms=50))
    ...  # server.port, server.last_request, server.config.error_rate = 1.0
    await server.close()

From synchronous code: ``with MockThread(MockConfig()) as server: ...``.
Out of process: ``python -m mocks --listen 127.0.0.1:0`` prints ``HOST:PORT`` on its first line.
Module map: config (settings), wire (bytes and framing), content (deterministic output),
provider/openai_api/anthropic_api (the APIs), protocol (HTTP/1.1), server (lifecycle and counters),
control (/_mock endpoints), threaded (background-thread runner), __main__ (CLI).
"""

from __future__ import annotations

from .config import MockConfig
from .server import MockServer, start_mock
from .threaded import MockThread
from .wire import Request

__all__ = ["MockConfig", "MockServer", "MockThread", "Request", "start_mock"]
