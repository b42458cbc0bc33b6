"""The dashboard in a real headless Chromium (Debian's), driven by selenium through Debian's chromedriver:
the page loads with no console error, its numbers match `/stats`, a breaker opened by a failing
provider shows as open within two polls, and a screenshot goes to artifacts/dashboard.png."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import GatewayFactory, MockFactory, provider
from tests.e2e.test_operations import get
from tests.harness import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
INTERVAL_MS = 300
ADMIN_KEY = "llm-edge-admin-DASHBOARD-CANARY"

# Skipped on a machine without them, never under CI (.ci/run installs them; CI must run this test).
HAVE_BROWSER = Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()
needs_browser = pytest.mark.skipif(not HAVE_BROWSER and not os.environ.get("CI"),
                                   reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="llm-edge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def table(*mocks: Any, **router: Any) -> dict[str, Any]:
    names = [f"p{i}" for i in range(len(mocks))]
    return {
        "providers": [provider(name, m, kind="openai", api_key="sk-up") for name, m in zip(names, mocks)],
        # p0 is the cheapest: always tried first while its breaker is closed
        "models": [{"name": "m", "routes": [{"provider": name, "model": f"up-{name}", "input_per_mtok": 1.0 + i,
                                              "output_per_mtok": 2.0 + i} for i, name in enumerate(names)]}],
        "router": {"breaker_failures": 2, "breaker_cooldown_s": 60, **router},
        "auth": {"keys": [{"name": "team-a", "key": "gw-key-a", "budget_usd": 5.0}]},
    }  # fmt: skip


def polls(driver: Any) -> int:
    return int(driver.find_element("tag name", "body").get_attribute("data-polls"))


def text(driver: Any, selector: str) -> str:
    """An element's text; the page rebuilds its tables on every poll, so a found row may go stale: find again."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            return str(driver.find_element("css selector", selector).text)
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} kept going stale")


def wait_polls(driver: Any, n: int) -> None:
    """Wait until the page has polled `n` more times than now."""
    start = polls(driver)
    assert wait_for(lambda: polls(driver) >= start + n, timeout=15), "the page stopped polling"


def severe(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@needs_browser
def test_dashboard_in_a_real_browser(mock_uv: MockFactory, gateway_uv: GatewayFactory, browser: Any) -> None:
    healthy, flaky = mock_uv(), mock_uv()
    gw = gateway_uv(table(flaky, healthy))
    sdk = openai.OpenAI(base_url=gw.openai_base, api_key="gw-key-a", max_retries=0)
    for i in range(6):
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i % 3}"}], temperature=0)

    browser.get(gw.url + f"/dashboard?interval={INTERVAL_MS}")
    assert browser.title == "llm-edge dashboard"
    wait_polls(browser, 2)
    assert severe(browser) == []

    # Its numbers are /stats' (no traffic meanwhile, so both read the same counters).
    stats = orjson.loads(get(gw.port, "/stats")[2])
    wait_polls(browser, 1)
    assert text(browser, "#overhead-p50") == str(round(stats["overhead_us"]["p50"]))
    assert text(browser, "#overhead-p99") == str(round(stats["overhead_us"]["p99"]))
    assert text(browser, "#cache-entries") == str(stats["cache"]["entries"])
    assert text(browser, "#cache-hits") == str(stats["cache"]["hits"])
    hits, misses = stats["cache"]["hits"], stats["cache"]["misses"]
    assert text(browser, "#cache-hit-ratio") == f"{100 * hits / (hits + misses):.1f}%"
    for route in stats["routes"][:2]:
        row = f'td[data-route="{route["id"]}"]'
        assert text(browser, row + '[data-field="breaker"]') == route["breaker"] == "closed"
        assert text(browser, row + '[data-field="spend_usd"]') == f"{route['spend_usd']:.6f}"
        assert text(browser, row + '[data-field="in_flight"]') == str(route["in_flight"])
    total = sum(r["requests"] for r in stats["routes"])
    first = stats["routes"][0]
    assert text(browser, 'td[data-route="0"][data-field="share"]') == f"{100 * first['requests'] / total:.1f}%"
    spent = text(browser, 'tr[data-key="team-a"] td[data-field="spent_usd"]')
    assert float(spent) > 0 and text(browser, 'tr[data-key="team-a"] td[data-field="budget_usd"]') == "5.00"

    # A failing provider: its breaker opens, and the page says so within two polls.
    flaky.config.error_rate = 1.0

    def opened() -> bool:
        # each request tries the flaky route first or after the healthy one; either way it falls back
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "fail"}], temperature=1)
        return bool(orjson.loads(get(gw.port, "/stats")[2])["routes"][0]["breaker"] == "open")

    assert wait_for(opened, timeout=10), "the failing route's breaker never opened"
    wait_polls(browser, 2)
    assert text(browser, 'td[data-route="0"][data-field="breaker"]') == "open"
    assert float(text(browser, 'td[data-route="0"][data-field="cooldown"]')) > 0
    assert text(browser, 'td[data-route="1"][data-field="breaker"]') == "closed"
    assert severe(browser) == []

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_guarded_like_stats_once_an_admin_key_is_set(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    import http.client

    gw = gateway_uv({**table(mock_uv()), "admin": {"key_env": "LLM_EDGE_TEST_ADMIN"}},
                    env={"LLM_EDGE_TEST_ADMIN": ADMIN_KEY})  # fmt: skip

    def fetch(path: str, key: str | None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        try:
            conn.request("GET", path, headers={"authorization": f"Bearer {key}"} if key else {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    for path in ("/stats", "/dashboard", "/dashboard.json"):
        assert fetch(path, None)[0] == 401, path
        assert fetch(path, "gw-key-a")[0] == 401, path  # a gateway key is not the admin key
        status, body = fetch(path, ADMIN_KEY)
        assert status == 200 and ADMIN_KEY.encode() not in body
    page = fetch("/dashboard", ADMIN_KEY)[1]
    assert b"location.hash" in page  # the page sends the key its URL fragment holds
