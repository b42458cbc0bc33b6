"""The API formats the gateway speaks, as small integers: for clients and providers alike."""

from __future__ import annotations

OPENAI, ANTHROPIC = 0, 1
