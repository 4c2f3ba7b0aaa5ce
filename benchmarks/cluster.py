"""
Benchmarks of the local EXP server run as several processes sharing one
PostgreSQL database and one Redis (``--db postgresql://... --redis redis://...``).

  fanout   one broadcast (POST /api/networks/current/broadcasts?timeout=0,
           always to the first process, p0) to --connections subscribed
           WebSocket sessions spread evenly over --processes server processes,
           against the same sessions on one process (also on PostgreSQL +
           Redis, so only the number of processes differs), and on one process
           with plain SQLite on the default reactor and on the asyncio one (what
           the asyncio reactor costs alone): time from posting it until the
           last session has received it, --rounds rounds, median and range;
           the median first and last delivery at the sessions of each process
           (p0's own sessions get the broadcast at once, the others through
           Redis); when p0 published it on Redis
  latency  broadcast -> listener at low load, one listener on p0: posted to p0,
           against posted to p1 (the broadcast crosses Redis); --broadcasts of
           each, the two kinds alternating, p50/p99, and when the broadcast
           was published on Redis

"Published on Redis" is when a subscriber of the servers' Redis channels
(pattern exp:*:network, an internal name), in a thread of this script, got
the message: a close upper bound of when the publishing process sent it.

    .venv/bin/python benchmarks/cluster.py [--only fanout|latency]

It reuses network.py's machinery: the servers are ``python -m twisted
exp-server --no-access-log`` processes (on the default reactor; the PostgreSQL
and Redis drivers run on an asyncio loop thread of their own), the fan-out sessions
are Engine.IO 3 / Socket.IO WebSocket clients in --client-processes worker
processes (network.py run with --worker; each worker's sessions connect to one
server process), broadcasts are posted with its minimal keep-alive HTTP/1.1
client, and the CPU times come from /proc/<pid>/task/*/schedstat.  The private
PostgreSQL and Redis are those of the tests (tests/_services.py), started once;
every configuration gets a fresh database and fresh server processes.  Every
process shares the machine's cores: on a 2-core machine the servers, the
clients, Redis and PostgreSQL compete for them, which the CPU figures show.
This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
from typing import Any

from network import (
    Arrivals,
    CpuMeter,
    Row,
    ServerProcess,
    WorkerClients,
    _log,
    _pct,
    connect_listeners,
    cpu_seconds,
    logs_directory,
    machine,
    now,
    sleep,
    table,
)
from twisted.internet import defer, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_ARGS = ("--no-access-log",)


class Services:
    """The private PostgreSQL and Redis of tests/_services.py."""

    def __init__(self) -> None:
        sys.path.insert(0, ROOT)
        from tests._services import PostgreSQL, Redis

        self.postgresql = PostgreSQL()
        self.redis = Redis()

    def start(self) -> Services:
        _log("starting PostgreSQL and Redis")
        self.postgresql.start()
        self.redis.start()
        return self

    def stop(self) -> None:
        self.redis.stop()
        self.postgresql.stop()

    def redis_pid(self) -> int | None:
        """redis-server's pid, when it is ours (None with EXP_TEST_REDIS)."""
        process = getattr(self.redis, "_process", None)
        return None if process is None else int(process.pid)

    def versions(self) -> str:
        import psycopg
        import redis

        with psycopg.connect(self.postgresql.url) as db:
            version = db.info.server_version
        with redis.Redis.from_url(self.redis.url) as r:
            redis_version = r.info("server")["redis_version"]
        return (f"PostgreSQL {version // 10000}.{version % 10000} (fsync off), "
                f"Redis {redis_version}, private, on loopback")


class Cluster:
    """
    C{count} server processes on one database (and Redis, when given).  It
    stands for the server in L{CpuMeter}: its CPU times are the processes' sum.
    """

    def __init__(self, reactor: Any, directory: str, count: int, label: str,
                 db: str | None = None, redis: str | None = None,
                 runner_args: tuple[str, ...] = ()) -> None:
        self.label = label
        self.redis = redis
        args = SERVER_ARGS + (("--redis", redis) if redis else ())
        self.servers = []
        for i in range(count):
            own = os.path.join(directory, f"{label.replace(' ', '-').replace(',', '')}-{i}")
            os.makedirs(own)
            self.servers.append(ServerProcess(reactor, own, args, db=db,
                                              runner_args=runner_args))

    async def start(self) -> None:
        # One at a time: the first one creates the schema and applies the seed.
        for server in self.servers:
            await server.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self.servers if s.process is not None]

    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds() for s in self.servers)

    def cpu_wait_seconds(self) -> float:
        return sum(s.cpu_wait_seconds() for s in self.servers)


class PidCpu:
    """The CPU time of each of some processes, summed over several stretches."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.total = [0.0] * len(pids)
        self._start = [0.0] * len(pids)

    def start(self) -> None:
        self._start = [cpu_seconds(pid) for pid in self.pids]

    def stop(self) -> None:
        for i, pid in enumerate(self.pids):
            self.total[i] += cpu_seconds(pid) - self._start[i]


class RedisTap:
    """
    A subscriber of the servers' Redis channels (C{exp:<deployment>:network},
    an internal name), in a thread of this process: when each broadcast was
    published, by the C{seq} of its payload.  It splits the way across
    processes into the publishing process's part and the receiving one's.
    """

    def __init__(self, url: str) -> None:
        import redis

        self.published: dict[int, float] = {}
        self._client = redis.Redis.from_url(url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe("exp:*:network")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="redis-tap", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            at = now()
            if message is None or message["type"] != "pmessage":
                continue
            data = json.loads(message["data"])
            payload = data.get("p")
            if data.get("k") == "b" and isinstance(payload, dict) and "seq" in payload:
                self.published[payload["seq"]] = at

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def _shares(servers: list[ServerProcess], count: int,
            workers: int) -> list[tuple[ServerProcess, int]]:
    """C{count} sessions evenly over the servers, each server's over C{workers}/servers."""
    per = workers // len(servers)
    shares = []
    for i, server in enumerate(servers):
        mine = count // len(servers) + (i < count % len(servers))
        shares += [(server, mine // per + (j < mine % per)) for j in range(per)]
    return shares


async def fanout(reactor: Any, cluster: Cluster, services: Services,
                 args: argparse.Namespace) -> tuple[list[Row], float]:
    """One configuration's rows, and its median post -> last delivery."""
    n, servers, label = args.connections, cluster.servers, cluster.label
    shares = _shares(servers, n, args.client_processes)
    per = len(shares) // len(servers)
    clients = WorkerClients(reactor, len(shares))
    _log(f"fanout, {label}: connecting {n:,} sessions from {len(shares)} client processes")
    started = now()
    await clients.start_on(shares)
    _log(f"fanout, {label}: subscribed in {now() - started:.1f} s; {args.rounds} rounds")
    http = await servers[0].http_connection()
    meter = CpuMeter(cluster, clients.pids)  # type: ignore[arg-type]
    redis_pid = services.redis_pid() if cluster.redis else None
    each = PidCpu(cluster.pids + ([redis_pid] if redis_pid else []))
    tap = RedisTap(cluster.redis) if cluster.redis else None
    total = None
    lasts: list[float] = []
    firsts: list[float] = []
    published: list[float] = []
    firsts_of: list[list[float]] = [[] for _ in servers]  # by server process
    lasts_of: list[list[float]] = [[] for _ in servers]
    warmup = 3
    for i in range(warmup + args.rounds):
        await sleep(reactor, 0.2)
        meter.start()
        each.start()
        arrived = clients.expect(i)
        sent = now()
        answer = http.request(servers[0].broadcast_request(i))
        first, last = await arrived.addTimeout(30, reactor)
        status, body, _ = await answer
        if status != 200:
            raise RuntimeError(f"broadcast failed: {status} {body!r}")
        cpu = meter.stop()
        if i < warmup:
            continue
        each.stop()
        if total is None:
            total = cpu
        else:
            total += cpu
        lasts.append((last - sent) * 1000)
        firsts.append((first - sent) * 1000)
        if tap is not None and i in tap.published:
            published.append((tap.published[i] - sent) * 1000)
        reports = clients.reports.pop(i)  # by worker; workers k*per.. are on server k
        for k in range(len(servers)):
            mine = [reports[w] for w in range(k * per, (k + 1) * per)]
            firsts_of[k].append((min(r[0] for r in mine) - sent) * 1000)
            lasts_of[k].append((max(r[1] for r in mine) - sent) * 1000)
    http.close()
    await clients.close()
    if tap is not None:
        tap.close()
    assert total is not None
    rounds = args.rounds
    median = statistics.median(lasts)
    name = f"fanout {len(servers)}p"
    ms = [t / rounds * 1000 for t in each.total]
    server_ms = ms[:len(servers)]
    rows = [
        Row(name, f"{label}: post -> last delivery, median of {rounds}", f"{median:.1f} ms",
            note=f"{n:,} sessions, {n // len(servers):,} per process, in {len(shares)} "
            "client processes"),
        Row(name, "post -> last delivery, min / max",
            f"{min(lasts):.1f} / {max(lasts):.1f} ms"),
        Row(name, "post -> first delivery, median", f"{statistics.median(firsts):.1f} ms"),
    ]
    if published:
        rows.append(Row(
            name, "post -> published on Redis by p0, median",
            f"{statistics.median(published):.1f} ms",
            note=f"when a subscriber of the servers' Redis channel (in this process) got "
            f"it; {len(published)} of {rounds} rounds"))
    if len(servers) > 1:
        names = " / ".join(f"p{k}{' (poster)' if k == 0 else ''}" for k in range(len(servers)))
        rows += [
            Row(name, f"post -> first delivery by process: {names}, medians",
                " / ".join(f"{statistics.median(t):.1f}" for t in firsts_of) + " ms"),
            Row(name, f"post -> last delivery by process: {names}, medians",
                " / ".join(f"{statistics.median(t):.1f}" for t in lasts_of) + " ms",
                note="p0's sessions get the broadcast from p0 at once; the others' once p0 "
                "has published it to Redis and their process has read it"),
        ]
    cpu_note = ("server processes " + " / ".join(f"{t:.0f}" for t in server_ms)
                + " ms" + (f", redis-server {ms[-1]:.1f} ms" if redis_pid else "")
                + f"; while broadcasting: {total.busy()}"
                + ("" if len(servers) == 1 else " (server: all processes together)"))
    rows.append(Row(
        name, "CPU per broadcast: servers (sum) / clients",
        f"{total.server / rounds * 1000:.0f} / {total.client / rounds * 1000:.0f} ms",
        note=cpu_note))
    return rows, median


async def bench_fanout(reactor: Any, directory: str, services: Services,
                       args: argparse.Namespace) -> list[Row]:
    configs: list[tuple[int, str, tuple[str, ...]]] = [
        (args.processes, "PostgreSQL + Redis", ()), (1, "PostgreSQL + Redis", ())]
    if not args.no_sqlite:
        # What Twisted's asyncio reactor would cost, on its own.
        configs += [(1, "SQLite, default reactor", ()),
                    (1, "SQLite, asyncio reactor", ("--reactor", "asyncio"))]
    rows: list[Row] = []
    medians: list[float] = []
    for count, backend, runner_args in configs:
        label = f"{_processes(count)}, {backend}"
        if backend.startswith("SQLite"):
            cluster = Cluster(reactor, directory, count, label, runner_args=runner_args)
        else:
            cluster = Cluster(reactor, directory, count, label,
                              db=services.postgresql.database(), redis=services.redis.url)
        try:
            await cluster.start()
            more, median = await fanout(reactor, cluster, services, args)
        finally:
            cluster.stop()
        rows += more
        medians.append(median)
    rows.append(Row(
        "fanout", f"{_processes(args.processes)} / 1 process (both PostgreSQL + Redis), "
        "ratio of the medians", f"{medians[0] / medians[1]:.2f}",
        note="below 1: spreading the sessions over processes delivers sooner"))
    if not args.no_sqlite:
        rows.append(Row(
            "fanout", "1 process, SQLite: asyncio / default reactor, ratio of the medians",
            f"{medians[3] / medians[2]:.2f}",
            note="what Twisted's asyncio reactor would cost alone (the drivers use a loop thread)"))
    return rows


async def bench_latency(reactor: Any, directory: str, services: Services,
                        args: argparse.Namespace) -> list[Row]:
    count = max(2, args.processes)
    cluster = Cluster(reactor, directory, count, f"latency {_processes(count)}",
                      db=services.postgresql.database(), redis=services.redis.url)
    try:
        await cluster.start()
        return await latency(reactor, cluster, services, args)
    finally:
        cluster.stop()


async def latency(reactor: Any, cluster: Cluster, services: Services,
                  args: argparse.Namespace) -> list[Row]:
    home, other = cluster.servers[0], cluster.servers[1]
    arrivals = Arrivals()
    factory = home.listener_factory(arrivals)
    await connect_listeners(reactor, factory, 1)
    paths = [("same process", home, await home.http_connection()),
             ("across Redis", other, await other.http_connection())]
    n, warmup = args.broadcasts, 50
    _log(f"latency: {n} broadcasts posted to the listener's process and {n} to another,"
         " alternating")
    frames: list[list[float]] = [[], []]
    answers: list[list[float]] = [[], []]
    meter = CpuMeter(cluster)  # type: ignore[arg-type]
    redis_pid = services.redis_pid()
    each = PidCpu(cluster.pids + ([redis_pid] if redis_pid else []))
    tap = RedisTap(cluster.redis) if cluster.redis else None
    published: list[list[float]] = [[], []]
    seq = 0
    for i in range(warmup + n):
        if i == warmup:
            meter.start()
            each.start()
        for k, (_, server, http) in enumerate(paths):
            seq += 1
            arrived = arrivals.expect(seq, 1)
            sent = now()
            answer = http.request(server.broadcast_request(seq))
            (frame_at,) = await arrived.addTimeout(10, reactor)
            status, body, answered_at = await answer
            if status != 200:
                raise RuntimeError(f"broadcast failed: {status} {body!r}")
            if i >= warmup:
                frames[k].append((frame_at - sent) * 1000)
                answers[k].append((answered_at - sent) * 1000)
                if tap is not None and seq in tap.published:
                    published[k].append((tap.published[seq] - sent) * 1000)
    cpu = meter.stop()
    each.stop()
    await sleep(reactor, 0.2)  # the tap's last ones
    if tap is not None:
        tap.close()
    for _, _, http in paths:
        http.close()
    await factory.close_all(reactor)
    rows = []
    for k, (path, _, _) in enumerate(paths):
        where = ("posted to the listener's process p0" if k == 0
                 else "posted to p1, listener on p0")
        rows += [
            Row("latency", f"{path}: post -> frame at the listener, p50 / p99 of {n:,}",
                f"{statistics.median(frames[k]):.2f} / {_pct(frames[k], 0.99):.2f} ms",
                note=where),
            Row("latency", f"{path}: post -> HTTP answer, p50",
                f"{statistics.median(answers[k]):.2f} ms"),
        ]
    if all(published):
        rows.append(Row(
            "latency", "post -> published on Redis, p50: same process / across",
            " / ".join(f"{statistics.median(t):.2f}" for t in published) + " ms",
            note="when a subscriber of the servers' Redis channel (in this process) got it; "
            "across Redis, the rest of the way to the frame is p0 reading and delivering it"))
    extra = statistics.median(frames[1]) - statistics.median(frames[0])
    us = [t / (2 * n) * 1e6 for t in each.total]
    by_process = " / ".join(f"p{k} {t:.0f}" for k, t in enumerate(us[:len(cluster.servers)]))
    rows += [
        Row("latency", "across Redis minus same process, p50", f"{extra:+.2f} ms"),
        Row("latency", "CPU per broadcast: servers (sum) / client",
            f"{cpu.server / (2 * n) * 1e6:.0f} / {cpu.client / (2 * n) * 1e6:.0f} us",
            note=f"{by_process} us" + (f", redis-server {us[-1]:.0f} us" if redis_pid else "")
            + f" (half of the broadcasts posted to p0, half to p1); {2 * n / cpu.wall:.0f} "
            f"broadcasts/s one at a time; {cpu.busy()} (server: all processes together)"),
    ]
    return rows


BENCHMARKS = {"fanout": bench_fanout, "latency": bench_latency}


async def run(reactor: Any, services: Services, args: argparse.Namespace) -> None:
    print("\n".join(machine()[:2]))
    print(f"servers : python -m twisted exp-server {' '.join(SERVER_ARGS)}, each in its own"
          " process: --db postgresql:// --redis redis://, or a"
          " SQLite file")
    print(f"services: {services.versions()}")
    print(f"load    : {os.getloadavg()[0]:.2f} (1 min average) before the first benchmark",
          flush=True)
    rows: list[Row] = []
    with logs_directory(args.keep) as directory:
        for name in [args.only] if args.only else list(BENCHMARKS):
            rows += await BENCHMARKS[name](reactor, directory, services, args)
    print()
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run one benchmark")
    parser.add_argument("--processes", type=int, default=3,
                        help="server processes of the cluster (3)")
    parser.add_argument("--connections", type=int, default=3000,
                        help="sessions receiving each broadcast in fanout (3000)")
    parser.add_argument("--rounds", type=int, default=20, help="fanout rounds (20)")
    parser.add_argument("--client-processes", type=int, default=3,
                        help="worker processes holding the fanout sessions, a multiple of "
                        "--processes (3)")
    parser.add_argument("--no-sqlite", action="store_true",
                        help="skip fanout's two one-process SQLite configurations")
    parser.add_argument("--broadcasts", type=int, default=1000,
                        help="broadcasts of each kind in latency (1000)")
    parser.add_argument("--keep", action="store_true", help="keep the server logs")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.client_processes < 1 or args.client_processes % args.processes:
        parser.error("--client-processes must be a multiple of --processes")
    services = Services().start()
    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor, services, args)))
    finally:
        services.stop()


if __name__ == "__main__":
    main()
