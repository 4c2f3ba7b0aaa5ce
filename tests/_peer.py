"""
An SDK instance (L{exp.twisted.ExpService}) in a process of its own, for the
tests that run no reactor themselves (the browser's and the command line's).

Run as C{python -m tests._peer CONFIG}, with CONFIG a JSON object::

    {"host": URL, "options": {ExpService options},
     "listen": [{"channel", "name", "system"?, "consumer"?}]}

It prints one JSON line per event on stdout (C{authenticated}, C{pairing}
with the code, C{paired}, C{connected}, C{listening}, C{received},
C{broadcasted}, C{data}, C{stopped}) and takes one JSON command per line on
stdin: C{{"broadcast": {"channel", "name", "payload", "timeout"}}},
C{{"get_data": {"group", "key"}}}, C{{"stop": true}}.  Every listener
responds C{{"from": <its uuid>, "echo": <payload>}}.  Closing stdin stops it.

L{Peer} starts one and reads its events.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: Generous: the machine is shared and may be slow, but a hang must end.
PATIENCE = 60.0


class Peer:
    """The test's side: start the process, wait for its events, send commands."""

    def __init__(self, host: str, listen: list[dict[str, Any]] | None = None,
                 **options: Any) -> None:
        config = {"host": host, "options": options, "listen": listen or []}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests._peer", json.dumps(config)], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                continue
        self._events.put(None)

    def expect(self, event: str, timeout: float = PATIENCE) -> dict[str, Any]:
        """The next event named C{event} (earlier others are kept in L{seen})."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                got = self._events.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"no {event!r} from the peer in {timeout:g} s; saw "
                                     f"{self.seen}") from None
            if got is None:
                self._events.put(None)
                raise AssertionError(f"the peer ended before {event!r}; saw {self.seen}\n"
                                     + self.errors())
            self.seen.append(got)
            if got["event"] == event:
                return got

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def errors(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()

    def stop(self) -> None:
        """Stop the SDK instance and wait for the process to end."""
        if self.process.poll() is None:
            try:
                self.send(stop=True)
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(PATIENCE)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(PATIENCE)


# -- the peer's side ---------------------------------------------------------------


def _print(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _main(reactor: Any, config: dict[str, Any]) -> None:
    from twisted.internet import defer, stdio
    from twisted.protocols.basic import LineReceiver

    from exp.twisted import ExpService

    service = ExpService(config["host"], reactor=reactor, request_timeout=10,
                         retry_policy=lambda attempt: 0.2 * min(attempt, 5),
                         **config["options"])
    done: defer.Deferred[None] = defer.Deferred()
    paired: defer.Deferred[None] = defer.Deferred()

    pairing: list[bool] = []

    def updated(payload: dict[str, Any]) -> None:
        if payload["identity"].get("paired") is False:
            pairing.append(True)
        elif pairing and not paired.called:
            _print("paired", identity=payload["identity"])
            paired.callback(None)

    service.on("update", updated)

    async def command(line: str) -> None:
        order = json.loads(line)
        if "broadcast" in order:
            spec = order["broadcast"]
            channel = service.get_channel(spec["channel"], consumer=spec.get("consumer", False))
            responses = await channel.broadcast(spec["name"], spec.get("payload"),
                                                timeout=spec.get("timeout", 0.5))
            _print("broadcasted", responses=responses)
        elif "get_data" in order:
            item = await service.get_data(order["get_data"]["key"], order["get_data"]["group"])
            _print("data", value=None if item is None else item.value)
        elif "stop" in order:
            await stop()

    async def stop() -> None:
        if not done.called:
            await service.stopService()
            _print("stopped")
            done.callback(None)

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            defer.ensureDeferred(command(line.decode("utf-8"))).addErrback(
                lambda f: _print("error", message=f.getErrorMessage()))

        def connectionLost(self, reason: Any = None) -> None:
            defer.ensureDeferred(stop())

    stdio.StandardIO(Commands())
    service.startService()
    auth = await service.whenAuthenticated()
    _print("authenticated", identity=auth["identity"])
    if service.pairing_code:
        _print("pairing", code=service.pairing_code)
        await paired
    await service.whenConnected()
    _print("connected")
    for spec in config["listen"]:
        uuid = service.identity["uuid"]

        def respond(broadcast: Any, uuid: str = uuid) -> Any:
            _print("received", name=broadcast.name, payload=broadcast.payload)
            return broadcast.respond({"from": uuid, "echo": broadcast.payload})

        channel = service.get_channel(spec["channel"], system=spec.get("system", False),
                                      consumer=spec.get("consumer", False))
        await channel.listen(spec["name"], callback=respond)
        _print("listening", channel=spec["channel"], name=spec["name"])
    await done


if __name__ == "__main__":
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    settings = json.loads(sys.argv[1])
    task.react(lambda reactor: ensureDeferred(_main(reactor, settings)))
