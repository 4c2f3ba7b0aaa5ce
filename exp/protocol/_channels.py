"""
Channel ids (PROTOCOL.md A3): base64 of the compact JSON array
C{[organization, name, system, consumer]}.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import attrs


class InvalidChannelId(ValueError):
    """A string that is not a well-formed channel id."""


#: Channels recently decoded (by id) and encoded: an application uses a few,
#: over and over.  Ids longer than L{_CACHED_ID} are not kept, and each
#: cache is emptied when it reaches L{_CACHED}.
_decoded: dict[str, ChannelId] = {}
_encoded: dict[ChannelId, str] = {}
_CACHED = 4096
_CACHED_ID = 256


def _keep(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Keep C{value} in C{cache} under C{key}, the cache emptied first when full."""
    if len(cache) >= _CACHED:
        cache.clear()
    cache[key] = value


@attrs.frozen
class ChannelId:
    """
    A channel named inside an organization, with its two flags.

    @ivar organization: the organization it belongs to.
    @ivar name: its name, which the organization's clients choose.
    @ivar system: whether it is one of the server's (changes of documents,
        pairing), which clients may listen to but not broadcast on.
    @ivar consumer: whether consumer apps may use it.
    """

    organization: str
    name: str
    system: bool = False
    consumer: bool = False

    def encode(self) -> str:
        """The id of this channel on the wire."""
        encoded = _encoded.get(self)
        if encoded is None:
            raw = json.dumps(
                [self.organization, self.name, 1 if self.system else 0,
                 1 if self.consumer else 0],
                separators=(",", ":"),
            )
            encoded = base64.b64encode(raw.encode("utf-8")).decode("ascii")
            if len(encoded) <= _CACHED_ID:
                _keep(_encoded, self, encoded)
        return encoded

    @classmethod
    def decode(cls, channel_id: object) -> ChannelId:
        """
        Parse a channel id from the wire.

        @raise InvalidChannelId: if C{channel_id} is not an encoded channel.
        """
        if not isinstance(channel_id, str) or len(channel_id) > 4096:
            raise InvalidChannelId("a channel id is a base64 string")
        channel = _decoded.get(channel_id)
        if channel is not None:
            return channel
        try:
            value = json.loads(base64.b64decode(channel_id.encode("ascii"), validate=True))
        except (binascii.Error, UnicodeError, ValueError) as e:
            raise InvalidChannelId(f"not a base64 JSON channel id: {e}") from None
        if (
            not isinstance(value, list)
            or len(value) != 4
            or not isinstance(value[0], str)
            or not isinstance(value[1], str)
            or value[2] not in (0, 1, True, False)
            or value[3] not in (0, 1, True, False)
        ):
            raise InvalidChannelId(
                "a channel id encodes [organization, name, system, consumer]"
            )
        channel = cls(value[0], value[1], bool(value[2]), bool(value[3]))
        if len(channel_id) <= _CACHED_ID and cls is ChannelId:
            _keep(_decoded, channel_id, channel)
        return channel


def encode_channel(organization: str, name: str, system: bool = False,
                   consumer: bool = False) -> str:
    """The wire id of a channel."""
    return ChannelId(organization, name, system, consumer).encode()
