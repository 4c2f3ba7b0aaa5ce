"""
EXP inside a Twisted application: one service tree (a MultiService) holds an
ExpService and a twisted.web site beside it.  The site's page, ``GET /``,
answers JSON: the EXP identity, whether the network is connected, and how
many broadcasts named ``hello`` arrived on the channel ``ops``::

    {"host": ..., "identity": {...}, "is_connected": true, "listening": true,
     "channel": "ops", "event": "hello", "broadcasts": 0}

Run it with no options to start an embedded local EXP server (demo seed) and
connect as its demo device; the page is on http://127.0.0.1:8080/::

    python examples/status_page.py

Against a server, as a device (``--uuid``/``--secret``, or ``EXP_UUID`` and
``EXP_SECRET``; the demo device by default)::

    python examples/status_page.py --host http://127.0.0.1:9000 --port 8080

Broadcast ``hello`` on ``ops`` (as a user or device of the organization) and
reload the page.  Ctrl-C or SIGTERM stops the service tree, then the program.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.application.strports import service as endpoint_service
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from exp.server.testing import DEMO, RunningServer, start_server
from exp.twisted import Broadcast, ExpError, ExpService


class StatusPage(Resource):
    """C{GET /}: the state of an ExpService, as JSON."""

    isLeaf = True

    def __init__(self, exp: ExpService, channel: str, event: str) -> None:
        super().__init__()
        self.exp = exp
        self.channel = channel
        self.event = event
        self.listening = False
        self.broadcasts = 0

    def received(self, broadcast: Broadcast) -> None:
        self.broadcasts += 1

    def render_GET(self, request: Request) -> bytes:
        try:
            identity: dict[str, Any] | None = self.exp.identity
        except ExpError:  # not authenticated yet
            identity = None
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({
            "host": self.exp.options.host, "identity": identity,
            "is_connected": self.exp.is_connected, "listening": self.listening,
            "channel": self.channel, "event": self.event, "broadcasts": self.broadcasts,
        }).encode()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("EXP_HOST"),
                        help="EXP API URL (default: start an embedded local server)")
    parser.add_argument("--uuid", default=os.environ.get("EXP_UUID", DEMO["device_uuid"]))
    parser.add_argument("--secret",
                        default=os.environ.get("EXP_SECRET", DEMO["device_secret"]))
    parser.add_argument("--port", type=int, default=8080, help="the status page's port")
    parser.add_argument("--channel", default="ops")
    parser.add_argument("--event", default="hello")
    return parser.parse_args(argv)


async def main(reactor: Any, *argv: str) -> None:
    args = parse(list(argv))
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])

    server: RunningServer | None = None
    host = args.host
    if host is None:
        server = await start_server()
        host = server.url
        print("embedded local EXP server on", host, flush=True)

    exp = ExpService(host, uuid=args.uuid, secret=args.secret)
    page = StatusPage(exp, args.channel, args.event)
    application = MultiService()
    exp.setServiceParent(application)
    web = endpoint_service(f"tcp:{args.port}:interface=127.0.0.1", Site(page))
    web.setServiceParent(application)

    async def shutdown() -> None:
        await application.stopService()
        if server is not None:
            await server.stop()

    reactor.addSystemEventTrigger("before", "shutdown", lambda: ensureDeferred(shutdown()))
    application.startService()
    print(f"status page on http://127.0.0.1:{args.port}/", flush=True)

    await exp.whenAuthenticated()
    await exp.get_channel(args.channel).listen(args.event, page.received)
    page.listening = True
    await Deferred()  # serve until the reactor stops (Ctrl-C, SIGTERM)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
