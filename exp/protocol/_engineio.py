"""
Engine.IO protocol 3 packets and polling payloads, and Socket.IO protocol 4
packets (the protocol of Socket.IO 1.x/2.x), as PROTOCOL.md A5 describes.

Pure functions over text; no sockets, no Twisted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import IntEnum
from typing import Any

import attrs

from exp.protocol._json import compact_json, strict_json


class PacketType(IntEnum):
    """The type of an Engine.IO packet: its first character."""

    #: From the server, first: the session's sid, upgrades and ping timing.
    OPEN = 0
    #: The end of the session, from either side.
    CLOSE = 1
    #: A liveness check (the client sends it in protocol 3); C{2probe} on an upgrade.
    PING = 2
    #: The answer to a ping, with its data.
    PONG = 3
    #: A message: a Socket.IO packet.
    MESSAGE = 4
    #: From the client: switch to the WebSocket that was probed.
    UPGRADE = 5
    #: Nothing: ends a pending poll.
    NOOP = 6


class SocketIOPacketType(IntEnum):
    """The type of a Socket.IO packet: its first character."""

    #: Joined a namespace.
    CONNECT = 0
    #: Left a namespace.
    DISCONNECT = 1
    #: A named event with arguments: C{["name", ...]}.
    EVENT = 2
    #: The answer to an event that asked for one.
    ACK = 3
    #: Something the other side got wrong, as a JSON string.
    ERROR = 4
    #: An event with binary attachments (not served).
    BINARY_EVENT = 5
    #: An answer with binary attachments (not served).
    BINARY_ACK = 6


class ErrorCode(IntEnum):
    """The codes of engine.io 3's errors, answered as C{{code, message}}."""

    #: A transport other than polling and websocket.
    UNKNOWN_TRANSPORT = 0
    #: A sid the server does not know (or no longer).
    UNKNOWN_SID = 1
    #: A handshake that is not a GET.
    BAD_HANDSHAKE_METHOD = 2
    #: Anything else malformed.
    BAD_REQUEST = 3
    #: Refused: not the session's identity, or no valid token.
    FORBIDDEN = 4
    #: An C{EIO} other than 3.
    UNSUPPORTED_PROTOCOL = 5


#: The Engine.IO packet types by name, as the codec's users spell them.
OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = PacketType
#: The Socket.IO packet types by name.
CONNECT, DISCONNECT, EVENT, ACK, ERROR, BINARY_EVENT, BINARY_ACK = SocketIOPacketType

_PACKET_TYPES = dict(zip("0123456", PacketType, strict=True))
_SOCKETIO_PACKET_TYPES = dict(zip("0123456", SocketIOPacketType, strict=True))


class ProtocolError(ValueError):
    """Text that is not a well-formed packet or payload."""


@attrs.frozen
class Packet:
    """An Engine.IO packet: a type digit and text data."""

    #: What the packet is.
    type: PacketType
    #: What follows the type digit.
    data: str = ""

    def encode(self) -> str:
        """The packet as text: its type digit, then its data."""
        return f"{self.type:d}{self.data}"

    @classmethod
    def decode(cls, text: str) -> Packet:
        """
        The packet C{text} encodes.

        @raise ProtocolError: if C{text} is not a text Engine.IO packet.
        """
        kind = _PACKET_TYPES.get(text[:1])
        if kind is None:
            raise ProtocolError(f"not an Engine.IO packet: {text[:20]!r}")
        return cls(kind, text[1:])


def utf8_size(text: str) -> int:
    """The length of C{text} in UTF-8, without encoding it when it is ASCII."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


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
    return encode_text_payload(packet.encode() for packet in packets) or "0:"


def encode_text_payload(packets: Iterable[str]) -> str:
    """
    A polling payload of packets already encoded: each as
    C{<length>:<packet>}, the length in UTF-16 code units.
    """
    return "".join(f"{utf16_length(packet)}:{packet}" for packet in packets)


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

    #: What the packet is.
    type: SocketIOPacketType
    #: Its JSON data, decoded (C{None}: none).
    data: Any = None
    #: The namespace it is for.
    namespace: str = "/"
    #: The id of an event that asks for an answer, or of the answer.
    id: int | None = None

    def encode(self) -> str:
        """The packet as text: type, namespace unless C{/}, id, JSON data."""
        out = f"{self.type:d}"
        if self.namespace != "/":
            out += self.namespace + ","
        if self.id is not None:
            out += str(self.id)
        if self.data is not None:
            out += compact_json(self.data)
        return out

    @classmethod
    def decode(cls, text: str) -> SocketIOPacket:
        """
        The packet C{text} encodes.

        @raise ProtocolError: if C{text} is not a text Socket.IO packet.
        """
        kind = _SOCKETIO_PACKET_TYPES.get(text[:1])
        if kind is None:
            raise ProtocolError(f"not a Socket.IO packet: {text[:20]!r}")
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


#: What the text of a Socket.IO event in an Engine.IO message starts with.
_EVENT_PREFIX = f"{PacketType.MESSAGE:d}{SocketIOPacketType.EVENT:d}"


def event(name: str, data: Any) -> str:
    """The Engine.IO message text of a Socket.IO event C{name} with C{data}."""
    # As Packet(MESSAGE, SocketIOPacket(EVENT, [name, data]).encode()).encode().
    return _EVENT_PREFIX + compact_json([name, data])


def open_packet(sid: str, ping_interval_ms: int, ping_timeout_ms: int,
                upgrades: list[str]) -> str:
    """The Engine.IO open packet."""
    handshake = {"sid": sid, "upgrades": upgrades, "pingInterval": ping_interval_ms,
                 "pingTimeout": ping_timeout_ms}
    return Packet(OPEN, json.dumps(handshake, separators=(",", ":"))).encode()
