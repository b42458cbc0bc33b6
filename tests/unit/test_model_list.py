"""model_list: what GET /v1/models lists, in OpenAI's and Anthropic's shapes."""

from __future__ import annotations

import orjson

from proxy import config, model_list


def settings() -> config.Settings:
    return config.from_table(
        {
            "server": {"listen": "127.0.0.1:0"},
            "providers": [
                {"name": "local", "kind": "local", "base_url": "http://127.0.0.1:9/v1", "models": ["llama", "qwen"]},
                {"name": "other", "kind": "local", "base_url": "http://127.0.0.1:10/v1"},
            ],
            "models": [
                {"name": "fast", "routes": [{"provider": "local", "model": "llama"}]},
                {"name": "local/llama", "routes": [{"provider": "local", "model": "llama"}]},
            ],
        },
        env={},
    )


def test_model_ids_configured_names_first_then_direct_ones_without_repeats() -> None:
    assert model_list.model_ids(settings()) == ["fast", "local/llama", "local/qwen"]


def test_openai_body() -> None:
    body = orjson.loads(model_list.openai_models_body(["a", "b"], 123))
    assert body == {
        "object": "list",
        "data": [
            {"id": "a", "object": "model", "created": 123, "owned_by": "llm-edge"},
            {"id": "b", "object": "model", "created": 123, "owned_by": "llm-edge"},
        ],
    }
    assert orjson.loads(model_list.openai_models_body([], 1)) == {"object": "list", "data": []}


def test_anthropic_body() -> None:
    body = orjson.loads(model_list.anthropic_models_body(["a", "b"], "2024-01-01T00:00:00Z"))
    assert body["first_id"] == "a" and body["last_id"] == "b" and body["has_more"] is False
    assert body["data"][0] == {"type": "model", "id": "a", "display_name": "a", "created_at": "2024-01-01T00:00:00Z"}


def test_anthropic_body_empty() -> None:
    body = orjson.loads(model_list.anthropic_models_body([], "t"))
    assert body == {"data": [], "has_more": False, "first_id": None, "last_id": None}
