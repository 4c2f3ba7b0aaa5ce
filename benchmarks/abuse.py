"""
The server under attack (issue 13): memory, slow-client and login floods
replayed against a running server, with its RSS and the latency of a
well-behaved client's REST calls, quiet and under each attack.

    .venv/bin/python benchmarks/abuse.py [--only memory|slow|login] [--requests 200]
                                         [--seconds 15]

Each attack runs against a fresh server process (``twistd exp-server`` with its
default limits and OWASP's password cost) on a free loopback port:

  memory  20 polling sessions subscribed to a channel that never poll again,
          5 WebSocket sessions that never read, one subscribe of 20,000
          channels, then 40 broadcasts of 900 KiB on that channel
  slow    200 connections trickling one header line a second (slowloris)
  login   20 threads looping wrong-password logins

Goals: RSS bounded by the caps (the queued bytes per session, the WebSocket
buffer and the subscriptions per session), and the REST p50 under attack
under 3 times the quiet one.  This is a script, not a test.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from network import machine, machine_busy_seconds

from exp.protocol import encode_channel
from exp.server.testing import DEMO, ServerProcess

SERVER_ARGS = ("--no-access-log", "--password-cost", "17")
USER = {"username": DEMO["username"], "password": DEMO["password"],
        "organization": DEMO["organization"]}
CHANNEL = encode_channel(DEMO["organization"], "flooded")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             raw: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        self.connection.request(method, path, data, headers)
        answer = self.connection.getresponse()
        return answer.status, answer.read()

    def close(self) -> None:
        self.connection.close()


def login(port: int) -> str:
    client = Client(port)
    status, body = client.call("POST", "/api/auth/login", USER)
    client.close()
    assert status == 200, body
    return str(json.loads(body)["token"])


def latencies(port: int, token: str, count: int, path: str,
              seconds: float = 0.0) -> list[float]:
    """
    Milliseconds of sequential GETs of C{path} on one connection: C{count}, or
    more until C{seconds} have passed.
    """
    client = Client(port)
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while len(times) < count or time.monotonic() < deadline:
        started = time.perf_counter()
        status, _ = client.call("GET", path, token=token)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200, status
    client.close()
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- attacks --------------------------------------------------------------------------


def polling_sessions(port: int, token: str, count: int) -> list[str]:
    """Polling sessions subscribed to L{CHANNEL} that will never poll again."""
    sids = []
    for _ in range(count):
        client = Client(port)
        query = urlencode({"EIO": "3", "transport": "polling", "token": token, "b64": "1"})
        status, body = client.call("GET", f"/socket.io/?{query}")
        assert status == 200, body
        text = body.decode()
        sid = json.loads(text[text.index("{"):text.index("}") + 1])["sid"]
        packet = "42" + json.dumps(["subscribe", [CHANNEL]])
        query = urlencode({"EIO": "3", "transport": "polling", "token": token, "sid": sid})
        status, _ = client.call("POST", f"/socket.io/?{query}",
                                raw=f"{len(packet)}:{packet}".encode())
        client.close()
        sids.append(sid)
    return sids


def _frame(text: str) -> bytes:
    """A masked WebSocket text frame."""
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def websocket(port: int, token: str, subscribe: list[str]) -> socket.socket:
    """A WebSocket session that subscribes, then never reads again."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", port))
    query = urlencode({"EIO": "3", "transport": "websocket", "token": token})
    key = base64.b64encode(os.urandom(16)).decode()
    conn.sendall((f"GET /socket.io/?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(1)
    conn.sendall(_frame("42" + json.dumps(["subscribe", subscribe])))
    return conn


def broadcast_big(port: int, token: str, count: int, size: int) -> int:
    client = Client(port)
    answered = 0
    for _ in range(count):
        status, _ = client.call("POST", "/api/networks/current/broadcasts",
                                {"channel": CHANNEL, "name": "big", "payload": "x" * size},
                                token=token)
        answered += status == 200
    client.close()
    return answered


@contextmanager
def memory_flood(port: int, token: str) -> Iterator[str]:
    polls = polling_sessions(port, token, 20)
    sockets = [websocket(port, token, [CHANNEL]) for _ in range(5)]
    many = [encode_channel(DEMO["organization"], f"c{i}") for i in range(20_000)]
    sockets.append(websocket(port, token, many))
    sent = broadcast_big(port, token, 40, 900 * 1024)
    try:
        yield (f"{len(polls)} silent polling sessions, {len(sockets) - 1} unread WebSockets,"
               f" one subscribe of 20,000 channels, {sent} broadcasts of 900 KiB")
    finally:
        for conn in sockets:
            conn.close()


@contextmanager
def slow_flood(port: int, token: str) -> Iterator[str]:
    stop = threading.Event()
    cut = [0]
    conns = []
    for _ in range(200):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(b"GET /api/devices HTTP/1.1\r\nHost: x\r\n")
        conns.append(conn)

    def trickle() -> None:
        n = 0
        while not stop.is_set():
            for conn in list(conns):
                try:
                    conn.sendall(b"X-Slow-%d: y\r\n" % n)
                except OSError:
                    conns.remove(conn)
                    cut[0] += 1
            n += 1
            stop.wait(1.0)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield "200 connections trickling a header line a second"
    finally:
        stop.set()
        thread.join()
        print(f"  slowloris connections cut by the server meanwhile: {cut[0]} of 200")
        for conn in conns:
            conn.close()


@contextmanager
def login_flood(port: int, token: str) -> Iterator[str]:
    stop = threading.Event()
    answers: dict[int, int] = {}
    lock = threading.Lock()

    def guess(i: int) -> None:
        client = Client(port)
        n = 0
        while not stop.is_set():
            status, _ = client.call("POST", "/api/auth/login",
                                    dict(USER, username=f"guess{i}-{n}@example.com",
                                         password="wrong"))
            with lock:
                answers[status] = answers.get(status, 0) + 1
            n += 1
        client.close()

    threads = [threading.Thread(target=guess, args=(i,), daemon=True) for i in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    try:
        yield "20 threads looping wrong-password logins"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        print(f"  login answers during the flood: {dict(sorted(answers.items()))}")


ATTACKS: dict[str, Callable[[int, str], Any]] = {
    "memory": memory_flood, "slow": slow_flood, "login": login_flood}


def run(name: str, requests: int, seconds: float) -> None:
    with ServerProcess(*SERVER_ARGS) as server:
        assert server.process is not None
        pid, port = server.process.pid, server.port
        token = login(port)
        path = "/api/content" if name == "login" else f"/api/devices/{DEMO['device_uuid']}"
        latencies(port, token, 50, path)  # warm up
        rss_quiet = rss_kib(pid)
        busy = machine_busy_seconds()
        quiet = latencies(port, token, requests, path)
        with ATTACKS[name](port, token) as what:
            rss_attack = rss_kib(pid)
            attacked = latencies(port, token, requests, path, seconds)
            rss_peak = max(rss_attack, rss_kib(pid))
        busy = machine_busy_seconds() - busy
        p50q, p50a = statistics.median(quiet), statistics.median(attacked)
        print(f"{name}: {what}")
        print(f"  GET {path}: quiet p50 {p50q:.2f} ms p99 {percentile(quiet, 0.99):.2f} ms;"
              f" under attack p50 {p50a:.2f} ms p99 {percentile(attacked, 0.99):.2f} ms;"
              f" ratio {p50a / p50q:.2f} (goal < 3)")
        print(f"  server RSS: quiet {rss_quiet / 1024:.1f} MiB, under attack"
              f" {rss_peak / 1024:.1f} MiB (+{(rss_peak - rss_quiet) / 1024:.1f} MiB)")
        print(f"  CPU seconds all processes used meanwhile: {busy:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(ATTACKS), action="append")
    parser.add_argument("--requests", type=int, default=200,
                        help="REST calls measured quiet and under each attack")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="the least time each attack lasts (past the head deadline)")
    args = parser.parse_args()
    for line in machine():
        print(line)
    for name in args.only or list(ATTACKS):
        run(name, args.requests, args.seconds)


if __name__ == "__main__":
    main()
