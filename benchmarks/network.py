"""
Benchmarks of the local EXP server's real-time network (issue 3).

Each benchmark starts a fresh server in its own process (``python -m twisted
exp-server``, i.e. the ``twist`` runner, which always runs in the foreground,
with a temporary database on a free loopback port), drives it over real
sockets, stops it, and the script prints a table of figures and goals:

  fanout   one broadcast (POST /api/networks/current/broadcasts?timeout=0) to
           --connections subscribed WebSocket sessions: time from posting it
           until the last session has received it (goal < 100 ms)
  latency  broadcast -> listener at low load: one listener, sequential
           broadcasts, p50/p99 (goal p50 < 2 ms)
  rate     sustained broadcasts per second to one listener, --concurrency
           requests in flight on as many keep-alive connections (goal 2,000/s)
  memory   server RSS (VmRSS) per idle subscribed WebSocket session, with
           --idle-connections sessions (goal < 30 KiB)

    .venv/bin/python benchmarks/network.py [--only fanout|latency|rate|memory]

The network clients speak Engine.IO 3 / Socket.IO straight over WebSocket with
Autobahn.  Receiving a frame costs a client about as much CPU as sending it
costs the server, so the fan-out sessions live in --client-processes worker
processes (this script run with --worker); the other benchmarks' clients run
in this process.  Broadcasts are posted by a minimal keep-alive HTTP/1.1
client (one request in flight per connection, no pipelining) that costs a few
microseconds per request, where treq's Agent costs a few hundred.  Each
benchmark also reports the CPU time of the server and of the clients, what
other processes used meanwhile, and how long the server waited for a CPU
(from /proc/<pid>/task/*/schedstat): on a shared 2-core machine the wall-clock
figures are only as good as the machine is quiet.  This is a script, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, cast

import autobahn
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.copyright import version as twisted_version
from twisted.internet import defer, protocol, stdio, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineReceiver
from twisted.web.client import Agent, HTTPConnectionPool

from exp.protocol import encode_channel
from exp.protocol import engineio as eio

DEMO_LOGIN = {"username": "test@goexp.io", "password": "test-Password1",
              "organization": "scala"}
HOST = "127.0.0.1"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
now = time.perf_counter  # CLOCK_MONOTONIC on Linux


def _log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# -- the server under test ----------------------------------------------------



class ServerProcess:
    """
    ``python -m twisted exp-server`` in its own process, with its own database
    (a new SQLite file in C{directory}) unless C{db} names one.  C{runner_args}
    go to C{twist} (before C{exp-server}), e.g. C{("--reactor", "asyncio")}.
    """

    def __init__(self, reactor: Any, directory: str, extra_args: tuple[str, ...] = (),
                 db: str | None = None, runner_args: tuple[str, ...] = ()) -> None:
        self.reactor = reactor
        self.extra_args = extra_args
        self.runner_args = runner_args
        self.directory = directory
        self.port = _free_port()
        self.db = db or os.path.join(directory, f"exp-{self.port}.sqlite3")
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.network_url = ""
        self.profiler: subprocess.Popen[bytes] | None = None

    #: The log file in C{directory}, appended to.
    log_name = "server.log"

    def command(self) -> list[str]:
        """The command line of the server."""
        return [sys.executable, "-m", "twisted", "--log-format", "text",
                *self.runner_args, "exp-server",
                "--listen", f"tcp:{self.port}:interface={HOST}",
                "--db", self.db,
                # every client of a benchmark comes from this one address,
                "--max-connections-per-peer", "0",
                # and all its sessions are one identity's, where a fleet spreads
                # them over many
                "--max-sessions-per-identity", "100000",
                *self.extra_args]

    async def start(self) -> None:
        """Spawn the server and log in as the demo user once it answers."""
        log = open(os.path.join(self.directory, self.log_name), "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.directory)
        log.close()
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)  # on ^C too
        pool = HTTPConnectionPool(self.reactor, persistent=False)
        client = treq.client.HTTPClient(Agent(self.reactor, pool=pool))
        deadline = now() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited; see {self.directory}/{self.log_name}")
            try:
                response = await client.post(f"{self.url}/api/auth/login", json=DEMO_LOGIN)
                auth = await response.json()
                break
            except Exception:
                if now() > deadline:
                    raise
                await sleep(self.reactor, 0.1)
        if response.code != 200:
            raise RuntimeError(f"login failed: {response.code} {auth}")
        self.token = auth["token"]
        self.network_url = "ws" + auth["network"]["host"][len("http"):]
        self.channel = encode_channel(auth["identity"]["organization"], "benchmark")

    def profile(self, py_spy: str, output: str) -> None:
        """Sample the server with py-spy into C{output} (folded stacks) until L{stop}."""
        assert self.process is not None
        self.profiler = subprocess.Popen(
            [py_spy, "record", "--pid", str(self.process.pid), "--format", "raw",
             "--rate", "250", "--nonblocking", "--output", output],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_profile(self) -> None:
        """Stop sampling (py-spy then writes its output)."""
        if self.profiler is not None and self.profiler.poll() is None:
            self.profiler.send_signal(signal.SIGINT)
            self.profiler.wait(30)

    def stop(self) -> None:
        self.stop_profile()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_kib(self) -> int:
        """The server's resident set size (VmRSS), in KiB."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def cpu_wait_seconds(self) -> float:
        """How long the server was ready to run but waited for a CPU."""
        assert self.process is not None
        return _schedstat(self.process.pid)[1]

    def broadcast_request(self, seq: int) -> bytes:
        """The bytes of one broadcast POST, whose payload carries C{seq}."""
        body = json.dumps({"channel": self.channel, "name": "benchmark",
                           "payload": {"seq": seq, "text": "hello, world"}},
                          separators=(",", ":")).encode("utf-8")
        head = (f"POST /api/networks/current/broadcasts?timeout=0 HTTP/1.1\r\n"
                f"Host: {HOST}:{self.port}\r\n"
                f"Authorization: Bearer {self.token}\r\n"
                f"Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        return head.encode("ascii") + body

    async def http_connection(self) -> HttpConnection:
        endpoint = TCP4ClientEndpoint(self.reactor, HOST, self.port)
        return await connectProtocol(endpoint, HttpConnection())

    def listener_url(self) -> str:
        return f"{self.network_url}/socket.io/?EIO=3&transport=websocket&token={self.token}"

    def listener_factory(self, on_broadcast: Callable[[bytes, float], None]) -> ListenerFactory:
        return ListenerFactory(self.listener_url(), self.channel, on_broadcast)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


# -- clients ------------------------------------------------------------------


class HttpConnection(protocol.Protocol):
    """
    One keep-alive HTTP/1.1 connection of the pool.  L{request} writes
    prepared bytes; the answer is C{(status, body, arrival time)}.  It reads
    responses with a Content-Length, which is all the server sends.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._pending: deque[defer.Deferred[tuple[int, bytes, float]]] = deque()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

    def request(self, data: bytes) -> defer.Deferred[tuple[int, bytes, float]]:
        d: defer.Deferred[tuple[int, bytes, float]] = defer.Deferred()
        self._pending.append(d)
        self.transport.write(data)  # type: ignore[union-attr]
        return d

    def dataReceived(self, data: bytes) -> None:
        arrived = now()
        self._buffer += data
        while self._pending:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self._buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            body, self._buffer = self._buffer[end + 4:total], self._buffer[total:]
            self._pending.popleft().callback((int(lines[0].split(" ", 2)[1]), body, arrived))

    def connectionLost(self, reason: Any = None) -> None:
        while self._pending:
            self._pending.popleft().errback(reason)

    def close(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class Listener(WebSocketClientProtocol):
    """
    An Engine.IO 3 / Socket.IO session over WebSocket that subscribes to the
    factory's channel and hands each broadcast frame, with its arrival time,
    to the factory.  It answers nothing; it pings as protocol 3 asks.
    """

    factory: ListenerFactory

    def __init__(self) -> None:
        super().__init__()
        self.subscribed: defer.Deferred[Listener] = defer.Deferred()
        self._ready = False

    def onOpen(self) -> None:
        self.factory.open.add(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        arrived = now()
        if self._ready:
            if payload.startswith(b'42["broadcast"'):
                self.factory.on_broadcast(payload, arrived)
            return
        packet = eio.Packet.decode(payload.decode("utf-8"))
        if packet.type != eio.MESSAGE:
            return  # the open packet, pongs
        message = eio.SocketIOPacket.decode(packet.data)
        if message.type == eio.CONNECT:
            subscribe = eio.event("subscribe", [self.factory.channel])
            self.sendMessage(subscribe.encode("utf-8"))
        elif message.type == eio.EVENT and message.data[0] == "subscribed":
            if self.factory.channel not in message.data[1]:
                self._fail(f"subscription refused: {message.data}")
                return
            self._ready = True
            self.subscribed.callback(self)
        elif message.type == eio.ERROR:
            self._fail(f"Socket.IO error: {message.data}")

    def _fail(self, why: str) -> None:
        if not self.subscribed.called:
            self.subscribed.errback(RuntimeError(why))
        self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.open.discard(self)
        if not self.subscribed.called:
            self.subscribed.errback(RuntimeError(f"closed before subscribing: {reason}"))
        if not self.factory.open and self.factory.all_closed is not None:
            d, self.factory.all_closed = self.factory.all_closed, None
            d.callback(None)


class ListenerFactory(WebSocketClientFactory):
    protocol = Listener  # type: ignore[assignment]

    def __init__(self, url: str, channel: str,
                 on_broadcast: Callable[[bytes, float], None]) -> None:
        super().__init__(url)
        self.setProtocolOptions(openHandshakeTimeout=30, closeHandshakeTimeout=5)
        self.channel = channel
        self.on_broadcast = on_broadcast
        self.open: set[Listener] = set()
        self.all_closed: defer.Deferred[None] | None = None
        self._pinger = task.LoopingCall(self._ping)
        self._pinger.start(20, now=False)

    def _ping(self) -> None:
        for listener in list(self.open):
            listener.sendMessage(b"2")

    async def close_all(self, reactor: Any) -> None:
        """Abort every session and wait until all are gone."""
        if self._pinger.running:
            self._pinger.stop()
        if not self.open:
            return
        self.all_closed = defer.Deferred()
        for listener in list(self.open):
            listener.dropConnection(abort=True)
        await self.all_closed.addTimeout(30, reactor)


async def connect_listeners(reactor: Any, factory: ListenerFactory, count: int,
                            parallel: int = 32) -> list[Listener]:
    """C{count} sessions subscribed to the channel, C{parallel} handshakes at a time."""
    endpoint = TCP4ClientEndpoint(reactor, factory.host, factory.port, timeout=30)
    semaphore = defer.DeferredSemaphore(parallel)

    async def one() -> Listener:
        listener = cast(Listener, await endpoint.connect(factory))
        return await listener.subscribed.addTimeout(30, reactor)

    def start() -> defer.Deferred[Listener]:
        return defer.ensureDeferred(one())

    return await defer.gatherResults([semaphore.run(start) for _ in range(count)],
                                     consumeErrors=True)


def seq_of(frame: bytes) -> int:
    """
    The C{seq} of a broadcast frame.  The payload is the last member of the
    broadcast and C{seq} the first of the payload, so a byte search finds it
    without decoding the JSON (which would double the client's cost per frame).
    """
    start = frame.rindex(b'"payload":{"seq":') + 17
    return int(frame[start:frame.index(b",", start)])


class Arrivals:
    """Arrival times of broadcasts, by their C{seq}."""

    def __init__(self) -> None:
        self._rounds: dict[int, tuple[int, list[float], defer.Deferred[list[float]]]] = {}

    def expect(self, seq: int, count: int) -> defer.Deferred[list[float]]:
        """The arrival times of C{seq}, once C{count} listeners have it."""
        d: defer.Deferred[list[float]] = defer.Deferred()
        self._rounds[seq] = (count, [], d)
        return d

    def __call__(self, frame: bytes, arrived: float) -> None:
        seq = seq_of(frame)
        expected = self._rounds.get(seq)
        if expected is None:
            return
        count, times, d = expected
        times.append(arrived)
        if len(times) == count:
            del self._rounds[seq]
            d.callback(times)


# -- the benchmarks -----------------------------------------------------------


class Row:
    def __init__(self, bench: str, figure: str, value: str, goal: str = "",
                 met: bool | None = None, note: str = "") -> None:
        self.bench, self.figure, self.value = bench, figure, value
        self.goal, self.met, self.note = goal, met, note


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _schedstat(pid: int) -> tuple[float, float]:
    """
    CPU time and time spent waiting for a CPU of all threads of process
    C{pid}, in seconds (from /proc/<pid>/task/*/schedstat, in ns).
    """
    run = wait = 0
    for task_id in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task_id}/schedstat") as f:
                fields = f.read().split()
        except FileNotFoundError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def cpu_seconds(pid: int) -> float:
    """CPU time process C{pid} has used."""
    return _schedstat(pid)[0]


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICK


class CpuMeter:
    """Server, client and other processes' CPU time over a stretch of a benchmark."""

    def __init__(self, server: ServerProcess, client_pids: tuple[int, ...] = ()) -> None:
        self.server = server
        self.client_pids = client_pids
        self.start()

    def _client(self) -> float:
        return time.process_time() + sum(cpu_seconds(pid) for pid in self.client_pids)

    def start(self) -> None:
        self._server0, self._client0 = self.server.cpu_seconds(), self._client()
        self._wait0 = self.server.cpu_wait_seconds()
        self._machine0, self._wall0 = machine_busy_seconds(), now()

    def stop(self) -> Cpu:
        server = self.server.cpu_seconds() - self._server0
        client = self._client() - self._client0
        other = machine_busy_seconds() - self._machine0 - server - client
        return Cpu(server, client, max(0.0, other), now() - self._wall0,
                   self.server.cpu_wait_seconds() - self._wait0)


class Cpu:
    """CPU seconds used by the server, the clients and other processes, in C{wall} s."""

    def __init__(self, server: float, client: float, other: float, wall: float,
                 server_wait: float = 0.0) -> None:
        self.server, self.client, self.other, self.wall = server, client, other, wall
        self.server_wait = server_wait

    def __iadd__(self, more: Cpu) -> Cpu:
        self.server += more.server
        self.client += more.client
        self.other += more.other
        self.wall += more.wall
        self.server_wait += more.server_wait
        return self

    def busy(self) -> str:
        """Each side's share of a core, and what other processes used."""
        w = self.wall
        return (f"server {self.server / w:.0%}, clients {self.client / w:.0%} of a core,"
                f" other processes {self.other / w:.2f} cores;"
                f" the server waited for a CPU {self.server_wait / w:.0%} of the time")


# -- fan-out clients: in this process or in worker processes --------------------


class InProcessClients:
    """The fan-out sessions, in this process."""

    pids: tuple[int, ...] = ()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._arrivals = Arrivals()

    async def start(self, server: ServerProcess, count: int) -> None:
        self.count = count
        self._factory = server.listener_factory(self._arrivals)
        await connect_listeners(self.reactor, self._factory, count)

    def expect(self, seq: int) -> defer.Deferred[tuple[float, float]]:
        """The first and last arrival of broadcast C{seq} at the sessions."""
        d = self._arrivals.expect(seq, self.count)
        return d.addCallback(lambda times: (min(times), max(times)))

    async def close(self) -> None:
        await self._factory.close_all(self.reactor)


class WorkerClients:
    """
    The fan-out sessions, split over worker processes (this script run with
    C{--worker}).  Each reports the first and last arrival of a broadcast at
    its sessions; times are CLOCK_MONOTONIC, the same in every process.
    C{reports[seq]} keeps each worker's C{(first, last)}, by the worker's index.
    """

    def __init__(self, reactor: Any, processes: int) -> None:
        self.reactor = reactor
        self.processes = processes
        self._workers: list[WorkerProcess] = []
        self._rounds: dict[int, dict[int, tuple[float, float]]] = {}
        self._waiting: dict[int, defer.Deferred[tuple[float, float]]] = {}
        self.reports: dict[int, dict[int, tuple[float, float]]] = {}

    async def start(self, server: ServerProcess, count: int) -> None:
        shares = [count // self.processes + (i < count % self.processes)
                  for i in range(self.processes)]
        await self.start_on([(server, share) for share in shares])

    async def start_on(self, shares: list[tuple[ServerProcess, int]]) -> None:
        """One worker per C{(server, sessions)}: its sessions connect to that server."""
        self.processes = len(shares)
        for index, (server, share) in enumerate(shares):
            worker = WorkerProcess(functools.partial(self._report, index))
            self.reactor.spawnProcess(
                worker, sys.executable,
                [sys.executable, os.path.abspath(__file__), "--worker",
                 server.listener_url(), server.channel, str(share)],
                env=os.environ.copy())
            self._workers.append(worker)
        await defer.gatherResults([w.ready for w in self._workers], consumeErrors=True)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(w.transport.pid for w in self._workers)  # type: ignore[union-attr]

    def expect(self, seq: int) -> defer.Deferred[tuple[float, float]]:
        d: defer.Deferred[tuple[float, float]] = defer.Deferred()
        self._waiting[seq] = d
        self._rounds[seq] = {}
        return d

    def _report(self, worker: int, seq: int, first: float, last: float) -> None:
        reports = self._rounds.get(seq)
        if reports is None:
            return
        reports[worker] = (first, last)
        if len(reports) == self.processes:
            del self._rounds[seq]
            self.reports[seq] = reports
            self._waiting.pop(seq).callback(
                (min(r[0] for r in reports.values()), max(r[1] for r in reports.values())))

    async def close(self) -> None:
        for worker in self._workers:
            worker.transport.write(b"quit\n")  # type: ignore[union-attr]
        await defer.gatherResults([w.ended for w in self._workers])


class WorkerProcess(protocol.ProcessProtocol):
    """The driver's side of one worker: C{ready}, then C{<seq> <first> <last>} lines."""

    def __init__(self, report: Callable[[int, float, float], None]) -> None:
        self.report = report
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            words = line.split()
            if words == [b"ready"]:
                self.ready.callback(None)
            elif len(words) == 3:
                self.report(int(words[0]), float(words[1]), float(words[2]))

    def errReceived(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.flush()

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError("a client worker exited before it was ready"))
        self.ended.callback(None)


class _WorkerControl(LineReceiver):
    """A worker's stdin/stdout: C{quit} ends it."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.quit: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        if line.strip() == b"quit" and not self.quit.called:
            self.quit.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.quit.called:
            self.quit.callback(None)


async def worker(reactor: Any, url: str, channel: str, count: int) -> None:
    """A client worker: C{count} sessions reporting the arrivals of each broadcast."""
    control = _WorkerControl()
    stdio.StandardIO(control, reactor=reactor)
    rounds: dict[int, list[float]] = {}

    def arrived(frame: bytes, at: float) -> None:
        seq = seq_of(frame)
        r = rounds.get(seq)
        if r is None:
            r = rounds[seq] = [0, at, at]
        r[0] += 1
        r[2] = at
        if r[0] == count:
            del rounds[seq]
            control.sendLine(f"{seq} {r[1]!r} {r[2]!r}".encode("ascii"))

    factory = ListenerFactory(url, channel, arrived)
    await connect_listeners(reactor, factory, count, parallel=16)
    control.sendLine(b"ready")
    await control.quit
    await factory.close_all(reactor)


# -- the benchmarks -------------------------------------------------------------
#
# Each step of a benchmark is a function of its own, so that peers.py can run
# the same steps on our server and on its peer, alternately.


async def post_broadcast(http: HttpConnection, server: ServerProcess,
                         seq: int) -> tuple[bytes, float]:
    """Post broadcast C{seq}; its answer's body and arrival time (it must be a 200)."""
    status, body, answered = await http.request(server.broadcast_request(seq))
    if status != 200:
        raise RuntimeError(f"broadcast failed: {status} {body!r}")
    return body, answered


async def fanout_once(reactor: Any, server: ServerProcess,
                      clients: InProcessClients | WorkerClients, http: HttpConnection,
                      meter: CpuMeter, seq: int) -> tuple[float, float, Cpu]:
    """
    Post broadcast C{seq} to the subscribed C{clients}: the time until the
    first and until the last session had it (ms from just before the POST),
    and the CPU used meanwhile (until the POST was answered too).
    """
    meter.start()
    arrived = clients.expect(seq)
    sent = now()
    answer = defer.ensureDeferred(post_broadcast(http, server, seq))
    first, last = await arrived.addTimeout(30, reactor)
    await answer
    return (first - sent) * 1000, (last - sent) * 1000, meter.stop()


async def latency_once(reactor: Any, server: ServerProcess, arrivals: Arrivals,
                       http: HttpConnection, seq: int) -> tuple[float, float]:
    """
    Post broadcast C{seq} to one listener that hands its frames to
    C{arrivals}: ms from just before the POST to the frame, and to the answer.
    """
    arrived = arrivals.expect(seq, 1)
    sent = now()
    answer = defer.ensureDeferred(post_broadcast(http, server, seq))
    (frame_at,) = await arrived.addTimeout(10, reactor)
    _, answered_at = await answer
    return (frame_at - sent) * 1000, (answered_at - sent) * 1000


class Requester:
    """
    Requests, one in flight on each of C{connections} keep-alive connections:
    C{request(seq)} makes the bytes of the C{seq}th.  It counts those answered
    200 as C{sent} and the others as C{failed}.
    """

    def __init__(self, connections: list[HttpConnection],
                 request: Callable[[int], bytes]) -> None:
        self.connections, self.request = connections, request
        self.sent = self.failed = self.seq = 0

    async def run(self, until: float) -> None:
        """Request on every connection until C{until} (L{now}), then wait for the answers."""
        await defer.gatherResults([defer.ensureDeferred(self._loop(c, until))
                                   for c in self.connections])

    async def _loop(self, http: HttpConnection, until: float) -> None:
        while now() < until:
            self.seq += 1
            status, _, _ = await http.request(self.request(self.seq))
            if status == 200:
                self.sent += 1
            else:
                self.failed += 1

    def close(self) -> None:
        for c in self.connections:
            c.close()


async def connect_requester(server: ServerProcess, concurrency: int,
                            request: Callable[[int], bytes] | None = None) -> Requester:
    """A L{Requester} on C{server}, of broadcasts unless C{request} says otherwise."""
    return Requester([await server.http_connection() for _ in range(concurrency)],
                     request or server.broadcast_request)


async def drain(reactor: Any, delivered: Callable[[], int], sent: int,
                seconds: float = 5) -> None:
    """Wait until C{delivered()} reaches C{sent}, C{seconds} at most."""
    deadline = now() + seconds
    while delivered() < sent and now() < deadline:
        await sleep(reactor, 0.05)


async def memory_growth(reactor: Any, server: ServerProcess,
                        count: int) -> tuple[int, int, float, ListenerFactory]:
    """
    The server's RSS (KiB) before and after C{count} idle subscribed sessions
    connect (after a warm-up of 20 sessions and a broadcast, and 2 s of
    rest), how long they took to connect, and their factory, to close them.
    """
    warm = server.listener_factory(lambda frame, arrived: None)
    await connect_listeners(reactor, warm, 20)
    http = await server.http_connection()
    await post_broadcast(http, server, 0)
    http.close()
    await warm.close_all(reactor)
    await sleep(reactor, 1)
    before = server.rss_kib()
    factory = server.listener_factory(lambda frame, arrived: None)
    _log(f"memory: connecting {count} sessions (server RSS {before / 1024:.1f} MiB)")
    started = now()
    await connect_listeners(reactor, factory, count)
    took = now() - started
    await sleep(reactor, 2)
    return before, server.rss_kib(), took, factory


async def bench_fanout(reactor: Any, server: ServerProcess, args: argparse.Namespace) -> list[Row]:
    n, k = args.connections, args.client_processes
    clients: InProcessClients | WorkerClients = (
        WorkerClients(reactor, k) if k else InProcessClients(reactor))
    where = f"{k} client processes" if k else "this process"
    _log(f"fanout: connecting {n} sessions from {where}")
    started = now()
    await clients.start(server, n)
    _log(f"fanout: {n} sessions subscribed in {now() - started:.1f} s; {args.rounds} rounds")
    http = await server.http_connection()
    lasts: list[float] = []
    firsts: list[float] = []
    meter = CpuMeter(server, clients.pids)
    total = Cpu(0, 0, 0, 0)
    warmup = 3
    for i in range(warmup + args.rounds):
        await sleep(reactor, 0.2)
        first, last, cpu = await fanout_once(reactor, server, clients, http, meter, i)
        if i >= warmup:
            total += cpu
            lasts.append(last)
            firsts.append(first)
    http.close()
    await clients.close()
    rounds = args.rounds
    median = statistics.median(lasts)
    return [
        Row("fanout", f"{n:,} sessions: post -> last delivery, median of {rounds}",
            f"{median:.1f} ms", "< 100 ms", median < 100,
            f"sessions in {where}"),
        Row("fanout", "post -> last delivery, min / max",
            f"{min(lasts):.1f} / {max(lasts):.1f} ms", "< 100 ms", max(lasts) < 100),
        Row("fanout", "post -> first delivery, median", f"{statistics.median(firsts):.1f} ms"),
        Row("fanout", "CPU per broadcast: server / clients",
            f"{total.server / rounds * 1000:.0f} / {total.client / rounds * 1000:.0f} ms",
            note=f"while broadcasting: {total.busy()}"),
    ]


async def bench_latency(reactor: Any, server: ServerProcess,
                        args: argparse.Namespace) -> list[Row]:
    arrivals = Arrivals()
    factory = server.listener_factory(arrivals)
    await connect_listeners(reactor, factory, 1)
    http = await server.http_connection()
    n, warmup = args.broadcasts, 50
    _log(f"latency: {n} sequential broadcasts to one listener")
    frames: list[float] = []
    answers: list[float] = []
    meter = CpuMeter(server)
    for i in range(warmup + n):
        if i == warmup:
            meter.start()
        frame, answer = await latency_once(reactor, server, arrivals, http, i)
        if i >= warmup:
            frames.append(frame)
            answers.append(answer)
    cpu = meter.stop()
    http.close()
    await factory.close_all(reactor)
    p50 = statistics.median(frames)
    return [
        Row("latency", f"post -> frame at the listener, p50 of {n:,}", f"{p50:.2f} ms",
            "p50 < 2 ms", p50 < 2, "from just before the POST is written to the frame's "
            "arrival: includes sending the request and the server's HTTP handling "
            "(parse, token, route) up to the fan-out, not the HTTP answer"),
        Row("latency", "post -> frame, p90 / p99 / max",
            f"{_pct(frames, 0.9):.2f} / {_pct(frames, 0.99):.2f} / {max(frames):.2f} ms"),
        Row("latency", "post -> HTTP answer (200 []), p50 / p99",
            f"{statistics.median(answers):.2f} / {_pct(answers, 0.99):.2f} ms"),
        Row("latency", "CPU per broadcast: server / client",
            f"{cpu.server / n * 1e6:.0f} / {cpu.client / n * 1e6:.0f} us",
            note=f"{n / cpu.wall:.0f} broadcasts/s one at a time; {cpu.busy()}"),
    ]


async def bench_rate(reactor: Any, server: ServerProcess, args: argparse.Namespace) -> list[Row]:
    delivered = 0

    def count(frame: bytes, arrived: float) -> None:
        nonlocal delivered
        delivered += 1

    factory = server.listener_factory(count)
    await connect_listeners(reactor, factory, 1)
    poster = await connect_requester(server, args.concurrency)
    _log(f"rate: {args.duration:g} s of broadcasts, {args.concurrency} in flight")
    meter = CpuMeter(server)
    await poster.run(now() + args.duration)
    cpu = meter.stop()
    in_time = delivered
    await drain(reactor, lambda: delivered, poster.sent)
    poster.close()
    await factory.close_all(reactor)
    rate = in_time / cpu.wall
    sent = poster.sent
    return [
        Row("rate", f"broadcasts delivered per second ({args.concurrency} in flight)",
            f"{rate:,.0f} /s", ">= 2,000 /s", rate >= 2000,
            f"{in_time:,} delivered in {cpu.wall:.1f} s; {cpu.busy()}"),
        Row("rate", "sent (answered 200) / failed / delivered in the end",
            f"{sent:,} / {poster.failed:,} / {delivered:,}"),
        Row("rate", "server CPU per broadcast", f"{cpu.server / max(sent, 1) * 1e6:.0f} us"),
    ]


async def bench_memory(reactor: Any, server: ServerProcess,
                       args: argparse.Namespace) -> list[Row]:
    n = args.idle_connections
    before, after, took, factory = await memory_growth(reactor, server, n)
    await factory.close_all(reactor)
    per = (after - before) / n
    return [
        Row("memory", f"server RSS per idle subscribed session ({n:,})", f"{per:.1f} KiB",
            "< 30 KiB", per < 30),
        Row("memory", "server RSS before / after",
            f"{before / 1024:.1f} / {after / 1024:.1f} MiB",
            note=f"{n:,} sessions connected and subscribed in {took:.1f} s"),
    ]


BENCHMARKS = {"fanout": bench_fanout, "latency": bench_latency, "rate": bench_rate,
              "memory": bench_memory}


# -- the report ---------------------------------------------------------------


def machine() -> list[str]:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    from autobahn.websocket import USES_NVX

    return [
        f"machine : nproc {len(os.sched_getaffinity(0))}, {model}, {platform.system()} "
        f"{platform.release()}",
        f"python  : {platform.python_implementation()} {platform.python_version()}, "
        f"Twisted {twisted_version}, autobahn {autobahn.__version__} "
        f"(native NVX {'on' if USES_NVX else 'off'})",
        "server  : python -m twisted exp-server in its own process (default reactor),"
        " a fresh one per benchmark",
        f"load    : {os.getloadavg()[0]:.2f} (1 min average) before the first benchmark",
    ]


def table(rows: list[Row]) -> str:
    header = ("benchmark", "figure", "result", "goal", "")
    lines = [(r.bench, r.figure, r.value, r.goal,
              "" if r.met is None else ("met" if r.met else "NOT MET")) for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(5)]
    out = []
    for k, line in enumerate([header, *lines]):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  {r.bench}: {r.figure}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["", "notes:", *notes] if notes else []))


@contextlib.contextmanager
def logs_directory(keep: bool) -> Iterator[str]:
    """A new directory for the servers' databases and logs, removed after unless C{keep}."""
    directory = tempfile.mkdtemp(prefix="exp-bench-")
    try:
        yield directory
    finally:
        if keep:
            print(f"server logs kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def add_log_options(parser: argparse.ArgumentParser, output: str = "<benchmark>.txt") -> None:
    """C{--py-spy DIR} (for L{start_profile}) and C{--keep} (for L{logs_directory})."""
    parser.add_argument("--py-spy", metavar="DIR",
                        help="sample the server with py-spy (not a dependency: pip install "
                        f"py-spy) into DIR/{output}, folded stacks")
    parser.add_argument("--keep", action="store_true", help="keep the server logs")


async def start_profile(reactor: Any, server: ServerProcess, args: argparse.Namespace,
                        name: str) -> None:
    """With C{--py-spy DIR}, sample C{server} into DIR/C{name}.txt until it stops."""
    if args.py_spy:
        output = os.path.join(os.path.abspath(args.py_spy), f"{name}.txt")
        server.profile(shutil.which("py-spy") or os.path.join(
            os.path.dirname(sys.executable), "py-spy"), output)
        await sleep(reactor, 1)


async def run(reactor: Any, args: argparse.Namespace) -> None:
    print("\n".join(machine()), flush=True)
    names = [args.only] if args.only else list(BENCHMARKS)
    rows: list[Row] = []
    with logs_directory(args.keep) as directory:
        for name in names:
            server = ServerProcess(reactor, directory)
            try:
                await server.start()
                await start_profile(reactor, server, args, name)
                rows += await BENCHMARKS[name](reactor, server, args)
            finally:
                server.stop()
    print()
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run one benchmark")
    parser.add_argument("--connections", type=int, default=1000,
                        help="sessions receiving each broadcast in fanout (1000)")
    parser.add_argument("--rounds", type=int, default=20, help="fanout rounds (20)")
    parser.add_argument("--broadcasts", type=int, default=1000,
                        help="sequential broadcasts in latency (1000)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of sustained broadcasting in rate (10)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="broadcasts in flight in rate, one per connection (16)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="worker processes holding the fanout sessions; 0: in this "
                        "process (2)")
    parser.add_argument("--idle-connections", type=int, default=5000,
                        help="idle sessions in memory (5000)")
    add_log_options(parser)
    parser.add_argument("--worker", nargs=3, metavar=("URL", "CHANNEL", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, channel, count = args.worker
        task.react(lambda reactor: defer.ensureDeferred(
            worker(reactor, url, channel, int(count))))
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
