"""
Helpers of the network tests: servers of their own, logins, broadcasts and
responses over REST, and a well-behaved client to show that the server still
serves the others.  The Engine.IO clients themselves are in tests/_eio.py.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint

from exp.protocol import consumer_app_token, device_token
from exp.server import ExpServer, LocalHub, ServerConfig, SQLiteStorage, demo_seed_path, load_seed
from exp.server.testing import DEMO, RunningServer, start_server

from ._eio import (
    Clients,
    Polling,
    WebSocket,
    assert_served,
    frame,
    guard,
    parse_event,
    subscribe,
)
from .conftest import Answer, Http

#: The two transports of Engine.IO, for tests that run over each.
TRANSPORTS = ["polling", "websocket"]
#: A client over either transport.
Client = Polling | WebSocket


def channel(organization: str, name: str, system: bool = False,
            consumer: bool = False) -> str:
    """A channel id as PROTOCOL.md A3 spells it."""
    raw = json.dumps([organization, name, int(system), int(consumer)], separators=(",", ":"))
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


#: The demo organization, and its lobby channel.
ORG = DEMO["organization"]
LOBBY = channel(ORG, "lobby")


async def in_lobby(net: Clients, transport: str, token: str) -> Client:
    """A client of C{token} over C{transport}, subscribed to the lobby."""
    client = await net.connect(transport, token)
    assert await subscribe(client, [LOBBY]) == [LOBBY]
    return client


@asynccontextmanager
async def running(**config: Any) -> AsyncIterator[tuple[RunningServer, Clients]]:
    """A server of its own with C{config}, and clients for it."""
    running = await start_server(**config)
    clients = Clients(running.url)
    try:
        yield running, clients
    finally:
        await clients.close()
        await running.stop()


@attrs.define
class Clocked:
    """A server whose hub collects responses on C{clock}, and clients for it."""

    clock: task.Clock
    net: Clients

    @property
    def http(self) -> Http:
        """The REST client of the server."""
        return self.net.http

    async def listener(self, transport: str) -> tuple[str, Client]:
        """A user's token, and a client of it over C{transport} in the lobby."""
        token = await self.http.user_token()
        return token, await in_lobby(self.net, transport, token)

    async def ask(self, token: str, client: Client,
                  timeout: int) -> tuple[Deferred[Answer], dict[str, Any]]:
        """
        Broadcast C{ask} on the lobby, collecting responses for C{timeout}
        milliseconds: the pending answer, and the broadcast as C{client} got it.
        """
        pending = ensureDeferred(broadcast(self.http, token, LOBBY, "ask", None, timeout=timeout))
        return pending, await next_broadcast(client)


@asynccontextmanager
async def clocked_server(**config: Any) -> AsyncIterator[Clocked]:
    """
    A server with C{config} whose hub collects responses on a L{task.Clock},
    so that tests end broadcast timeouts by advancing it rather than by
    waiting.
    """
    clock = task.Clock()
    hub = LocalHub(clock)
    directory = tempfile.mkdtemp(prefix="exp-network-")
    db_path = os.path.join(directory, "exp.sqlite3")
    server = ExpServer(SQLiteStorage(db_path, reactor), load_seed(demo_seed_path()),
                       ServerConfig(**config), reactor=reactor, hub=hub)
    await server.start()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.factory())
    running = RunningServer(f"http://127.0.0.1:{port.getHost().port}", server, port,
                            directory, db_path, True)
    net = Clients(running.url)
    try:
        yield Clocked(clock, net)
    finally:
        await net.close()
        await running.stop()


#: The login tokens of the demo device, the demo consumer app, and a new device
#: that is not paired yet.
LOGINS = {
    "device": lambda: device_token(DEMO["device_uuid"], DEMO["device_secret"]),
    "consumer": lambda: consumer_app_token(DEMO["consumer_uuid"], DEMO["api_key"]),
    "unpaired": lambda: device_token("_", "_", allow_pairing=True),
}


async def login(http: Http, who: str) -> dict[str, Any]:
    """The auth payload of C{who}: one of L{LOGINS}."""
    return await http.login(token=LOGINS[who]())


async def broadcast(http: Http, token: str, channel_id: str, name: str, payload: Any,
                    timeout: int | str | None = None) -> Answer:
    """POST a broadcast (C{timeout} in milliseconds): the answer, whatever its status."""
    params = None if timeout is None else {"timeout": str(timeout)}
    return await guard(http.call(
        "POST", "/api/networks/current/broadcasts",
        {"channel": channel_id, "name": name, "payload": payload},
        token=token, params=params,
    ))


async def respond(http: Http, token: str, message: dict[str, Any], payload: Any) -> Answer:
    """POST a response to the broadcast C{message}: the answer, whatever its status."""
    return await guard(http.call(
        "POST", "/api/networks/current/responses",
        {"id": message["id"], "channel": message["channel"], "payload": payload},
        token=token,
    ))


async def next_broadcast(client: Client) -> dict[str, Any]:
    """The data of the next packet, which must be a C{broadcast} event."""
    name, args = parse_event(await client.next())
    assert name == "broadcast", (name, args)
    return dict(args[0])


async def assert_sid_unknown(http: Http, sid: str) -> None:
    """Polling with C{sid} is answered 400 C{Session ID unknown}."""
    for method, body in (("GET", None), ("POST", frame(["2"]))):
        answer = await Polling(http, None).request(method, body, sid=sid)
        assert answer.code == 400, answer
        assert answer.json == {"code": 1, "message": "Session ID unknown"}


async def sid_known(http: Http, sid: str) -> bool:
    """Whether the server still has a session C{sid} (asked without its token)."""
    answer = await Polling(http, None).request("GET", sid=sid)
    assert answer.code == 400, answer
    return bool(answer.json["code"] != 1)


async def pending_poll(client: Polling) -> Deferred[list[str]]:
    """
    A GET poll that the server is known to hold: of two concurrent polls the
    server ends the older with C{6}, so the other one is then waiting.
    """
    polls = [ensureDeferred(client.get()), ensureDeferred(client.get())]
    (packets, index) = await guard(DeferredList(polls, fireOnOneCallback=True,
                                                fireOnOneErrback=True))
    assert packets == ["6"]
    return polls[1 - index]


class Bystander:
    """A well-behaved WebSocket client, to show the server still serves others."""

    def __init__(self, http: Http, token: str, client: WebSocket) -> None:
        self.http, self.token, self.client = http, token, client

    @classmethod
    async def join(cls, net: Clients, token: str) -> Bystander:
        """A bystander on WebSocket with C{token}, subscribed to the lobby."""
        client = await in_lobby(net, "websocket", token)
        assert isinstance(client, WebSocket)
        return cls(net.http, token, client)

    async def check(self) -> None:
        """It still pongs and still receives broadcasts."""
        await assert_served(self.client)
        answer = await broadcast(self.http, self.token, LOBBY, "still-there", 1)
        assert answer.code == 200, answer
        assert (await next_broadcast(self.client))["name"] == "still-there"
