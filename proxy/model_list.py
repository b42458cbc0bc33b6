"""The bodies of `GET /v1/models` in OpenAI's and Anthropic's shapes. Pure: built from names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def model_ids(settings: Any) -> list[str]:
    """What `GET /v1/models` lists, from `config.Settings`: the configured model names, then each
    provider's `provider/model` ids for the upstream models it names (`models`, then the models
    of its `[providers.prices]`), so a gateway used only by direct addressing lists them too."""
    ids = list(settings.models)
    seen = set(ids)
    for provider in settings.providers:
        for upstream in (*provider.models, *provider.prices):
            name = f"{provider.name}/{upstream}"
            if name not in seen:
                seen.add(name)
                ids.append(name)
    return ids


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
