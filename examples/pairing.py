"""
Pairing, end to end.  A device with no credentials starts in pairing mode
(``ExpService(host, allow_pairing=True)``) and shows its pairing code; a user
of an organization pairs that code (``POST /api/devices/pair``); the device
is given a uuid and secret, logs in with them, and stores them in a JSON file
so that its next start is paired.

As two programs against a server (say the local one, ``twistd -n exp-server
--listen tcp:9000:interface=127.0.0.1``).  The device::

    python examples/pairing.py --host http://127.0.0.1:9000 --credentials device.json

prints ``pairing code: ABC123`` and waits.  The user (``--username``,
``--password``, ``--organization`` or ``EXP_USERNAME``, ``EXP_PASSWORD``,
``EXP_ORGANIZATION``; the demo user by default) pairs it::

    python examples/pairing.py --host http://127.0.0.1:9000 --pair ABC123 --name lobby-2

The device then prints its new uuid, writes ``device.json`` and exits; run its
command again and it starts paired, from the file.

With no ``--host``, everything happens in one process against an embedded
local server (demo seed): the device, the user pairing it, and the second,
paired start::

    python examples/pairing.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from exp.server.testing import DEMO, start_server
from exp.twisted import ExpService


def load(path: str) -> tuple[str | None, str | None]:
    """The uuid and secret stored by an earlier pairing, if any."""
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except FileNotFoundError:
        return None, None
    return stored["uuid"], stored["secret"]


def store(path: str, uuid: str, secret: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"uuid": uuid, "secret": secret}, f)
    os.chmod(path, 0o600)


async def run_device(host: str, path: str,
                     pair: Callable[[str], Awaitable[None]] | None = None) -> str:
    """
    Start the device (paired if C{path} holds credentials), wait until it is
    paired, store its credentials; its uuid.  C{pair(code)} is called with
    the pairing code, if one is needed.
    """
    uuid, secret = load(path)
    device = ExpService(host, uuid=uuid, secret=secret, allow_pairing=True)
    paired: Deferred[dict[str, Any]] = Deferred()

    def updated(auth: dict[str, Any]) -> None:  # every new auth payload
        if auth["identity"].get("paired") is not False and not paired.called:
            paired.callback(auth)

    device.on("update", updated)
    device.startService()
    try:
        await device.whenAuthenticated()
        code = device.pairing_code
        if code is None:
            print("started paired, as device", device.identity["uuid"], flush=True)
        else:
            print("pairing code:", code, flush=True)
            if pair is not None:
                await pair(code)
        auth = await paired
        uuid = auth["identity"]["uuid"]
        secret = device.options.secret  # the one it was paired with
        if code is not None and secret is not None:
            store(path, uuid, secret)
            print(f"paired: logged in as device {uuid}; credentials stored in {path}")
        return str(uuid)
    finally:
        await device.stopService()


async def run_user(host: str, args: argparse.Namespace, code: str) -> None:
    """Pair the device waiting with C{code} to the user's organization."""
    user = ExpService(host, username=args.username, password=args.password,
                      organization=args.organization, enable_network=False)
    user.startService()
    try:
        device = await user.post("/api/devices/pair", {"pairingCode": code, "name": args.name})
        print(f"user {args.username} paired code {code}: device {device['uuid']}"
              f" ({device['name']!r})")
    finally:
        await user.stopService()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument("--host", default=env("EXP_HOST"),
                        help="EXP API URL (default: all in one process, embedded server)")
    parser.add_argument("--credentials", help="the device's JSON credentials file"
                        " (default: device.json; a temporary file without --host)")
    parser.add_argument("--pair", metavar="CODE", help="act as the user: pair this code")
    parser.add_argument("--name", default="paired device", help="the paired device's name")
    parser.add_argument("--username", default=env("EXP_USERNAME", DEMO["username"]))
    parser.add_argument("--password", default=env("EXP_PASSWORD", DEMO["password"]))
    parser.add_argument("--organization",
                        default=env("EXP_ORGANIZATION", DEMO["organization"]))
    return parser.parse_args(argv)


async def main(reactor: Any, *argv: str) -> None:
    args = parse(list(argv))
    if args.host is not None:
        if args.pair:
            await run_user(args.host, args, args.pair)
        else:
            await run_device(args.host, args.credentials or "device.json")
        return

    server = await start_server()
    directory = tempfile.mkdtemp(prefix="exp-pairing-")
    path = args.credentials or os.path.join(directory, "device.json")
    try:
        print("embedded local EXP server on", server.url)
        uuid = await run_device(server.url, path,
                                lambda code: run_user(server.url, args, code))
        print("starting again with", path)
        again = await run_device(server.url, path)
        if again != uuid:
            raise SystemExit(f"the second start is device {again}, not {uuid}")
    finally:
        await server.stop()
        if not args.credentials:
            if os.path.exists(path):
                os.remove(path)
            os.rmdir(directory)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
