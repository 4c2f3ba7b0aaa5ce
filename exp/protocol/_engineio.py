"""
Engine.IO protocol 3 packets and polling payloads, and Socket.IO protocol 4
packets (the protocol of Socket.IO 1.x/2.x), as PROTOCOL.md A5 describes.

Pure functions over text; no sockets, no Twisted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import attrs

# Engine.IO packet types.
OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = range(7)

# Socket.IO packet types.
CONNECT, DISCONNECT, EVENT, ACK, ERROR, BINARY_EVENT, BINARY_ACK = range(7)


class ProtocolError(ValueError):
    """Text that is not a well-formed packet or payload."""


@attrs.frozen
class Packet:
    """An Engine.IO packet: a type digit and text data."""

    type: int
    data: str = ""

    def encode(self) -> str:
        return f"{self.type}{self.data}"

    @classmethod
    def decode(cls, text: str) -> Packet:
        """@raise ProtocolError: if C{text} is not a text Engine.IO packet."""
        if not text or text[0] not in "0123456":
            raise ProtocolError(f"not an Engine.IO packet: {text[:20]!r}")
        return cls(int(text[0]), text[1:])


def utf16_length(text: str) -> int:
    """The length of C{text} in UTF-16 code units, as JavaScript counts it."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _utf16_prefix(text: str, start: int, units: int) -> int:
    """The index in C{text} after C{units} UTF-16 code units from C{start}."""
    i = start
    while units > 0 and i < len(text):
        units -= 2 if ord(text[i]) > 0xFFFF else 1
        i += 1
    if units != 0:
        raise ProtocolError("payload length runs past its end")
    return i


def encode_payload(packets: Iterable[Packet]) -> str:
    """A polling payload: each packet as C{<length>:<packet>}."""
    parts = []
    for packet in packets:
        encoded = packet.encode()
        parts.append(f"{utf16_length(encoded)}:{encoded}")
    return "".join(parts) or "0:"


def encode_binary_payload(packets: Iterable[str]) -> bytes:
    """
    A polling payload in engine.io's binary framing, for clients that can
    read binary and did not ask for text (C{b64}): each text packet as a
    0 byte, its UTF-8 length in decimal digits of one byte each, 255, and
    its UTF-8 bytes.
    """
    out = bytearray()
    for packet in packets:
        data = packet.encode("utf-8")
        out += b"\x00" + bytes(int(digit) for digit in str(len(data))) + b"\xff" + data
    return bytes(out)


def decode_payload(text: str) -> list[Packet]:
    """
    The packets of a polling payload.

    @raise ProtocolError: if the payload is malformed (it is then ignored
        whole, as engine.io does).
    """
    if not text:
        raise ProtocolError("empty payload")
    packets: list[Packet] = []
    i = 0
    while i < len(text):
        colon = text.find(":", i)
        digits = text[i:colon] if colon >= 0 else ""
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
            raise ProtocolError("payload length is not a number")
        end = _utf16_prefix(text, colon + 1, int(digits))
        if end > colon + 1:
            packets.append(Packet.decode(text[colon + 1:end]))
        i = end
    return packets


@attrs.frozen
class SocketIOPacket:
    """A Socket.IO packet carried by an Engine.IO message."""

    type: int
    data: Any = None
    namespace: str = "/"
    id: int | None = None

    def encode(self) -> str:
        out = str(self.type)
        if self.namespace != "/":
            out += self.namespace + ","
        if self.id is not None:
            out += str(self.id)
        if self.data is not None:
            out += json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
        return out

    @classmethod
    def decode(cls, text: str) -> SocketIOPacket:
        """@raise ProtocolError: if C{text} is not a text Socket.IO packet."""
        if not text or text[0] not in "0123456":
            raise ProtocolError(f"not a Socket.IO packet: {text[:20]!r}")
        kind = int(text[0])
        if kind in (BINARY_EVENT, BINARY_ACK):
            raise ProtocolError("binary Socket.IO packets are not supported")
        i = 1
        namespace = "/"
        if i < len(text) and text[i] == "/":
            comma = text.find(",", i)
            end = len(text) if comma < 0 else comma
            namespace = text[i:end]
            i = end + 1
        start = i
        while i < len(text) and "0" <= text[i] <= "9":
            i += 1
        try:
            packet_id = int(text[start:i]) if i > start else None
        except ValueError:  # more digits than int() takes
            raise ProtocolError("Socket.IO packet id is too long") from None
        data = None
        if i < len(text):
            try:
                data = strict_json(text[i:])
            except ValueError as e:
                raise ProtocolError(f"Socket.IO packet data is not JSON: {e}") from None
        return cls(kind, data, namespace, packet_id)


def _not_json(constant: str) -> Any:
    """Refuse what Python's json accepts but JSON is not: NaN and Infinity."""
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    """A number too large for a float would come back as Infinity: refuse it."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


#: The deepest nesting L{strict_json} accepts: whatever it returns can be
#: encoded again, wrapped in a few more levels, from any stack depth.
MAX_DEPTH = 500
#: Where a lone surrogate could come from: an escape, or one already in the text.
_SURROGATE_SOURCE = re.compile(r"\\u[dD][89abcdefABCDEF]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _too_deep(value: Any) -> bool:
    """Whether C{value} nests containers deeper than L{MAX_DEPTH}."""
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [child for item in level
                 for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (list, dict))]
        if not level:
            return False
    return True


def _has_lone_surrogate(value: Any) -> bool:
    """Whether C{value} holds a string (or key) that is not Unicode text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def strict_json(text: str | bytes) -> Any:
    """
    Decode standard JSON only: no C{NaN}/C{Infinity}, no number beyond a
    float's range, no nesting deeper than L{MAX_DEPTH}, no string with a
    lone surrogate (C{"\\ud800"}: not text, and not encodable).

    @raise ValueError: if C{text} is not such JSON.
    """
    try:
        value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    source = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if source.count("[") + source.count("{") > MAX_DEPTH and _too_deep(value):
        raise ValueError(f"JSON nested more than {MAX_DEPTH} deep")
    if _SURROGATE_SOURCE.search(source) and _has_lone_surrogate(value):
        raise ValueError("a string holds a lone UTF-16 surrogate")
    return value


def event(name: str, data: Any) -> str:
    """The Engine.IO message text of a Socket.IO event C{name} with C{data}."""
    return Packet(MESSAGE, SocketIOPacket(EVENT, [name, data]).encode()).encode()


def open_packet(sid: str, ping_interval_ms: int, ping_timeout_ms: int,
                upgrades: list[str]) -> str:
    """The Engine.IO open packet."""
    handshake = {"sid": sid, "upgrades": upgrades, "pingInterval": ping_interval_ms,
                 "pingTimeout": ping_timeout_ms}
    return Packet(OPEN, json.dumps(handshake, separators=(",", ":"))).encode()
