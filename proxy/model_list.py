"""The bodies of `GET /v1/models` in OpenAI's and Anthropic's shapes. Pure: built from names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def model_object(name: str, created: int) -> dict[str, object]:
    """One model in OpenAI's shape."""
    return {"id": name, "object": "model", "created": created, "owned_by": "llm-edge"}


def openai_models_body(names: Iterable[str], created: int) -> bytes:
    """The OpenAI list body, built once per configuration."""
    return orjson.dumps({"object": "list", "data": [model_object(name, created) for name in names]})


def anthropic_models_body(names: list[str], created: str) -> bytes:
    """The Anthropic list body."""
    data: list[dict[str, Any]] = [
        {"type": "model", "id": name, "display_name": name, "created_at": created} for name in names
    ]
    return orjson.dumps(
        {"data": data, "has_more": False, "first_id": names[0] if names else None, "last_id": names[-1] if names else None}
    )
