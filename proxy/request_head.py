"""Which request headers the gateway acts on, and how: a table built once per configuration.

Both client protocols (HTTP/1.1 in `downstream`, HTTP/2 in `h2`) look each header name up
here, so a header means the same thing whichever protocol it came on. Pure: no I/O.
"""

from __future__ import annotations

# What to do with a request header, by lowercased name (see `header_actions`).
(
    FORWARD, CONTENT_LENGTH, HOST, EXPECT, CONNECTION, CACHE_CONTROL, ANTHROPIC_VERSION, ANTHROPIC_BETA, CACHE_TTL,
    CLIENT_KEY, TRANSFER_ENCODING, UPGRADE,
) = range(12)



UNSEEN = -1

# Headers the SDKs, curl and load tools send that the gateway ignores, in the spellings they use:
# found by one exact dict probe instead of a lower() and a probe (bench/micro_hotpath.py).
_IGNORED = (
    b"Accept", b"accept", b"User-Agent", b"user-agent", b"Content-Type", b"content-type", b"Accept-Encoding",
    b"accept-encoding", b"X-Stainless-Lang", b"X-Stainless-Package-Version", b"X-Stainless-OS",
    b"X-Stainless-Arch", b"X-Stainless-Runtime", b"X-Stainless-Runtime-Version", b"X-Stainless-Async",
    b"x-stainless-retry-count", b"x-stainless-read-timeout", b"x-stainless-timeout", b"X-Stainless-Retry-Count",
    b"X-Stainless-Read-Timeout", b"x-stainless-lang", b"x-stainless-package-version", b"x-stainless-os",
    b"x-stainless-arch", b"x-stainless-runtime", b"x-stainless-runtime-version", b"x-stainless-async",
)  # fmt: skip


def header_actions(forwarded: tuple[bytes, ...]) -> dict[bytes, int | None]:
    """The request headers the gateway acts on, keyed by lowercased name: `forwarded` ones go
    upstream (`[server] forward_headers`); everything else, the client's credentials above
    all, stays here."""
    actions = {name: FORWARD for name in forwarded}
    if b"anthropic-beta" in actions:
        actions[b"anthropic-beta"] = ANTHROPIC_BETA  # forwarded, and part of the cache key
    actions.update(
        {
            b"content-length": CONTENT_LENGTH,
            b"host": HOST,
            b"expect": EXPECT,
            b"connection": CONNECTION,
            b"cache-control": CACHE_CONTROL,
            b"anthropic-version": ANTHROPIC_VERSION,
            b"x-llm-edge-cache-ttl": CACHE_TTL,
            b"transfer-encoding": TRANSFER_ENCODING,
            b"upgrade": UPGRADE,
            b"authorization": CLIENT_KEY,  # the gateway key, either way the SDKs send it; never forwarded
            b"x-api-key": CLIENT_KEY,
        }
    )
    exact: dict[bytes, int | None] = dict.fromkeys(_IGNORED)
    for name, action in actions.items():  # the usual spellings of the ones we act on
        exact[name] = action
        exact[name.title()] = action
        exact[name.upper()] = action
    return exact
