"""ServerTLS with real certificates (made by openssl here): ALPN, and reloads that never leave a
half-loaded certificate serving. Handshakes run over a real socket pair."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from proxy import config
from proxy.errors import ConfigError
from proxy.tls import ALPN, ServerTLS, server_tls


def make_cert(directory: Path, name: str) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def handshake(tls: ServerTLS, alpn: list[str]) -> tuple[str, str | None]:
    """(the certificate's common name, the ALPN chosen) as a client sees them."""
    server_sock, client_sock = socket.socketpair()
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            with tls.listener.wrap_socket(server_sock, server_side=True) as wrapped:
                wrapped.recv(1)
        except (OSError, ssl.SSLError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    with context.wrap_socket(client_sock, server_hostname="gw") as wrapped:
        der = wrapped.getpeercert(binary_form=True)
        chosen = wrapped.selected_alpn_protocol()
        wrapped.send(b"x")
    thread.join(10)
    assert "error" not in result, result
    assert der is not None
    pem = ssl.DER_cert_to_PEM_cert(der)
    name = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem.encode(), capture_output=True,
                          check=True).stdout.decode()  # fmt: skip
    return name.strip().rsplit("=", 1)[1].strip(), chosen


def server_settings(cert: str | None, key: str | None) -> config.ServerSettings:
    table = {"listen": "127.0.0.1:0"}
    if cert is not None:
        table |= {"tls_cert_file": cert, "tls_key_file": key}  # type: ignore[dict-item]
    return config.from_table({"server": table}, env={}).server


def test_no_certificate_means_cleartext() -> None:
    assert server_tls(server_settings(None, None)) is None


@pytest.mark.parametrize("offered,chosen", [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")])
def test_alpn_prefers_h2(tmp_path: Path, offered: list[str], chosen: str) -> None:
    cert, key = make_cert(tmp_path, "first")
    tls = server_tls(server_settings(cert, key))
    assert tls is not None and ALPN == ["h2", "http/1.1"]
    assert handshake(tls, offered) == ("first", chosen)


def test_a_reload_serves_the_new_certificate_to_new_handshakes(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "first")
    tls = ServerTLS(cert, key)
    new_cert, new_key = make_cert(tmp_path, "second")
    assert tls.reload(server_settings(new_cert, new_key))
    assert handshake(tls, ["http/1.1"])[0] == "second"


def test_a_bad_certificate_on_reload_keeps_the_old_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = make_cert(tmp_path, "first")
    tls = ServerTLS(cert, key)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n")
    with caplog.at_level(logging.ERROR, logger="llm_edge.tls"):
        assert not tls.reload(server_settings(str(broken), key))
    assert "the old one keeps serving" in caplog.text
    assert handshake(tls, ["http/1.1"])[0] == "first" and tls.cert_file == cert


def test_removing_the_certificate_keeps_tls_until_a_restart(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "first")
    tls = ServerTLS(cert, key)
    assert not tls.reload(server_settings(None, None))
    assert handshake(tls, ["http/1.1"])[0] == "first"


def test_an_unloadable_certificate_at_start_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server.tls_cert_file"):
        ServerTLS(str(tmp_path / "missing.pem"), str(tmp_path / "missing.key"))
