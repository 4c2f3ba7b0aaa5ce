"""
Load: --instances ExpService instances exchanging broadcasts and responses (issue 7).

Every instance (the demo device, network enabled) listens for broadcasts named
"ping" on one shared channel and responds to every one it did not send itself;
every --interval seconds (first one at a random offset) it broadcasts a ping
with a --timeout second timeout.  The instances live in --client-processes
worker processes (this script with --worker); the server in its own (python -m
twisted exp-server --no-access-log, temporary database).  After --duration s
the instances stop broadcasting, the pending broadcasts finish, and the
workers report.  Figures:

  sent        broadcasts whose POST was answered (broadcast() returned)
  delivered   listener callbacks run for other instances' sent broadcasts; expected:
              sent x (instances - 1), everyone being subscribed all along
  accepted    respond() calls the server answered with success
  in time     accepted responses whose answer reached the responder before
              the broadcast's start + timeout: the server had them before its
              own timer (started later) ran out, so it must return them
  received    responses in the lists broadcast() returned
  lost        per broadcast max(0, in time - received), summed: goal 0
  server RSS  VmRSS before the first broadcast and after the last one (all
              sessions still connected): goal no growth beyond noise (< 5 %)

    .venv/bin/python benchmarks/load.py [--duration 60] [--instances 200]

This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from typing import Any

from network import (
    CpuMeter,
    Row,
    ServerProcess,
    _log,
    cpu_seconds,
    machine,
    now,
    sleep,
    table,
)
from twisted.internet import defer, protocol, stdio, task
from twisted.protocols.basic import LineReceiver

from exp.server.testing import DEMO
from exp.twisted import ExpService

SERVER_ARGS = ("--no-access-log",)


# -- a worker process: its share of the instances ------------------------------------


class _Control(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: dict[bytes, defer.Deferred[None]] = {
            b"go": defer.Deferred(), b"quit": defer.Deferred()}

    def lineReceived(self, line: bytes) -> None:
        d = self.lines.get(line.strip())
        if d is not None and not d.called:
            d.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        for d in self.lines.values():
            if not d.called:
                d.callback(None)


async def worker(reactor: Any, url: str, index: int, count: int,
                 args: argparse.Namespace) -> None:
    control = _Control()
    stdio.StandardIO(control, reactor=reactor)
    respond_failed = broadcast_failed = 0
    delivered: dict[str, int] = {}  # broadcast key -> listener callbacks run
    accepted: dict[str, list[float]] = {}  # broadcast key -> times respond() was answered
    sent: dict[str, list[float]] = {}  # broadcast key -> [start, responses received]

    async def start(key: str) -> ExpService:
        service = ExpService(host=url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"],
                             reactor=reactor)
        service.startService()
        await service.whenConnected()

        def on_ping(broadcast: Any) -> None:
            sender = broadcast.payload["key"]  # "<instance key>:<seq>"
            if sender.rpartition(":")[0] == key:
                return
            delivered[sender] = delivered.get(sender, 0) + 1

            def ok(_: Any) -> None:
                accepted.setdefault(sender, []).append(now())

            def failed(_: Any) -> None:
                nonlocal respond_failed
                respond_failed += 1

            broadcast.respond({"from": key}).addCallbacks(ok, failed)

        await service.get_channel("load").listen("ping", on_ping, timeout=60)
        return service

    semaphore = defer.DeferredSemaphore(10)
    keys = [f"{index}.{k}" for k in range(count)]
    services = await defer.gatherResults(
        [semaphore.run(lambda k=k: defer.ensureDeferred(start(k))) for k in keys],
        consumeErrors=True)
    control.sendLine(b"ready")
    await control.lines[b"go"]
    deadline = now() + args.duration

    async def broadcaster(key: str, service: ExpService) -> None:
        nonlocal broadcast_failed
        channel = service.get_channel("load")
        await sleep(reactor, min(random.uniform(0, args.interval), args.duration))
        seq = 0
        while now() < deadline:
            seq += 1
            name = f"{key}:{seq}"
            started = now()
            try:
                responses = await channel.broadcast("ping", {"key": name}, timeout=args.timeout)
            except Exception:
                broadcast_failed += 1
            else:
                sent[name] = [started, len(responses)]
            await sleep(reactor, max(0.0, min(deadline, started + args.interval) - now()))

    await defer.gatherResults([defer.ensureDeferred(broadcaster(k, s))
                               for k, s in zip(keys, services, strict=True)])
    await sleep(reactor, 1)  # the last responses
    report = {"sent": sent, "accepted": accepted, "delivered": delivered,
              "respond_failed": respond_failed, "broadcast_failed": broadcast_failed}
    control.sendLine(json.dumps(report).encode("utf-8"))
    await control.lines[b"quit"]
    await defer.gatherResults([s.stopService() for s in services])


# -- the driver ------------------------------------------------------------------


class WorkerProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.report: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line == b"ready":
                self.ready.callback(None)
            elif line.startswith(b"{"):
                self.report.callback(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.flush()

    def processEnded(self, reason: Any) -> None:
        for d in (self.ready, self.report):
            if not d.called:
                d.errback(RuntimeError("a worker exited early"))
        self.ended.callback(None)


async def run(reactor: Any, args: argparse.Namespace) -> None:
    print("\n".join(machine()[:2]))
    print(f"server  : python -m twisted exp-server {' '.join(SERVER_ARGS)} (no line per"
          " request in the log)")
    print(f"load    : {os.getloadavg()[0]:.2f} (1 min average) before the run", flush=True)
    n, k = args.instances, args.client_processes
    directory = tempfile.mkdtemp(prefix="exp-bench-")
    server = ServerProcess(reactor, directory, SERVER_ARGS)
    try:
        await server.start()
        workers = []
        for i in range(k):
            share = n // k + (i < n % k)
            w = WorkerProcess()
            reactor.spawnProcess(
                w, sys.executable,
                [sys.executable, os.path.abspath(__file__), "--worker", server.url, str(i),
                 str(share), "--duration", str(args.duration), "--interval",
                 str(args.interval), "--timeout", str(args.timeout)], env=os.environ.copy())
            workers.append(w)
        started = now()
        await defer.gatherResults([w.ready for w in workers], consumeErrors=True)
        _log(f"{n} instances connected and listening in {now() - started:.1f} s")
        await sleep(reactor, 2)
        rss_before = server.rss_kib()
        pids = tuple(w.transport.pid for w in workers)  # type: ignore[attr-defined]
        meter = CpuMeter(server, pids)
        clients0 = sum(cpu_seconds(p) for p in pids)
        for w in workers:
            w.transport.write(b"go\n")  # type: ignore[attr-defined]
        _log(f"{args.duration:g} s of broadcasts, each instance every {args.interval:g} s")
        reports = await defer.gatherResults([w.report for w in workers], consumeErrors=True)
        cpu = meter.stop()
        clients = sum(cpu_seconds(p) for p in pids) - clients0
        await sleep(reactor, 2)
        rss_after = server.rss_kib()
        for w in workers:
            w.transport.write(b"quit\n")  # type: ignore[attr-defined]
        await defer.gatherResults([w.ended for w in workers])
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)

    sent: dict[str, list[float]] = {}
    accepted: dict[str, list[float]] = {}
    for r in reports:
        sent.update(r["sent"])
        for key, times in r["accepted"].items():
            accepted.setdefault(key, []).extend(times)
    delivered = sum(r["delivered"].get(key, 0) for r in reports for key in sent)
    failed = sum(r["respond_failed"] for r in reports)
    broadcast_failed = sum(r["broadcast_failed"] for r in reports)
    received = sum(count for _, count in sent.values())
    n_accepted = sum(len(accepted.get(key, ())) for key in sent)
    in_time = lost = 0
    for key, (start, count) in sent.items():
        timely = sum(t < start + args.timeout for t in accepted.get(key, ()))
        in_time += timely
        lost += max(0, timely - int(count))
    expected = len(sent) * (n - 1)
    growth = (rss_after - rss_before) / rss_before
    rows = [
        Row("load", f"{n} instances, {cpu.wall:.0f} s: broadcasts sent / failed",
            f"{len(sent):,} / {broadcast_failed}", note=f"{len(sent) / cpu.wall:.1f} "
            f"broadcasts/s; timeout {args.timeout:g} s; {k} client processes"),
        Row("load", "delivered / expected (sent x (instances - 1))",
            f"{delivered:,} / {expected:,}", "all", delivered >= expected),
        Row("load", "responses: accepted / in time / received / respond() failed",
            f"{n_accepted:,} / {in_time:,} / {received:,} / {failed}"),
        Row("load", "responses lost (in time but not received)", f"{lost}", "0", lost == 0,
            note=f"accepted but not received, late ones included: {n_accepted - received}"),
        Row("load", "server RSS before / after",
            f"{rss_before / 1024:.1f} / {rss_after / 1024:.1f} MiB ({growth:+.1%})",
            "< +5 %", growth < 0.05),
        Row("load", "CPU: server / clients",
            f"{cpu.server / cpu.wall:.0%} / {clients / cpu.wall:.0%} of a core",
            note=cpu.busy()),
    ]
    print()
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("--instances", type=int, default=200, help="ExpService instances (200)")
    parser.add_argument("--interval", type=float, default=30.0,
                        help="seconds between one instance's broadcasts (30)")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="each broadcast's timeout, seconds (2)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="worker processes holding the instances (2)")
    parser.add_argument("--worker", nargs=3, metavar=("URL", "INDEX", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, index, count = args.worker
        task.react(lambda reactor: defer.ensureDeferred(
            worker(reactor, url, int(index), int(count), args)))
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
