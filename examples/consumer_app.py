"""
A consumer app (a uuid and an api key, e.g. a kiosk or a phone app) on the
EXP network: it may only use consumer channels.  It listens for ``hello`` on
the consumer channel ``kiosk``, answers it, broadcasts ``hello`` there and
prints the responses; then it shows that a non-consumer channel is refused
(``NetworkError`` when listening, a 403 ``ApiError`` when broadcasting).

Run it with no options to start an embedded local EXP server (demo seed) and
use its demo consumer app::

    python examples/consumer_app.py

Against a server, with the app's credentials as options or ``EXP_UUID`` and
``EXP_API_KEY`` (the demo consumer app by default)::

    python examples/consumer_app.py --host http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from exp.server.testing import DEMO, RunningServer, start_server
from exp.twisted import ApiError, Broadcast, ExpService, NetworkError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("EXP_HOST"),
                        help="EXP API URL (default: start an embedded local server)")
    parser.add_argument("--uuid", default=os.environ.get("EXP_UUID", DEMO["consumer_uuid"]))
    parser.add_argument("--api-key", default=os.environ.get("EXP_API_KEY", DEMO["api_key"]))
    return parser.parse_args(argv)


async def use_channels(app: ExpService) -> None:
    kiosk = app.get_channel("kiosk", consumer=True)

    def answer(broadcast: Broadcast) -> Deferred[None]:
        print(f"heard {broadcast.name} {broadcast.payload!r} on consumer channel kiosk")
        return broadcast.respond({"welcome": broadcast.payload})

    await kiosk.listen("hello", answer)
    responses = await kiosk.broadcast("hello", "visitor", timeout=1)
    print("responses on consumer channel kiosk:", responses)

    staff = app.get_channel("kiosk")  # the same name, but not a consumer channel
    try:
        await staff.listen("hello", timeout=10)
    except NetworkError as e:
        print("listening on non-consumer channel kiosk refused: NetworkError:", e)
    else:
        raise SystemExit("a consumer app was allowed to listen on a non-consumer channel")
    try:
        await staff.broadcast("hello", "visitor")
    except ApiError as e:
        print(f"broadcasting on non-consumer channel kiosk refused: ApiError {e.status_code}"
              f" {e.code}")
    else:
        raise SystemExit("a consumer app was allowed to broadcast on a non-consumer channel")


async def main(reactor: Any, *argv: str) -> None:
    args = parse(list(argv))
    server: RunningServer | None = None
    host = args.host
    if host is None:
        server = await start_server()
        host = server.url
        print("embedded local EXP server on", host)
    app = ExpService(host, uuid=args.uuid, api_key=args.api_key)
    app.startService()
    try:
        auth = await app.whenAuthenticated()
        print("logged in as", auth["identity"]["type"], auth["identity"]["uuid"])
        await use_channels(app)
    finally:
        await app.stopService()
        if server is not None:
            await server.stop()
    print("done")


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
