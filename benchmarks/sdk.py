"""
Benchmarks of the Deferred-native SDK, ExpService, against a local server (issue 4).

  roundtrip  two ExpService instances in this process: a user broadcasts
             (Channel.broadcast, timeout --timeout) and a device listens with a
             callback that calls Broadcast.respond.  Per round, from just before
             broadcast() is called: (1) until the device's callback runs,
             (2) until the device's respond() has been answered by the server,
             i.e. the response is in the server's collection for the broadcast
             (the round trip broadcast -> listener -> respond -> response at the
             server), and (3) until broadcast() returns the list of responses,
             which the server sends only when --timeout has run out, so (3) is
             the timeout plus the overhead reported here.  --rounds sequential
             rounds, p50/p99.
  rest       get_device calls per second over the SDK's persistent connection
             pool, one at a time and --concurrency at a time, --duration s each.

    .venv/bin/python benchmarks/sdk.py [--only roundtrip|rest]

The server runs in its own process (python -m twisted exp-server
--no-access-log, a fresh one per benchmark); the SDK instances in this one.
This is a script, not a test.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from typing import Any

from network import CpuMeter, Row, ServerProcess, _log, _pct, machine, now, table
from twisted.internet import defer, task

from exp.server.testing import DEMO
from exp.twisted import ExpService

SERVER_ARGS = ("--no-access-log",)


async def _started(service: ExpService) -> ExpService:
    service.startService()
    await service.whenAuthenticated()
    return service


async def user(reactor: Any, server: ServerProcess, network: bool = True) -> ExpService:
    return await _started(ExpService(
        host=server.url, username=DEMO["username"], password=DEMO["password"],
        organization=DEMO["organization"], enable_network=network, reactor=reactor))


async def device(reactor: Any, server: ServerProcess, network: bool = True) -> ExpService:
    return await _started(ExpService(
        host=server.url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"],
        enable_network=network, reactor=reactor))


async def bench_roundtrip(reactor: Any, server: ServerProcess,
                          args: argparse.Namespace) -> list[Row]:
    broadcaster = await user(reactor, server)
    responder = await device(reactor, server)
    await broadcaster.whenConnected()
    await responder.whenConnected()
    heard: dict[int, float] = {}
    responded: dict[int, defer.Deferred[float]] = {}

    def on_ping(broadcast: Any) -> defer.Deferred[None]:
        seq = broadcast.payload["seq"]
        heard[seq] = now()
        d = broadcast.respond({"seq": seq})
        d.addCallback(lambda _: responded[seq].callback(now()))
        return d

    await responder.get_channel("benchmark").listen("ping", on_ping)
    channel = broadcaster.get_channel("benchmark")
    n, warmup, timeout = args.rounds, 20, args.timeout
    _log(f"roundtrip: {n} rounds, broadcast timeout {timeout * 1000:g} ms")
    to_listener: list[float] = []
    to_response: list[float] = []
    to_return: list[float] = []
    missing = 0
    meter = CpuMeter(server)
    for i in range(warmup + n):
        if i == warmup:
            meter.start()
        responded[i] = defer.Deferred()
        started = now()
        answer = channel.broadcast("ping", {"seq": i}, timeout=timeout)
        at_server = await responded[i].addTimeout(10, reactor)
        responses = await answer
        returned = now()
        if i >= warmup:
            to_listener.append((heard[i] - started) * 1000)
            to_response.append((at_server - started) * 1000)
            to_return.append((returned - started - timeout) * 1000)
            missing += {"seq": i} not in responses
    cpu = meter.stop()
    await broadcaster.stopService()
    await responder.stopService()
    p50 = statistics.median(to_response)
    return [
        Row("roundtrip", f"broadcast -> listener -> respond() answered, p50 of {n}",
            f"{p50:.2f} ms", "p50 < 10 ms", p50 < 10,
            "from just before Channel.broadcast() to the responder's respond() Deferred "
            "firing: the response is then in the server's collection"),
        Row("roundtrip", "broadcast -> respond() answered, p90 / p99 / max",
            f"{_pct(to_response, 0.9):.2f} / {_pct(to_response, 0.99):.2f} / "
            f"{max(to_response):.2f} ms"),
        Row("roundtrip", "broadcast -> listener callback, p50 / p99",
            f"{statistics.median(to_listener):.2f} / {_pct(to_listener, 0.99):.2f} ms"),
        Row("roundtrip", f"broadcast() returns: time beyond its {timeout * 1000:g} ms "
            "timeout, p50 / p99",
            f"{statistics.median(to_return):.2f} / {_pct(to_return, 0.99):.2f} ms",
            note="the server answers the broadcast POST when the timeout runs out; this "
            "is the end-to-end time minus the timeout"),
        Row("roundtrip", "rounds whose response was missing from broadcast()'s list",
            f"{missing}", "0", missing == 0, note=cpu.busy()),
    ]


async def bench_rest(reactor: Any, server: ServerProcess, args: argparse.Namespace) -> list[Row]:
    service = await user(reactor, server, network=False)
    uuid = DEMO["device_uuid"]
    for _ in range(50):  # warm up the pool
        assert await service.get_device(uuid) is not None
    rows = []
    for concurrency in (1, args.concurrency):
        _log(f"rest: {args.duration:g} s of get_device, {concurrency} at a time")
        calls = 0
        deadline = now() + args.duration

        async def loop(deadline: float = deadline) -> None:
            nonlocal calls
            while now() < deadline:
                await service.get_device(uuid)
                calls += 1

        meter = CpuMeter(server)
        await defer.gatherResults([defer.ensureDeferred(loop()) for _ in range(concurrency)])
        cpu = meter.stop()
        rate = calls / cpu.wall
        what = "one at a time" if concurrency == 1 else f"{concurrency} concurrent"
        rows.append(Row("rest", f"get_device calls per second, {what}", f"{rate:,.0f} /s",
                        ">= 500 /s", rate >= 500,
                        f"{calls:,} calls in {cpu.wall:.1f} s; CPU per call: server "
                        f"{cpu.server / calls * 1e6:.0f} us, SDK {cpu.client / calls * 1e6:.0f}"
                        f" us; {cpu.busy()}"))
    await service.stopService()
    return rows


BENCHMARKS = {"roundtrip": bench_roundtrip, "rest": bench_rest}


async def run(reactor: Any, args: argparse.Namespace) -> None:
    print("\n".join(machine()))
    print(f"server  : {' '.join(SERVER_ARGS)} (no line per request in the log)", flush=True)
    directory = tempfile.mkdtemp(prefix="exp-bench-")
    rows: list[Row] = []
    try:
        for name in [args.only] if args.only else list(BENCHMARKS):
            server = ServerProcess(reactor, directory, SERVER_ARGS)
            try:
                await server.start()
                rows += await BENCHMARKS[name](reactor, server, args)
            finally:
                server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run one benchmark")
    parser.add_argument("--rounds", type=int, default=300, help="roundtrip rounds (300)")
    parser.add_argument("--timeout", type=float, default=0.05,
                        help="the broadcast's timeout in roundtrip, seconds (0.05)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of calls per rest figure (5)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="calls in flight in the second rest figure (8)")
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
