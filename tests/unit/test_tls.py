"""The stack's CA and server certificate (stack/tls.py), and the refusal of plain HTTP off
loopback (stack/proxy.py): a client holding ca.pem verifies the server; one holding another
CA does not; a change of names makes a new certificate, the CA stays."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from fmnist.stack import StackError
from fmnist.stack.proxy import Public, loopback
from fmnist.stack.tls import ensure_certificates


def handshake(tls_dir: Path, ca: Path, hostname: str) -> None:
    """A TLS handshake with a server holding tls_dir's certificate, verified with ca."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_dir / "server.pem", tls_dir / "server.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = ssl.create_default_context(cafile=str(ca))
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname=hostname) as tls,
            ):
                tls.sendall(b"x")
        finally:
            thread.join(10)


def test_a_client_with_our_ca_verifies_the_server_for_its_names(tmp_path: Path):
    files = ensure_certificates(tmp_path / "tls", ["stack.example", "127.0.0.1"])
    assert oct(files.server_key.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "tls" / "ca.key").stat().st_mode & 0o777) == "0o600"
    handshake(tmp_path / "tls", files.ca_cert, "127.0.0.1")
    handshake(tmp_path / "tls", files.ca_cert, "stack.example")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"match"):
        handshake(tmp_path / "tls", files.ca_cert, "other.example")


def test_another_ca_is_not_trusted(tmp_path: Path):
    ensure_certificates(tmp_path / "ours", ["127.0.0.1"])
    theirs = ensure_certificates(tmp_path / "theirs", ["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path / "ours", theirs.ca_cert, "127.0.0.1")


def test_new_names_new_certificate_same_ca(tmp_path: Path):
    first = ensure_certificates(tmp_path, ["10.0.0.1"])
    ca, cert = first.ca_cert.read_bytes(), first.server_cert.read_bytes()
    assert ensure_certificates(tmp_path, ["10.0.0.1"]).server_cert.read_bytes() == cert
    ensure_certificates(tmp_path, ["10.0.0.2"])
    assert first.server_cert.read_bytes() != cert
    assert first.ca_cert.read_bytes() == ca


def test_plain_http_off_loopback_is_refused(monkeypatch):
    monkeypatch.setenv("FMNIST_PUBLIC_ADDRESS", "10.250.0.1")
    monkeypatch.setenv("FMNIST_TLS", "off")
    public = Public.from_env()
    assert public is not None and not public.tls
    with pytest.raises(StackError, match=r"refusing plain HTTP on 10\.250\.0\.1"):
        public.check()
    monkeypatch.setenv("FMNIST_TLS", "on")
    Public.from_env().check()  # TLS: fine
    monkeypatch.setenv("FMNIST_PUBLIC_ADDRESS", "127.0.0.1")
    monkeypatch.setenv("FMNIST_TLS", "off")
    assert Public.from_env() is None  # loopback in plain HTTP: what the stack does anyway
    assert loopback("::1") and loopback("localhost") and not loopback("0.0.0.0")


def test_the_address_is_always_in_the_certificate():
    public = Public("10.1.2.3", ("stack.example",))
    assert public.names == ("stack.example", "10.1.2.3")
    assert public.mlflow_url == "https://stack.example:5443"
    assert public.origins(4443) == ["https://stack.example:4443", "https://10.1.2.3:4443"]
