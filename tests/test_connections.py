"""
Slow and greedy connections (issue 13, item 2), against C{twistd exp-server}
with small limits, over plain sockets: a request head trickled line by line
is cut at its deadline, and one peer address holds only so many connections.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from exp.protocol import encode_channel
from exp.server.testing import DEMO, ServerProcess

pytestmark = pytest.mark.slow

#: Generous: only a hang fails on it.
BOUND = 30.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("--head-timeout", "1", "--max-connections-per-peer", "4") as running:
        yield running


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)


def read_all(conn: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_a_trickled_request_head_is_cut_at_its_deadline(server: ServerProcess) -> None:
    """A client sending one header line every 0.3 s (each within the idle timeout) gets
    408 and is cut off once the head's deadline has passed."""
    with connect(server) as conn:
        conn.sendall(b"GET /api/devices HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        deadline = time.monotonic() + BOUND
        try:
            while time.monotonic() < deadline:
                conn.sendall(b"X-Slow-%d: y\r\n" % sent)
                sent += 1
                conn.settimeout(0.3)
                try:
                    answer = conn.recv(65536)
                except TimeoutError:
                    continue
                conn.settimeout(BOUND)
                answer += read_all(conn)
                break
            else:
                pytest.fail("the server kept reading the trickled head")
        except (BrokenPipeError, ConnectionResetError):
            answer = b"HTTP/1.1 408 (reset while sending)"
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert sent >= 2  # it was a trickle, not one late line


def test_a_persistent_connection_is_not_cut_between_requests(server: ServerProcess) -> None:
    """The head deadline starts at a request's first byte: a keep-alive connection idle for
    longer than it between two requests still serves the second."""
    with connect(server) as conn:
        request = b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(2):
            conn.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = b""
            while len(body) < length:
                body += conn.recv(length - len(body))
            assert head.startswith(b"HTTP/1.1 200"), head
            time.sleep(1.5)


def test_one_peer_holds_only_so_many_connections(server: ServerProcess) -> None:
    """The fifth connection from one address is closed at once; when one of the four
    closes, a new one is served."""
    held = [connect(server) for _ in range(4)]
    try:
        for conn in held:  # all four are being served
            conn.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(12) == b"HTTP/1.1 200"
        with connect(server) as extra:
            extra.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert read_all(extra) == b""
            except ConnectionResetError:
                pass
        held.pop().close()
        for _ in range(int(BOUND / 0.05)):
            with connect(server) as again:
                again.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    if again.recv(12) == b"HTTP/1.1 200":
                        break
                except ConnectionResetError:
                    pass
            time.sleep(0.05)
        else:
            pytest.fail("no connection was served after one of the four closed")
    finally:
        for conn in held:
            conn.close()



def take_answer(data: bytes, has_body: bool = True) -> tuple[bytes, bytes, bytes]:
    """The status line and body of the first answer in C{data}, and what follows it."""
    head, found, rest = data.partition(b"\r\n\r\n")
    assert found, data
    status, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    length = int(headers.get(b"content-length", b"0")) if has_body else 0
    return status, rest[:length], rest[length:]


def test_answers_on_one_connection_keep_their_order(server: ServerProcess) -> None:
    """Requests sent at once on one connection are answered in order, each answer whole:
    an interim 100 Continue before its answer, a HEAD's head alone, a body-less 204."""
    login = json.dumps({"username": DEMO["username"], "password": DEMO["password"],
                        "organization": DEMO["organization"]}).encode()
    with urllib.request.urlopen(urllib.request.Request(
            f"{server.url}/api/auth/login", data=login,
            headers={"Content-Type": "application/json"}), timeout=BOUND) as answer:
        token = json.load(answer)["token"].encode()
    body = json.dumps({"channel": encode_channel(DEMO["organization"], "order"),
                       "name": "n"}).encode()
    with connect(server) as conn:
        conn.sendall(
            b"POST /api/networks/current/broadcasts HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token + b"\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            + b"HEAD /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"OPTIONS /api/devices HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n"
              b"Access-Control-Request-Method: GET\r\n\r\n"
            + b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_all(conn)
    status, _, data = take_answer(data, has_body=False)
    assert status == b"HTTP/1.1 100 Continue"
    status, answer, data = take_answer(data)
    assert (status, json.loads(answer)) == (b"HTTP/1.1 200 OK", [])
    status, answer, data = take_answer(data, has_body=False)
    assert (status, answer) == (b"HTTP/1.1 200 OK", b"")
    status, answer, data = take_answer(data)
    assert (status, answer) == (b"HTTP/1.1 204 No Content", b"")
    status, answer, data = take_answer(data)
    assert status == b"HTTP/1.1 200 OK" and "paths" in json.loads(answer)
    assert data == b""
