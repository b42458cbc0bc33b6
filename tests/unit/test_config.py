"""Config loading: the README example works as written, and bad files name the bad key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy import config
from proxy.errors import ConfigError

EXAMPLE = textwrap.dedent(
    """
    [server]
    listen = "127.0.0.1:8080"

    [[providers]]
    name = "openai"
    kind = "openai"                 # openai | anthropic | local (any OpenAI-compatible server)
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"

    [[providers]]
    name = "local"
    kind = "local"
    base_url = "http://127.0.0.1:8000/v1"

    [[models]]
    name = "fast"                    # the model name clients send
    routes = [
      { provider = "local",  model = "llama-3.1-8b-instruct", input_per_mtok = 0.0,  output_per_mtok = 0.0 },
      { provider = "openai", model = "gpt-4o-mini",           input_per_mtok = 0.15, output_per_mtok = 0.60 },
    ]
    """
)


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> config.Settings:
    path = tmp_path / "llm-edge.toml"
    path.write_text(text)
    return config.load(str(path), env=env or {})


def test_the_readme_example_loads(tmp_path: Path) -> None:
    settings = load_text(tmp_path, EXAMPLE, {"OPENAI_API_KEY": "sk-test-123"})
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    openai, local = settings.providers
    assert openai.tls and openai.host == "api.openai.com" and openai.port == 443 and openai.base_path == "/v1"
    assert openai.api_key == "sk-test-123"
    assert b"authorization: Bearer sk-test-123\r\n" in openai.fixed_headers
    assert b"host: api.openai.com\r\n" in openai.fixed_headers
    assert local.fixed_headers == b"host: 127.0.0.1:8000\r\n"
    fast = settings.models["fast"]
    assert [r.provider.name for r in fast.routes] == ["local", "openai"]
    assert fast.routes[1].upstream_model_json == b'"gpt-4o-mini"'
    assert fast.routes[1].output_per_mtok == 0.60
    assert set(settings.direct_routes) == {"openai", "local"}
    assert [r.id for r in settings.routes] == list(range(4))


def test_keys_never_show_in_repr(tmp_path: Path) -> None:
    settings = load_text(tmp_path, EXAMPLE, {"OPENAI_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings.providers)


def test_no_config_offers_providers_from_the_environment() -> None:
    settings = config.load(None, env={"OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b"})
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert [p.name for p in settings.providers] == ["openai", "anthropic"]
    assert settings.providers[1].base_url == "https://api.anthropic.com/v1"
    assert b"x-api-key: sk-b\r\n" in settings.providers[1].fixed_headers
    assert not settings.models
    assert config.load(None, env={}).providers == ()


def test_listen_flag_overrides_the_file(tmp_path: Path) -> None:
    settings = config.with_listen(load_text(tmp_path, EXAMPLE, {"OPENAI_API_KEY": "sk-x"}), "0.0.0.0:9000")
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    "text,named",
    [
        ('[server]\nlisten = "nope"', "server.listen"),
        ("[server]\nmax_body_bytes = -1", "server.max_body_bytes"),
        ('[server]\nheader_timeout_s = "10"', "server.header_timeout_s"),
        ("[server]\nbogus = 1", "server.bogus"),
        ("[[providers]]\nname = 'x'\nkind = 'azure'", "providers[0].kind"),
        ("[[providers]]\nname = 'x'\nkind = 'local'", "providers[0].base_url"),
        ("[[providers]]\nname = 'x'\nkind = 'openai'", "providers[0].api_key_env"),
        ("[[providers]]\nname = 'x'\nkind = 'local'\nbase_url = 'ftp://h/v1'", "providers[0].base_url"),
        ("[[providers]]\nname = 'x'\nkind = 'local'\nbase_url = 'http://h/v1'\nca_file = '/no/such'", "ca_file"),
        ("[[providers]]\nname = 'x'\nkind = 'local'\nbase_url = 'http://h/v1'\nmax_connections = 0", "max_connections"),
        ("[[models]]\nname = 'm'\nroutes = [{ provider = 'ghost', model = 'x' }]", "models[0].routes[0].provider"),
        ("[[models]]\nname = 'm'\nroutes = []", "models[0].routes"),
        ("[[models]]\nname = 'm'\nroutes = [{ model = 'x' }]", "models[0].routes[0].provider"),
        ("oops = 1", "oops"),
        ("[[providers]\n", "invalid TOML"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert named in str(info.value)


def test_duplicate_provider_names_are_refused(tmp_path: Path) -> None:
    text = "[[providers]]\nname='a'\nkind='local'\nbase_url='http://h/v1'\n" * 2
    with pytest.raises(ConfigError, match="duplicate"):
        load_text(tmp_path, text)


def test_ipv6_and_default_ports() -> None:
    assert config.parse_listen("[::1]:8080") == ("::1", 8080)
    table = {"providers": [{"name": "v6", "kind": "local", "base_url": "http://[::1]:8000/v1/"}]}
    provider = config.from_table(table, {}).providers[0]
    assert provider.host == "::1" and provider.base_path == "/v1"
    assert provider.fixed_headers == b"host: [::1]:8000\r\n"
