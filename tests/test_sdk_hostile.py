"""
L{exp.twisted.ExpService} against a hostile server, on loopback: https
logins whose answer would send the SDK on over http.  Each test plays the
attack and asserts the defended outcome.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IListeningPort

from exp._options import check_hosts
from exp.server.testing import RunningServer, start_server
from exp.twisted import UnexpectedError

from ._sdk import DEVICE, USER, Services, sleep, small_backoff, within


def auth_for(api: str, network: str | None = None) -> dict[str, Any]:
    """An auth payload naming C{api} (and C{network}), valid for an hour."""
    return {"token": "token", "expiration": (time.time() + 3600) * 1000,
            "identity": {"type": "user", "username": "u", "organization": "scala"},
            "api": {"host": api}, "network": {"host": network or api}}


@pytest_twisted.async_yield_fixture()
async def services() -> AsyncIterator[list[Services]]:
    """Holds the L{Services} of a test, stopped at teardown."""
    held: list[Services] = []
    yield held
    for each in held:
        await each.stop_all()


# -- hosts: no downgrade from an https login ------------------------------------------------


@pytest.mark.parametrize(("login", "api", "network"), [
    ("https://exp.example", "https://api.example", "https://ws.example:8443"),
    ("http://exp.example", "http://api.example", "http://ws.example"),
    ("http://exp.example", "https://api.example", "https://ws.example"),
    ("http://exp.example", "http://api.example", "https://ws.example"),
])
def test_check_hosts_accepts(login: str, api: str, network: str) -> None:
    """Hosts as secure as the login (or more) pass."""
    check_hosts(login, auth_for(api, network))


@pytest.mark.parametrize(("login", "api", "network", "named"), [
    ("https://exp.example", "http://api.example", "https://ws.example", "http://api.example"),
    ("https://exp.example", "https://api.example", "http://ws.example", "http://ws.example"),
    ("https://exp.example", "HTTP://api.example", "https://ws.example", "HTTP://api.example"),
    ("https://exp.example", "ws://api.example", "https://ws.example", "ws://api.example"),
    ("http://exp.example", "ftp://api.example", "http://ws.example", "api"),
    ("http://exp.example", "http://api.example", None, "network"),
    ("http://exp.example", "", "http://ws.example", "api"),
])
def test_check_hosts_refuses(login: str, api: str, network: str | None, named: str) -> None:
    """A downgrade to http (or ws), or a host that is no http(s) URL, is refused, named."""
    payload = auth_for(api, network)
    if network is None:
        payload["network"] = {}
    with pytest.raises(UnexpectedError) as caught:
        check_hosts(login, payload)
    assert named in str(caught.value)


def self_signed(directory: Path) -> tuple[ssl.PrivateCertificate, str]:
    """A certificate for C{localhost} and its key; the file that trusts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    trusted = directory / "localhost.pem"
    trusted.write_bytes(certificate_pem)
    return ssl.PrivateCertificate.loadPEM(certificate_pem + key_pem), str(trusted)


class Secure:
    """A demo server also served over TLS as https://localhost, and its logins."""

    def __init__(self, running: RunningServer, port: IListeningPort) -> None:
        self.running = running
        self.port = port
        self.url = f"https://localhost:{port.getHost().port}"
        self.logins = 0


async def serve_secure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       **config: Any) -> Secure:
    certificate, trusted = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", trusted)  # how a private CA is trusted
    running = await start_server(**config)
    site = running.server.site()
    port = await SSL4ServerEndpoint(reactor, 0, certificate.options(),
                                    interface="127.0.0.1").listen(site)
    secure = Secure(running, port)
    log = site.log

    def logged(request: Any) -> None:
        secure.logins += request.path == b"/api/auth/login"
        log(request)

    site.log = logged  # type: ignore[method-assign]
    return secure


#: Twisted's own certificate options still pass pyOpenSSL objects.
tls_warnings = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


@tls_warnings
@pytest_twisted.ensureDeferred
async def test_https_login_naming_an_http_api_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, services: list[Services]) -> None:
    """
    A server reached over https whose login answer sends clients to an http
    URL (its public URL) is refused: UnexpectedError, one error event, one
    login.  Over plain http, the same answer is taken.
    """
    secure = await serve_secure(tmp_path, monkeypatch, public_url="http://127.0.0.1:1")
    try:
        sdk = Services(secure.url)
        services.append(sdk)
        errors: list[Exception] = []
        service = sdk.start(**USER, retry_policy=lambda attempt: 0.05)
        service.on("error", errors.append)
        with pytest.raises(UnexpectedError) as caught:
            await within(service.whenAuthenticated())
        assert "'http://127.0.0.1:1'" in str(caught.value)
        assert "downgrade" in str(caught.value)
        await sleep(0.3)
        assert secure.logins == 1
        assert len(errors) == 1 and errors[0] is caught.value
        plain = Services(secure.running.url)
        services.append(plain)
        auth = await plain.user(enable_network=False)
        assert auth.auth["api"]["host"] == "http://127.0.0.1:1"
    finally:
        await secure.port.stopListening()
        await secure.running.stop()


@tls_warnings
@pytest_twisted.ensureDeferred
async def test_https_all_the_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 services: list[Services]) -> None:
    """Over https the SDK logs in, calls the API and joins the network over wss."""
    secure = await serve_secure(tmp_path, monkeypatch)
    try:
        sdk = Services(secure.url)
        services.append(sdk)
        device = await sdk.device(retry_policy=small_backoff)
        assert device.auth["network"]["host"] == secure.url
        await within(device.whenConnected())
        channel = device.get_channel("tls")
        await within(channel.listen("ping", callback=lambda b: b.respond("pong")))
        user = await sdk.user(enable_network=False)
        assert await within(user.get_channel("tls").broadcast("ping", timeout=1)) == ["pong"]
        assert (await within(user.get_device(DEVICE["uuid"]))).name
    finally:
        await services.pop().stop_all()
        await secure.port.stopListening()
        await secure.running.stop()
