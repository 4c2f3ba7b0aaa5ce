"""
Sans-I/O pieces of the EXP wire protocol shared by the SDK and the local
server: channel ids, auth tokens, Engine.IO/Socket.IO packets, and the JSON
they carry.  Nothing here imports Twisted.
"""

from exp.protocol import _engineio as engineio
from exp.protocol._channels import ChannelId, InvalidChannelId, encode_channel
from exp.protocol._json import compact_json, strict_json
from exp.protocol._tokens import (
    InvalidToken,
    consumer_app_token,
    device_token,
    sign,
    to_seconds,
    unverified_claims,
    verify,
)

__all__ = [
    "ChannelId",
    "InvalidChannelId",
    "InvalidToken",
    "compact_json",
    "consumer_app_token",
    "device_token",
    "encode_channel",
    "engineio",
    "sign",
    "strict_json",
    "to_seconds",
    "unverified_claims",
    "verify",
]
