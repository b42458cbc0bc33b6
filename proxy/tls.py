"""TLS towards clients: the server context, ALPN, and certificate reload.

The listener keeps one `ssl.SSLContext` for its whole life (asyncio gives no public way to
swap it), so a reload cannot replace it. Instead its SNI callback, which OpenSSL runs on
every ClientHello (with or without a server name), moves each new handshake onto the
current certificate's context. A reload builds a complete new context first and swaps it
in only once it loaded cleanly: a bad file leaves the old certificate serving, never a
half-loaded one. Handshakes under way keep the context they started with.
"""

from __future__ import annotations

import logging
import ssl

from proxy.config import ServerSettings
from proxy.errors import ConfigError

log = logging.getLogger("llm_edge.tls")

ALPN = ["h2", "http/1.1"]  # preference order: a client offering both gets h2


def _context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 9.2: h2 needs TLS 1.2 or later
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_cert_file: cannot load {cert_file} with {key_file}: {exc}") from None
    return context


class ServerTLS:
    """The listener's TLS context, and the certificate it currently serves."""

    __slots__ = ("listener", "current", "cert_file", "key_file")

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.current = _context(cert_file, key_file)
        self.listener = _context(cert_file, key_file)
        self.listener.sni_callback = self._on_client_hello

    def _on_client_hello(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if ssl_object.context is not self.current:
            ssl_object.context = self.current
        return None

    def reload(self, settings: ServerSettings) -> bool:
        """Load the configured certificate again (SIGHUP); True when the new one is now served."""
        cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
        if cert_file is None or key_file is None:
            log.warning("server.tls_cert_file removed: TLS stays on until a restart")
            return False
        try:
            context = _context(cert_file, key_file)
        except ConfigError as exc:
            log.error("certificate not reloaded, the old one keeps serving: %s", exc)
            return False
        self.current, self.cert_file, self.key_file = context, cert_file, key_file
        log.info("certificate reloaded from %s", cert_file)
        return True


def server_tls(settings: ServerSettings) -> ServerTLS | None:
    """The TLS state for `[server] tls_cert_file`/`tls_key_file`, or None to serve cleartext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return ServerTLS(settings.tls_cert_file, settings.tls_key_file)
