"""
Our server side by side with its peer, a minimal EXP network on the socket.io
2.x server from npm (issue 14).

The peer (benchmarks/peer.js, on the socket.io that tests/interop pins) has
what the benchmarks use and nothing more: a login answering a fixed auth
payload, Socket.IO on /socket.io/ taking the token in the query, `subscribe`
joining rooms and answered with `subscribed`, and POST
/api/networks/current/broadcasts emitting `broadcast` to the room.  The same
clients drive both servers (network.py's):

  fanout   one broadcast to --sessions subscribed WebSocket sessions (held by
           --client-processes worker processes per server): post -> last
           delivery (median), post -> first delivery (median), server CPU per
           broadcast
  latency  broadcast -> frame at one listener, one broadcast at a time,
           p50 / p99; server CPU per broadcast
  rate     broadcasts per second delivered to one listener with --concurrency
           posters (one request in flight on each keep-alive connection);
           server CPU per broadcast; sent, failed and delivered
  floor    ours only against a bare twisted.web Site (benchmarks/webfloor.py)
           answering the same broadcast POSTs with [] and doing nothing else,
           --concurrency in flight, no listener: requests/s and server CPU
           per request, which shows what the HTTP server of twisted.web costs
           before our server does anything
  memory   server RSS per idle subscribed session (--idle-sessions); server
           CPU per session connected and subscribed
  rest     ours only: server CPU per GET /api/devices/{uuid} (the demo
           device), one request in flight and --concurrency
  sdk      ours only: the SDK (ExpService, in a process of its own) calling
           get_device in a loop, and receiving broadcasts through a listener:
           its CPU per call and per broadcast, from /proc/self/task/*/schedstat

Each benchmark runs --rounds rounds, each on a fresh pair of servers (ours:
``python -m twisted exp-server --no-access-log`` with network.py's caps for
one client address and one identity, on a new SQLite database; the peer:
``node benchmarks/peer.js``), both running side by side.  Within a round
the work alternates between them (ours, peer, ours, peer: single broadcasts
in fanout, blocks of broadcasts in latency, slices of time in rate, one
server after the other in memory), and the side that goes first alternates
from round to round, so that what else the machine does hits both.  The
figures pool the rounds.

Every figure is printed for ours and for the peer, with ours/peer and the
issue's goal, and the CPU time that other processes of the machine used
meanwhile (in cores, during ours / during the peer).  CPU times come from
/proc/<pid>/task/*/schedstat (all threads of the process, in ns).

    .venv/bin/python benchmarks/peers.py [--only fanout|latency|rate|floor|memory|rest|sdk]

With --py-spy DIR, py-spy samples our server during the measured part of each
round (not while sessions connect) into DIR/<benchmark>-<round>.txt; the peer
is not sampled, so such a run's figures are not comparable.

This is a script, not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from network import (
    HOST,
    Arrivals,
    Cpu,
    CpuMeter,
    HttpConnection,
    InProcessClients,
    ServerProcess,
    WorkerClients,
    _log,
    _pct,
    add_log_options,
    connect_listeners,
    connect_requester,
    cpu_seconds,
    drain,
    fanout_once,
    latency_once,
    logs_directory,
    machine,
    memory_growth,
    now,
    post_broadcast,
    sleep,
    start_profile,
)
from twisted.internet import defer, protocol, stdio, task
from twisted.protocols.basic import LineReceiver

from exp.server.testing import DEMO

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_JS = os.path.join(HERE, "peer.js")
INTEROP = os.path.join(os.path.dirname(HERE), "tests", "interop")
SERVER_ARGS = ("--no-access-log",)
OURS, PEER, FLOOR = "ours", "peer", "twisted.web"
WEBFLOOR = os.path.join(HERE, "webfloor.py")
BOTH = (OURS, PEER)


class PeerProcess(ServerProcess):
    """The peer (peer.js) in its own process, driven like L{ServerProcess}."""

    log_name = "peer.log"

    def __init__(self, reactor: Any, directory: str) -> None:
        super().__init__(reactor, directory)
        self.fixed_token = secrets.token_hex(16)

    def command(self) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("the peer needs node (and `make install` for tests/interop)")
        return [node, PEER_JS, "--port", str(self.port), "--token", self.fixed_token]


class FloorProcess(ServerProcess):
    """A bare twisted.web Site (webfloor.py), driven like L{ServerProcess}."""

    log_name = "webfloor.log"

    def command(self) -> list[str]:
        return [sys.executable, WEBFLOOR, "--port", str(self.port)]


def server_for(reactor: Any, side: str, directory: str) -> ServerProcess:
    """Ours, the peer or the floor, not started yet."""
    if side == PEER:
        return PeerProcess(reactor, directory)
    if side == FLOOR:
        return FloorProcess(reactor, directory)
    return ServerProcess(reactor, directory, SERVER_ARGS)


def socketio_version() -> str:
    try:
        with open(os.path.join(INTEROP, "node_modules", "socket.io", "package.json")) as f:
            return str(json.load(f)["version"])
    except OSError:
        return "not installed (make install)"


# -- what is measured -----------------------------------------------------------


class Tally:
    """What one side measured over the rounds: named samples and CPU time."""

    def __init__(self) -> None:
        self.cpu = Cpu(0, 0, 0, 0)
        self.samples: defaultdict[str, list[float]] = defaultdict(list)

    def add(self, cpu: Cpu | None = None, **samples: float) -> None:
        if cpu is not None:
            self.cpu += cpu
        for name, value in samples.items():
            self.samples[name].append(value)

    def total(self, name: str) -> float:
        return sum(self.samples[name])

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def pct(self, name: str, q: float) -> float:
        return _pct(self.samples[name], q)

    def others(self) -> str:
        """The cores that other processes used meanwhile."""
        return f"{self.cpu.other / self.cpu.wall:.2f}" if self.cpu.wall else "-"


Values = tuple[float, ...]
Servers = dict[str, ServerProcess]


class Figure:
    """
    One line of the table: C{ours} and C{peer} (a value or a few, e.g.
    p50 / p99), each formatted with C{fmt}; ours/peer; and the goal, which
    C{met} decides from ours and the ratios.
    """

    def __init__(self, bench: str, label: str, fmt: str, ours: float | Values,
                 peer: float | Values | None = None, goal: str = "",
                 met: Callable[[Values, Values], bool] | None = None,
                 others: str = "", note: str = "") -> None:
        self.bench, self.label, self.fmt = bench, label, fmt
        self.ours = ours if isinstance(ours, tuple) else (ours,)
        self.peer = None if peer is None else peer if isinstance(peer, tuple) else (peer,)
        self.ratios: Values = () if self.peer is None else tuple(
            o / p if p else float("nan") for o, p in zip(self.ours, self.peer, strict=True))
        self.goal, self.others, self.note = goal, others, note
        self.met = None if met is None else met(self.ours, self.ratios)

    def cells(self) -> tuple[str, ...]:
        def show(values: Values | None, fmt: str) -> str:
            return "-" if values is None else " / ".join(
                "-" if math.isnan(v) else fmt.format(v) for v in values)

        return (self.bench, self.label, show(self.ours, self.fmt), show(self.peer, self.fmt),
                show(self.ratios or None, "{:.2f}"), self.goal,
                "" if self.met is None else "met" if self.met else "NOT MET", self.others)


def table(figures: list[Figure]) -> str:
    header = ("benchmark", "figure", "ours", "peer", "ours/peer", "goal", "", "others")
    lines = [f.cells() for f in figures]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    out = []
    for k, line in enumerate([header, *lines]):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  {f.bench}: {f.label}: {f.note}" for f in figures if f.note]
    legend = ["", "others: the cores other processes of the machine used meanwhile, "
              "during ours / during the peer"]
    return "\n".join(out + legend + (["", "notes:", *notes] if notes else []))


def busy(tally: Tally) -> str:
    c = tally.cpu
    return (f"server {c.server / c.wall:.0%} and clients {c.client / c.wall:.0%} of a core, "
            f"the server waited for a CPU {c.server_wait / c.wall:.0%} of the time")


# -- the benchmarks ---------------------------------------------------------------


class Bench:
    """A benchmark: L{round} on fresh servers, --rounds times; then L{figures}."""

    name = ""
    sides: tuple[str, ...] = BOTH

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tally = {side: Tally() for side in self.sides}
        self.rounds = 0

    async def measuring(self, reactor: Any, servers: Servers) -> None:
        """The measured part of a round starts: with --py-spy, sample ours until L{measured}."""
        await start_profile(reactor, servers[OURS], self.args, f"{self.name}-{self.rounds}")

    def measured(self, servers: Servers) -> None:
        servers[OURS].stop_profile()

    async def round(self, reactor: Any, servers: Servers, order: Sequence[str]) -> None:
        raise NotImplementedError

    def figures(self) -> list[Figure]:
        raise NotImplementedError

    def others(self) -> str:
        return " / ".join(self.tally[side].others() for side in self.sides)

    def server_cpu(self, count: Callable[[Tally], float], goal: str = "",
                   met: Callable[[Values, Values], bool] | None = None,
                   ms: bool = False) -> Figure:
        """The server's CPU per broadcast (in us, or ms), of C{count(tally)} broadcasts."""
        fmt, scale = ("{:.1f} ms", 1e3) if ms else ("{:.0f} us", 1e6)
        return self.figure("server CPU per broadcast", fmt,
                           lambda t: t.cpu.server / max(1, count(t)) * scale, goal, met,
                           note="; ".join(f"{side}: {busy(self.tally[side])}"
                                          for side in self.sides))

    def figure(self, label: str, fmt: str, value: Callable[[Tally], float | Values],
               goal: str = "", met: Callable[[Values, Values], bool] | None = None,
               note: str = "") -> Figure:
        """A figure of every side, C{value} of its tally."""
        ours = value(self.tally[OURS])
        other = next((side for side in self.sides if side != OURS), None)
        peer = None if other is None else value(self.tally[other])
        return Figure(self.name, label, fmt, ours, peer, goal=goal, met=met,
                      others=self.others(), note=note)


class Fanout(Bench):
    name = "fanout"
    warmup = 3

    async def round(self, reactor: Any, servers: Servers, order: Sequence[str]) -> None:
        n, k = self.args.sessions, self.args.client_processes
        clients: dict[str, InProcessClients | WorkerClients] = {}
        http: dict[str, HttpConnection] = {}
        meters: dict[str, CpuMeter] = {}
        for side in order:
            started = now()
            clients[side] = WorkerClients(reactor, k) if k else InProcessClients(reactor)
            await clients[side].start(servers[side], n)
            _log(f"fanout: {n} sessions subscribed to {side} in {now() - started:.1f} s")
            http[side] = await servers[side].http_connection()
            meters[side] = CpuMeter(servers[side], clients[side].pids)
        broadcasts = self.args.fanout_broadcasts
        _log(f"fanout: {broadcasts} broadcasts to each, alternately")
        await self.measuring(reactor, servers)
        for seq in range(self.warmup + broadcasts):
            for side in order:
                await sleep(reactor, 0.2)
                first, last, cpu = await fanout_once(reactor, servers[side], clients[side],
                                                     http[side], meters[side], seq)
                if seq >= self.warmup:
                    self.tally[side].add(cpu, first=first, last=last)
        self.measured(servers)
        for side in order:
            http[side].close()
            await clients[side].close()

    def figures(self) -> list[Figure]:
        n = self.args.sessions
        count = len(self.tally[OURS].samples["last"])
        return [
            self.figure(f"{n:,} sessions: post -> last delivery, median of {count}", "{:.1f} ms",
                        lambda t: t.median("last"), "ours/peer <= 1.0",
                        lambda ours, ratio: ratio[0] <= 1.0),
            self.figure("post -> last delivery, min / max", "{:.1f}",
                        lambda t: (min(t.samples["last"]), max(t.samples["last"]))),
            self.figure("post -> first delivery, median", "{:.1f} ms",
                        lambda t: t.median("first"), "ours <= 5 ms",
                        lambda ours, ratio: ours[0] <= 5),
            self.server_cpu(lambda t: count, ms=True),
            self.figure("clients' CPU per broadcast", "{:.1f} ms",
                        lambda t: t.cpu.client / count * 1000,
                        note=f"{self.args.client_processes} client processes per server"),
        ]


class Latency(Bench):
    name = "latency"
    block = 50

    async def round(self, reactor: Any, servers: Servers, order: Sequence[str]) -> None:
        arrivals = {side: Arrivals() for side in order}
        factories, http, meters, seqs = {}, {}, {}, dict.fromkeys(order, 0)
        for side in order:
            factories[side] = servers[side].listener_factory(arrivals[side])
            await connect_listeners(reactor, factories[side], 1)
            http[side] = await servers[side].http_connection()
            meters[side] = CpuMeter(servers[side])
        blocks = max(1, self.args.broadcasts // self.block)
        _log(f"latency: {blocks * self.block} broadcasts to each, one at a time, "
             f"alternately in blocks of {self.block}")
        await self.measuring(reactor, servers)
        for b in range(1 + blocks):  # the first block warms up
            for side in order:
                meters[side].start()
                for _ in range(self.block):
                    seqs[side] += 1
                    frame, answer = await latency_once(reactor, servers[side], arrivals[side],
                                                       http[side], seqs[side])
                    if b:
                        self.tally[side].add(frame=frame, answer=answer)
                cpu = meters[side].stop()
                if b:
                    self.tally[side].add(cpu)
        self.measured(servers)
        for side in order:
            http[side].close()
            await factories[side].close_all(reactor)

    def figures(self) -> list[Figure]:
        count = len(self.tally[OURS].samples["frame"])
        return [
            self.figure(f"post -> frame at the listener, p50 / p99 of {count:,}", "{:.2f}",
                        lambda t: (t.median("frame"), t.pct("frame", 0.99)),
                        "p50 ours/peer <= 1.5", lambda ours, ratio: ratio[0] <= 1.5,
                        note="ms, from just before the POST is written to the frame's arrival"),
            self.figure("post -> HTTP answer, p50 / p99", "{:.2f}",
                        lambda t: (t.median("answer"), t.pct("answer", 0.99))),
            self.server_cpu(lambda t: count),
        ]


class Rate(Bench):
    name = "rate"
    slice = 1.0
    #: Whether a listener on each server receives the broadcasts.
    listener = True

    async def round(self, reactor: Any, servers: Servers, order: Sequence[str]) -> None:
        delivered = dict.fromkeys(order, 0)
        factories, requesters = {}, {}
        for side in order:
            if self.listener:
                def count(frame: bytes, arrived: float, side: str = side) -> None:
                    delivered[side] += 1

                factories[side] = servers[side].listener_factory(count)
                await connect_listeners(reactor, factories[side], 1)
            requesters[side] = await connect_requester(servers[side], self.args.concurrency)
        slices = max(1, round(self.args.duration / self.slice))
        _log(f"{self.name}: {slices} s of broadcasts to each, {self.args.concurrency} in "
             f"flight, alternately in slices of {self.slice:g} s")
        await self.measuring(reactor, servers)
        for s in range(1 + slices):  # the first slice warms up
            for side in order:
                requester, before, sent = requesters[side], delivered[side], requesters[side].sent
                meter = CpuMeter(servers[side])
                await requester.run(now() + self.slice)
                cpu = meter.stop()
                in_time = delivered[side] - before
                if self.listener:
                    await drain(reactor, functools.partial(delivered.__getitem__, side),
                                requester.sent)
                if s:
                    self.tally[side].add(cpu, delivered=in_time, sent=requester.sent - sent)
        self.measured(servers)
        for side in order:
            requesters[side].close()
            self.tally[side].add(failed=requesters[side].failed,
                                 lost=requesters[side].sent - delivered[side])
        for factory in factories.values():
            await factory.close_all(reactor)

    def figures(self) -> list[Figure]:
        c = self.args.concurrency
        return [
            self.figure(f"broadcasts/s delivered to one listener, {c} posters", "{:,.0f} /s",
                        lambda t: t.total("delivered") / t.cpu.wall,
                        ">= 4,000 /s, ours/peer >= 0.55",
                        lambda ours, ratio: ours[0] >= 4000 and ratio[0] >= 0.55,
                        note="delivered during the slices, over their time"),
            self.server_cpu(lambda t: t.total("sent"), "ours <= 200 us",
                            lambda ours, ratio: ours[0] <= 200),
            self.figure("sent (answered 200) / failed / lost", "{:,.0f}",
                        lambda t: (t.total("sent"), t.total("failed"), t.total("lost")),
                        "none failed or lost",
                        lambda ours, ratio: ours[1] == 0 and ours[2] == 0),
        ]


class Floor(Rate):
    """L{Rate}'s broadcasts without a listener, to ours and to a bare twisted.web Site."""

    name = "floor"
    sides = (OURS, FLOOR)
    listener = False

    def figures(self) -> list[Figure]:
        c = self.args.concurrency
        return [
            self.figure(f"POSTs/s answered, {c} in flight, no listener", "{:,.0f} /s",
                        lambda t: t.total("sent") / t.cpu.wall,
                        note="in the peer column a bare twisted.web Site "
                        "(benchmarks/webfloor.py) answering the same POSTs with []"),
            self.server_cpu(lambda t: t.total("sent")),
            self.figure("failed", "{:,.0f}", lambda t: t.total("failed")),
        ]


class Memory(Bench):
    name = "memory"

    async def round(self, reactor: Any, servers: Servers, order: Sequence[str]) -> None:
        n = self.args.idle_sessions
        await self.measuring(reactor, servers)
        for side in order:
            meter = CpuMeter(servers[side])
            before, after, took, factory = await memory_growth(reactor, servers[side], n)
            self.tally[side].add(meter.stop(), per=(after - before) / n, before=before,
                                 after=after, took=took)
            await factory.close_all(reactor)
        self.measured(servers)

    def figures(self) -> list[Figure]:
        n = self.args.idle_sessions
        return [
            self.figure(f"server RSS per idle subscribed session ({n:,}), median", "{:.1f} KiB",
                        lambda t: t.median("per"), "ours/peer <= 0.7",
                        lambda ours, ratio: ratio[0] <= 0.7),
            self.figure("server RSS before / after, median", "{:.1f}",
                        lambda t: (t.median("before") / 1024, t.median("after") / 1024),
                        note="MiB"),
            self.figure("server CPU per session connected and subscribed", "{:.0f} us",
                        lambda t: t.cpu.server / (len(t.samples["per"]) * (n + 20)) * 1e6,
                        note="with a warm-up of 20 sessions and a broadcast; connected "
                        f"{n:,} in {self.tally[OURS].median('took'):.1f} s (ours) / "
                        f"{self.tally[PEER].median('took'):.1f} s (peer)"),
        ]


def get_request(server: ServerProcess, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
            f"Authorization: Bearer {server.token}\r\n\r\n").encode("ascii")


class Rest(Bench):
    name = "rest"
    sides = (OURS,)

    async def round(self, reactor: Any, servers: Servers, order: Sequence[str]) -> None:
        server = servers[OURS]
        request = get_request(server, f"/api/devices/{DEMO['device_uuid']}")
        await self.measuring(reactor, servers)
        for concurrency in (1, self.args.concurrency):
            requester = await connect_requester(server, concurrency, lambda seq: request)
            await requester.run(now() + 0.5)  # warm-up
            sent, failed = requester.sent, requester.failed
            _log(f"rest: {self.args.rest_duration:g} s of GET /api/devices/{{uuid}}, "
                 f"{concurrency} in flight")
            meter = CpuMeter(server)
            await requester.run(now() + self.args.rest_duration)
            cpu = meter.stop()
            self.tally[OURS].add(cpu, **{f"calls{concurrency}": requester.sent - sent,
                                         f"failed{concurrency}": requester.failed - failed,
                                         f"wall{concurrency}": cpu.wall,
                                         f"server{concurrency}": cpu.server})
            requester.close()
        self.measured(servers)

    def figures(self) -> list[Figure]:
        figures = []
        for c in (1, self.args.concurrency):
            def per_call(t: Tally, c: int = c) -> float:
                return t.total(f"server{c}") / t.total(f"calls{c}") * 1e6

            t = self.tally[OURS]
            calls, failed = t.total(f"calls{c}"), t.total(f"failed{c}")
            goal, met = ("ours <= 450 us", lambda o, r: o[0] <= 450) if c == 1 else ("", None)
            figures.append(self.figure(
                f"server CPU per GET /api/devices/{{uuid}}, {c} in flight", "{:.0f} us",
                per_call, goal, met,
                note=f"{calls / t.total(f'wall{c}'):,.0f} calls/s, {failed:,.0f} failed"))
        figures[-1].note += f"; over both: {busy(self.tally[OURS])}"
        return figures


class Sdk(Bench):
    """The SDK in a process of its own (this script run with --sdk-worker)."""

    name = "sdk"
    sides = (OURS,)

    async def round(self, reactor: Any, servers: Servers, order: Sequence[str]) -> None:
        server = servers[OURS]
        worker = SdkWorkerProcess()
        reactor.spawnProcess(worker, sys.executable,
                             [sys.executable, os.path.abspath(__file__), "--sdk-worker",
                              server.url], env=os.environ.copy())
        await worker.line()  # ready
        pids = (worker.transport.pid,)  # type: ignore[union-attr]
        duration = self.args.rest_duration
        await self.measuring(reactor, servers)
        _log(f"sdk: {duration:g} s of get_device")
        meter = CpuMeter(server, pids)
        worker.send(f"rest {duration}")
        calls, sdk_cpu, wall = (float(w) for w in (await worker.line()).split())
        cpu = meter.stop()
        self.tally[OURS].add(cpu, calls=calls, rest_cpu=sdk_cpu, rest_wall=wall,
                             rest_server=cpu.server)
        n = self.args.sdk_broadcasts
        _log(f"sdk: {n} broadcasts to its listener")
        worker.send(f"listen {n}")
        await worker.line()  # listening
        meter = CpuMeter(server, pids)
        requesters = [await server.http_connection() for _ in range(4)]

        async def post(http: HttpConnection, seqs: range) -> None:
            for seq in seqs:
                await post_broadcast(http, server, seq)

        await defer.gatherResults([defer.ensureDeferred(post(http, range(i, n, 4)))
                                   for i, http in enumerate(requesters)])
        heard, sdk_cpu = (float(w) for w in (await worker.line()).split())
        cpu = meter.stop()
        self.tally[OURS].add(cpu, heard=heard, listen_cpu=sdk_cpu, listen_server=cpu.server)
        self.measured(servers)
        for http in requesters:
            http.close()
        worker.send("quit")
        await worker.ended

    def figures(self) -> list[Figure]:
        t = self.tally[OURS]
        calls, heard = t.total("calls"), t.total("heard")
        return [
            self.figure("SDK CPU per get_device call", "{:.0f} us",
                        lambda t: t.total("rest_cpu") / calls * 1e6, "ours <= 700 us",
                        lambda ours, ratio: ours[0] <= 700,
                        note=f"{calls / t.total('rest_wall'):,.0f} calls/s one at a time; "
                        "the server's CPU per call meanwhile: "
                        f"{t.total('rest_server') / calls * 1e6:.0f} us"),
            self.figure("SDK CPU per broadcast received by a listener", "{:.0f} us",
                        lambda t: t.total("listen_cpu") / heard * 1e6,
                        note=f"{heard:,.0f} broadcasts, 4 posted at a time; the server's "
                        f"CPU per broadcast meanwhile: {t.total('listen_server') / heard * 1e6:.0f}"
                        f" us; {busy(t)}"),
        ]


class SdkWorkerProcess(protocol.ProcessProtocol):
    """The driver's side of the SDK worker: lines in, lines out."""

    def __init__(self) -> None:
        self.lines: defer.DeferredQueue[str] = defer.DeferredQueue()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            self.lines.put(line.decode("ascii"))

    def errReceived(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.flush()

    def line(self) -> defer.Deferred[str]:
        return self.lines.get()

    def send(self, line: str) -> None:
        self.transport.write(line.encode("ascii") + b"\n")  # type: ignore[union-attr]

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.lines.put("")  # wakes a reader up: the worker is gone


class _Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: defer.DeferredQueue[str] = defer.DeferredQueue()

    def lineReceived(self, line: bytes) -> None:
        self.lines.put(line.decode("ascii"))

    def connectionLost(self, reason: Any = None) -> None:
        self.lines.put("quit")


def self_cpu() -> float:
    """This process's CPU time, all threads (from /proc/self/task/*/schedstat, in ns)."""
    return cpu_seconds(os.getpid())


async def sdk_worker(reactor: Any, url: str) -> None:
    """
    One ExpService, a user of the demo organization with a listener on the
    benchmarks' channel.  Commands on stdin: C{rest SECONDS}: get_device in
    a loop, answers C{<calls> <cpu> <wall>}; C{listen N}: answers C{listening}, then
    C{<N> <cpu>} once its listener had N broadcasts; C{quit}.
    """
    from exp.twisted import ExpService

    commands = _Commands()
    stdio.StandardIO(commands, reactor=reactor)
    service = ExpService(host=url, username=DEMO["username"], password=DEMO["password"],
                         organization=DEMO["organization"], reactor=reactor)
    service.startService()
    await service.whenAuthenticated()
    await service.whenConnected()
    heard = 0
    expected: tuple[int, defer.Deferred[None]] | None = None

    def on_broadcast(broadcast: Any) -> None:
        nonlocal heard
        heard += 1
        if expected is not None and heard == expected[0]:
            expected[1].callback(None)

    await service.get_channel("benchmark").listen("benchmark", on_broadcast)
    uuid = DEMO["device_uuid"]
    for _ in range(50):  # warms the connection pool up
        await service.get_device(uuid)
    commands.sendLine(b"ready")
    while True:
        words = (await commands.lines.get()).split()
        if not words or words[0] == "quit":
            break
        if words[0] == "rest":
            calls, cpu, started = 0, self_cpu(), now()
            while now() < started + float(words[1]):
                await service.get_device(uuid)
                calls += 1
            commands.sendLine(f"{calls} {self_cpu() - cpu!r} {now() - started!r}".encode("ascii"))
        elif words[0] == "listen":
            done: defer.Deferred[None] = defer.Deferred()
            heard = 0
            expected = (int(words[1]), done)
            cpu = self_cpu()
            commands.sendLine(b"listening")
            await done
            commands.sendLine(f"{heard} {self_cpu() - cpu!r}".encode("ascii"))
    await service.stopService()


BENCHMARKS: dict[str, type[Bench]] = {
    b.name: b for b in (Fanout, Latency, Rate, Floor, Memory, Rest, Sdk)}


# -- running them -----------------------------------------------------------------


async def run(reactor: Any, args: argparse.Namespace) -> None:
    node = shutil.which("node")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                  check=False).stdout.strip() if node else "missing"
    print("\n".join(machine()[:2]))
    print(f"ours    : python -m twisted exp-server {' '.join(SERVER_ARGS)} "
          "--max-connections-per-peer 0 --max-sessions-per-identity 100000, SQLite")
    print(f"peer    : node {node_version}, socket.io {socketio_version()} "
          "(benchmarks/peer.js); in floor: a bare twisted.web Site (benchmarks/webfloor.py)")
    print(f"load    : {os.getloadavg()[0]:.2f} (1 min average) before the first benchmark",
          flush=True)
    names = [args.only] if args.only else list(BENCHMARKS)
    figures: list[Figure] = []
    with logs_directory(args.keep) as directory:
        for name in names:
            bench = BENCHMARKS[name](args)
            for r in range(args.rounds):
                bench.rounds += 1
                order = bench.sides if r % 2 == 0 else bench.sides[::-1]
                _log(f"{name}: round {r + 1} of {args.rounds}, {' then '.join(order)}")
                servers: Servers = {}
                try:
                    for side in order:
                        servers[side] = server_for(reactor, side, directory)
                        await servers[side].start()
                    await bench.round(reactor, servers, order)
                finally:
                    for server in servers.values():
                        server.stop()
            figures += bench.figures()
    print()
    print(table(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--only", choices=list(BENCHMARKS), help="run one benchmark")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of each benchmark, each on a fresh pair of servers (2)")
    parser.add_argument("--sessions", type=int, default=1000,
                        help="sessions receiving each broadcast in fanout (1000)")
    parser.add_argument("--fanout-broadcasts", type=int, default=20,
                        help="broadcasts to each server per fanout round (20)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="worker processes holding each server's fanout sessions; 0: "
                        "in this process (2)")
    parser.add_argument("--broadcasts", type=int, default=1000,
                        help="broadcasts to each server per latency round (1000)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of broadcasting to each server per rate round (5)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests in flight in rate and rest, one per connection (16)")
    parser.add_argument("--idle-sessions", type=int, default=2000,
                        help="idle sessions in memory (2000)")
    parser.add_argument("--rest-duration", type=float, default=3.0,
                        help="seconds of GET per rest figure and of get_device in sdk (3)")
    parser.add_argument("--sdk-broadcasts", type=int, default=2000,
                        help="broadcasts to the SDK's listener per sdk round (2000)")
    add_log_options(parser, "<benchmark>-<round>.txt (ours only: take no figures from such "
                    "a run)")
    parser.add_argument("--sdk-worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sdk_worker:
        task.react(lambda reactor: defer.ensureDeferred(sdk_worker(reactor, args.sdk_worker)))
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
