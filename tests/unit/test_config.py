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


# Misconfiguration caught at start (issue 17)

ANTHROPIC = "[[providers]]\nname = 'claude'\nkind = 'anthropic'\napi_key_env = 'ANTHROPIC_API_KEY'\n"


@pytest.mark.parametrize("env", [{}, {"ANTHROPIC_API_KEY": ""}, {"ANTHROPIC_API_KEY": "  \n"}])
def test_an_unset_or_empty_key_variable_is_an_error_naming_it(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, ANTHROPIC, env)
    message = str(info.value)
    assert message.startswith("providers[0].api_key_env: the environment variable ANTHROPIC_API_KEY is unset or empty")
    assert "allow_missing_keys" in message


def test_allow_missing_keys_marks_the_provider_unusable(tmp_path: Path) -> None:
    settings = load_text(tmp_path, "[server]\nallow_missing_keys = true\n" + ANTHROPIC, {})
    assert settings.unusable == ((0, "its key variable ANTHROPIC_API_KEY is unset or empty"),)
    assert settings.providers[0].api_key is None
    assert b"x-api-key" not in settings.providers[0].fixed_headers
    assert any("providers[0].api_key_env: provider 'claude' is unusable" in w for w in settings.warnings)


def test_a_key_with_a_trailing_newline_is_trimmed_with_a_warning(tmp_path: Path) -> None:
    secret = "sk-ant-SECRET-VALUE"
    settings = load_text(tmp_path, ANTHROPIC, {"ANTHROPIC_API_KEY": secret + "\n"})
    assert settings.providers[0].api_key == secret
    assert b"x-api-key: sk-ant-SECRET-VALUE\r\nanthropic-version" in settings.providers[0].fixed_headers
    assert settings.warnings == (
        "providers[0].api_key_env: the value of ANTHROPIC_API_KEY had surrounding whitespace or a line break; "
        "it was trimmed",
    )
    assert all(secret not in w for w in settings.warnings)


@pytest.mark.parametrize("value", ["sk-a\nb", "sk a", "sk-\x00", "sk-é"])
def test_a_key_that_cannot_go_in_a_header_is_refused_without_showing_it(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, ANTHROPIC, {"ANTHROPIC_API_KEY": value})
    assert "ANTHROPIC_API_KEY" in str(info.value) and value not in str(info.value)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://10.0.0.5:8000/"])
def test_a_base_url_without_the_version_prefix_is_corrected(kind: str, url: str) -> None:
    table = {"providers": [{"name": "p", "kind": kind, "base_url": url, "api_key": "k"}]}
    settings = config.from_table(table, {})
    provider = settings.providers[0]
    assert provider.base_path == "/v1" and provider.base_url == "http://10.0.0.5:8000/v1"
    assert provider.path("/messages") == b"/v1/messages"
    assert settings.warnings == (
        f"providers[0].base_url: {url!r} has no version prefix; using 'http://10.0.0.5:8000/v1' "
        "(write it as the OpenAI SDK does, ending in /v1)",
    )


def test_a_local_base_url_is_taken_as_written() -> None:
    settings = config.from_table({"providers": [{"name": "p", "kind": "local", "base_url": "http://h:1"}]}, {})
    assert settings.providers[0].base_path == "" and settings.warnings == ()


@pytest.mark.parametrize(
    "text,message",
    [
        ("[[providers]]\nname = 'x'\nkind = 'local'\nbase_ur = 'http://h/v1'",
         "providers[0].base_ur: unknown key 'base_ur' (did you mean 'base_url'?)"),
        ("[server]\nlisen = '127.0.0.1:1'", "server.lisen: unknown key 'lisen' (did you mean 'listen'?)"),
        ("[routr]\n", "routr: unknown key 'routr' (did you mean 'router'?)"),
        ("[router]\nstrategi = 'priority'", "router.strategi: unknown key 'strategi' (did you mean 'strategy'?)"),
        ("[[providers]]\nname='x'\nkind='local'\nbase_url='http://h/v1'\n[[models]]\nname='m'\n"
         "routes=[{provider='x', model='y', wieght=2}]",
         "models[0].routes[0].wieght: unknown key 'wieght' (did you mean 'weight'?)"),
        ("zzz = 1", "zzz: unknown key 'zzz'"),
    ],
)  # fmt: skip
def test_a_typo_gets_a_suggestion(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert str(info.value) == message


def test_zero_providers_is_a_warning() -> None:
    assert any("no providers are configured" in w for w in config.load(None, env={}).warnings)
    assert config.load(None, env={"OPENAI_API_KEY": "sk-a"}).warnings == ()


def test_operations_settings_and_their_defaults(tmp_path: Path) -> None:
    defaults = config.from_table({}, {}).server
    assert (defaults.allow_missing_keys, defaults.allow_request_overrides) == (False, False)
    assert (defaults.max_request_tags, defaults.max_tag_bytes, defaults.tag_series) == (8, 64, 100)
    assert defaults.event_interval_s == 10.0
    text = ("[server]\nallow_request_overrides = true\nmax_request_tags = 2\nmax_tag_bytes = 32\n"
            "event_interval_s = 1.5\ntag_series = 10\n")  # fmt: skip
    server = load_text(tmp_path, text).server
    assert (server.allow_request_overrides, server.max_request_tags, server.max_tag_bytes) == (True, 2, 32)
    assert (server.event_interval_s, server.tag_series) == (1.5, 10)
    with pytest.raises(ConfigError, match="server.allow_request_overrides: expected true or false"):
        load_text(tmp_path, "[server]\nallow_request_overrides = 1\n")


def test_provider_models_are_listed_as_direct_ids() -> None:
    from proxy.model_list import model_ids

    table = {"providers": [{"name": "openai", "kind": "openai", "api_key": "k", "models": ["gpt-4o-mini", "gpt-4o"],
                            "prices": {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
                                       "o3": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}}}]}  # fmt: skip
    settings = config.from_table(table, {})
    assert model_ids(settings) == ["openai/gpt-4o-mini", "openai/gpt-4o", "openai/o3"]
    with pytest.raises(ConfigError, match=r"providers\[0\].models"):
        config.from_table({"providers": [{"name": "o", "kind": "local", "base_url": "http://h/v1", "models": "x"}]}, {})
