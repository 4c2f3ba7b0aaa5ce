"""
L{exp.twisted.ExpService} against a hostile server, on loopback: REST
answers too large to hold, gzip bombs, redirects and cookies; network
messages and handshake answers too large to hold; and https logins whose
answer would send the SDK on over http.  Each test plays the attack and
asserts the defended outcome.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from exp._options import check_hosts
from exp.server.testing import RunningServer, start_server
from exp.twisted import ApiError, ExpService, UnexpectedError
from exp.twisted._http import MAX_HEAD_SIZE, MAX_RESPONSE_SIZE
from exp.twisted._network import MAX_HANDSHAKE_SIZE, MAX_MESSAGE_SIZE

from ._sdk import DEVICE, USER, Services, eventually, sleep, small_backoff, within

MiB = 1 << 20


def auth_for(api: str, network: str | None = None) -> dict[str, Any]:
    """An auth payload naming C{api} (and C{network}), valid for an hour."""
    return {"token": "token", "expiration": (time.time() + 3600) * 1000,
            "identity": {"type": "user", "username": "u", "organization": "scala"},
            "api": {"host": api}, "network": {"host": network or api}}


# -- a hostile web server --------------------------------------------------------------


class Hostile(Resource):
    """Answers every request with C{answer(request)}; keeps every request."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.answer: Callable[[Request], bytes | int] = lambda request: b"{}"

    def render(self, request: Request) -> bytes | int:
        self.requests.append(request)
        return self.answer(request)

    def paths(self) -> list[str]:
        return [r.path.decode() for r in self.requests]


@implementer(IPullProducer)
class Endless:
    """Writes C{chunk} to a request as fast as it is read, until the connection is lost."""

    def __init__(self, request: Request, chunk: bytes) -> None:
        self.request = request
        self.chunk = chunk
        self.written = 0
        self.lost = False
        request.notifyFinish().addBoth(self._lost)
        request.registerProducer(self, False)

    def _lost(self, _: object) -> None:
        self.lost = True

    def resumeProducing(self) -> None:
        if not self.lost:
            self.request.write(self.chunk)
            self.written += len(self.chunk)

    def stopProducing(self) -> None:
        self.lost = True


class Server:
    """A L{Hostile} resource served on a loopback port."""

    def __init__(self) -> None:
        self.resource = Hostile()
        self.port: IListeningPort | None = None
        self.url = ""

    async def listen(self) -> None:
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(self.resource))
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def stop(self) -> None:
        for request in self.resource.requests:
            transport = getattr(request, "transport", None)
            if transport is not None and transport.connected:
                transport.abortConnection()
        assert self.port is not None
        await self.port.stopListening()


@pytest_twisted.async_yield_fixture()
async def hostile() -> AsyncIterator[Server]:
    server = Server()
    await server.listen()
    yield server
    await server.stop()


@pytest_twisted.async_yield_fixture()
async def services() -> AsyncIterator[list[Services]]:
    """Holds the L{Services} of a test, stopped at teardown."""
    held: list[Services] = []
    yield held
    for each in held:
        await each.stop_all()


def rest_only(services: list[Services], url: str, **options: Any) -> ExpService:
    """A started service whose API is C{url}, without logging in or the network."""
    sdk = Services(url)
    services.append(sdk)
    options.setdefault("request_timeout", 300)  # only the defences end these calls
    return sdk.start(auth=auth_for(url), enable_network=False, **options)


# -- REST: bodies ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_body_announced_over_the_limit_is_refused_unread(
        hostile: Server, services: list[Services]) -> None:
    """An answer whose Content-Length passes the default limit fails at once, unread."""
    endless: list[Endless] = []

    def answer(request: Request) -> int:
        request.setHeader(b"Content-Length", str(1 << 30).encode())
        endless.append(Endless(request, b"0," * 32768))
        return NOT_DONE_YET

    hostile.resource.answer = answer
    service = rest_only(services, hostile.url)
    with pytest.raises(UnexpectedError) as caught:
        await within(service.get("/api/huge"))
    assert f"over {MAX_RESPONSE_SIZE} bytes" in str(caught.value)
    assert "max_response_size" in str(caught.value)
    await eventually(lambda: endless[0].lost, "the SDK closed the connection")
    assert endless[0].written < MAX_RESPONSE_SIZE


@pytest_twisted.ensureDeferred
async def test_an_endless_body_is_cut_at_the_limit(
        hostile: Server, services: list[Services]) -> None:
    """A body streamed for ever (no length) is read up to the default limit, no further."""
    endless: list[Endless] = []

    def answer(request: Request) -> int:
        endless.append(Endless(request, b"[" + b"0," * 32767))
        return NOT_DONE_YET

    hostile.resource.answer = answer
    service = rest_only(services, hostile.url)
    with pytest.raises(UnexpectedError) as caught:
        await within(service.get("/api/endless"))
    assert "max_response_size" in str(caught.value)
    await eventually(lambda: endless[0].lost, "the SDK closed the connection")
    # what the socket buffers held besides
    assert endless[0].written < MAX_RESPONSE_SIZE + 16 * MiB


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest_twisted.ensureDeferred
async def test_max_response_size_is_the_largest_body_taken(
        hostile: Server, services: list[Services], declared: bool) -> None:
    """A body of max_response_size bytes is taken; one byte more is refused."""
    def answer(request: Request) -> bytes | int:
        size = int(request.args[b"size"][0])
        body = json.dumps("x" * (size - 2)).encode()
        if declared:
            return body
        request.write(body)
        request.finish()
        return NOT_DONE_YET

    hostile.resource.answer = answer
    service = rest_only(services, hostile.url, max_response_size=1000)
    assert await within(service.get("/api/sized", {"size": 1000})) == "x" * 998
    with pytest.raises(UnexpectedError, match="over 1000 bytes"):
        await within(service.get("/api/sized", {"size": 1001}))
    assert await within(service.get("/api/sized", {"size": 10})) == "x" * 8


@pytest_twisted.ensureDeferred
async def test_an_error_answer_over_the_limit_is_an_api_error_without_payload(
        hostile: Server, services: list[Services]) -> None:
    """An error status with an endless body is still that ApiError, its body dropped."""
    def answer(request: Request) -> int:
        request.setResponseCode(502)
        Endless(request, b"x" * 65536)
        return NOT_DONE_YET

    hostile.resource.answer = answer
    service = rest_only(services, hostile.url, max_response_size=MiB)
    with pytest.raises(ApiError) as caught:
        await within(service.get("/api/failing"))
    assert (caught.value.status_code, caught.value.payload) == (502, None)


def gzip_of_zeros(size: int) -> bytes:
    """A gzip stream that inflates to C{size} zero bytes (about a thousandth of it)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    return b"".join([*(compressor.compress(block) for _ in range(size // MiB)),
                     compressor.flush()])


@pytest.mark.parametrize("kind", ["bomb", "json"])
@pytest_twisted.ensureDeferred
async def test_gzip_is_neither_asked_for_nor_inflated(
        hostile: Server, services: list[Services], kind: str) -> None:
    """
    The SDK asks for bodies as they are; a body gzipped anyway (a bomb of
    256 MiB in 256 KiB, or plain JSON) is refused unread with UnexpectedError.
    """
    body = gzip_of_zeros(256 * MiB) if kind == "bomb" else gzip.compress(b'{"ok": true}')

    def answer(request: Request) -> bytes:
        request.setHeader(b"Content-Encoding", b"gzip")
        request.setHeader(b"Content-Type", b"application/json")
        return body

    hostile.resource.answer = answer
    service = rest_only(services, hostile.url)
    with pytest.raises(UnexpectedError) as caught:
        await within(service.get("/api/compressed"))
    assert "gzip" in str(caught.value)
    assert hostile.resource.requests[0].requestHeaders.getRawHeaders(
        b"Accept-Encoding") == [b"identity"]


# -- REST: redirects and cookies ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_redirects_are_not_followed(hostile: Server, services: list[Services]) -> None:
    """A redirect is an UnexpectedError naming where it points; nothing goes there."""
    def answer(request: Request) -> bytes:
        if request.path == b"/api/moved":
            request.redirect(hostile.url.encode() + b"/api/elsewhere")
            return b""
        return b"{}"

    hostile.resource.answer = answer
    service = rest_only(services, hostile.url)
    with pytest.raises(UnexpectedError) as caught:
        await within(service.get("/api/moved"))
    assert "redirect" in str(caught.value) and "/api/elsewhere" in str(caught.value)
    await sleep(0.1)
    assert hostile.resource.paths() == ["/api/moved"]


@pytest_twisted.ensureDeferred
async def test_a_redirected_login_is_fatal_and_not_retried(
        hostile: Server, services: list[Services]) -> None:
    """A login answered with a redirect fails for good (an error event), not in a loop."""
    def answer(request: Request) -> bytes:
        request.setResponseCode(307)
        request.setHeader(b"Location", b"http://127.0.0.1:1/api/auth/login")
        return b""

    hostile.resource.answer = answer
    sdk = Services(hostile.url)
    services.append(sdk)
    errors: list[Exception] = []
    service = sdk.start(**USER, retry_policy=lambda attempt: 0.05)
    service.on("error", errors.append)
    with pytest.raises(UnexpectedError, match="redirect"):
        await within(service.whenAuthenticated())
    await sleep(0.3)
    assert hostile.resource.paths() == ["/api/auth/login"]
    assert len(errors) == 1


@pytest_twisted.ensureDeferred
async def test_cookies_are_not_kept(hostile: Server, services: list[Services]) -> None:
    """A cookie set by the server is not sent back: EXP uses tokens, and a jar can be filled."""
    def answer(request: Request) -> bytes:
        request.addCookie(b"session", b"tracked", path=b"/")
        return b"{}"

    hostile.resource.answer = answer
    service = rest_only(services, hostile.url)
    await within(service.get("/api/one"))
    await within(service.get("/api/two"))
    assert [r.getHeader(b"cookie") for r in hostile.resource.requests] == [None, None]


# -- REST: heads ----------------------------------------------------------------------


class EndlessHead(Protocol):
    """Answers any request with C{status} and then header lines for ever."""

    def __init__(self, status: bytes) -> None:
        self.status = status
        self.written = 0
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if not self.written:
            self.transport.write(self.status)  # type: ignore[union-attr]
            self.written = len(self.status)
            self.transport.registerProducer(self, False)  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        lines = (b"X-Padding: " + b"a" * 1000 + b"\r\n") * 64
        self.transport.write(lines)  # type: ignore[union-attr]
        self.written += len(lines)

    def stopProducing(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@pytest_twisted.async_yield_fixture()
async def endless_head() -> AsyncIterator[Callable[[bytes], Any]]:
    """
    Starts a server whose connections answer with a status line and endless
    headers; answers its URL and the protocols of its connections.
    """
    made: list[EndlessHead] = []
    ports: list[IListeningPort] = []

    async def serve(status: bytes) -> tuple[str, list[EndlessHead]]:
        def build() -> EndlessHead:
            made.append(EndlessHead(status))
            return made[-1]

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(build))
        ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}", made

    yield serve
    for protocol in made:
        if protocol.transport is not None:
            protocol.transport.abortConnection()  # type: ignore[attr-defined]
    for port in ports:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_endless_rest_head_is_cut(services: list[Services], endless_head: Any
                                           ) -> None:
    """An answer whose headers never end fails with UnexpectedError once past 64 KiB."""
    url, made = await endless_head(b"HTTP/1.1 200 OK\r\n")
    service = rest_only(services, url)
    with pytest.raises(UnexpectedError) as caught:
        await within(service.get("/api/devices"))
    assert f"a head over {MAX_HEAD_SIZE} bytes" in str(caught.value)
    await within(made[0].lost)
    assert made[0].written < MAX_HEAD_SIZE + 16 * MiB


@pytest_twisted.ensureDeferred
async def test_each_head_on_a_connection_has_the_limit(
        hostile: Server, services: list[Services]) -> None:
    """
    Heads of nearly 64 KiB are taken answer after answer on one connection,
    and a larger one after them is still refused.
    """
    clients: set[int] = set()

    def answer(request: Request) -> bytes:
        clients.add(request.getClientAddress().port)  # type: ignore[attr-defined]
        for n in range(int(request.args[b"lines"][0])):
            request.setHeader(f"X-Padding-{n}", "a" * 1000)
        return b"{}"

    hostile.resource.answer = answer
    service = rest_only(services, hostile.url)
    for _ in range(3):
        assert await within(service.get("/api/padded", {"lines": 60})) == {}
    with pytest.raises(UnexpectedError, match="head over"):
        await within(service.get("/api/padded", {"lines": 70}))
    assert len(clients) == 1


# -- the network: messages and handshakes --------------------------------------------------


@pytest_twisted.async_yield_fixture()
async def big_server() -> AsyncIterator[RunningServer]:
    """A demo server that takes broadcasts of up to 8 MiB."""
    running = await start_server(max_body=8 * MiB)
    yield running
    await running.stop()


@pytest.mark.parametrize(("options", "size"), [
    ({}, MAX_MESSAGE_SIZE + MiB),
    ({"max_message_size": 64 << 10}, 100 << 10),
], ids=["default", "option"])
@pytest_twisted.ensureDeferred
async def test_a_network_message_over_the_limit_closes_the_connection(
        big_server: RunningServer, services: list[Services], options: dict[str, Any],
        size: int) -> None:
    """
    A broadcast larger than max_message_size never reaches the listener: its
    frame closes the connection, which is made again, and later broadcasts
    arrive.
    """
    sdk = Services(big_server.url)
    services.append(sdk)
    device = await sdk.device(retry_policy=small_backoff, **options)
    await within(device.whenConnected())
    events: list[str] = []
    device.on("offline", lambda: events.append("offline"))
    device.on("online", lambda: events.append("online"))
    listener = await within(device.get_channel("big").listen("news"))
    user = await sdk.user(enable_network=False)
    channel = user.get_channel("big")
    await within(channel.broadcast("news", "x" * size, timeout=0))
    await eventually(lambda: events == ["offline", "online"], "the device connected again")
    received = None
    for attempt in range(50):  # until the new connection's subscription is in place
        await within(channel.broadcast("news", f"small {attempt}", timeout=0))
        received = await within(listener.wait(0.2))
        if received is not None:
            break
    assert received is not None and received.payload.startswith("small")


@pytest_twisted.ensureDeferred
async def test_an_endless_handshake_answer_is_dropped(
        services: list[Services], endless_head: Any) -> None:
    """A network that answers the WebSocket handshake with endless headers is dropped."""
    url, made = await endless_head(b"HTTP/1.1 101 Switching Protocols\r\n")
    sdk = Services(url)
    services.append(sdk)
    service = sdk.start(auth=auth_for(url), retry_policy=lambda attempt: 60)
    await eventually(lambda: bool(made), "the SDK connected")
    await within(made[0].lost)
    assert MAX_HANDSHAKE_SIZE <= made[0].written < MAX_HANDSHAKE_SIZE + 16 * MiB
    assert not service.is_connected
    await within(service.stopService())


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
