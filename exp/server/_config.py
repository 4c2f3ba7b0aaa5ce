"""
The server's settings: one record, made by C{twistd exp-server}'s options
(L{exp.server.tap}) or by a program that embeds the server.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from exp.server import _feeds
from exp.server._auth import PASSWORD_COST
from exp.server._cors import ANY as ANY_ORIGIN
from exp.server._cors import normalize_origins
from exp.server._hub import MAX_RESPONSE_BYTES, MAX_RESPONSES
from exp.server._network import (
    MAX_SESSION_MESSAGES,
    MAX_SESSION_QUEUE,
    MAX_SESSIONS_PER_IDENTITY,
    MAX_SUBSCRIPTIONS,
)
from exp.server._presence import LEASE


@attrs.define
class ServerConfig:
    """
    The server's settings.

    @ivar public_url: the URL clients are told to use for REST and the
        network; by default the scheme and Host of each login request.
    @ivar token_lifetime: seconds a token the server issues is valid.
    @ivar max_body: the largest request body or WebSocket message, in bytes.
    @ivar max_broadcast_timeout: the cap on a broadcast's C{timeout}, seconds.
    @ivar content: the content folder of organizations whose seed names none.
    @ivar ping_interval: seconds between the Engine.IO pings a client is
        told to send.
    @ivar ping_timeout: seconds a network session waits for a ping past the
        interval before it is closed.
    @ivar access_log: whether to write a line per HTTP request.
    @ivar feed_allow: CIDR ranges feeds may be fetched from although they are
        not public (loopback, private, ...): C{--feed-allow}.
    @ivar feed_timeout: seconds for a whole feed fetch, body included.
    @ivar feed_max_bytes: the largest feed source, as received and as
        decompressed.
    @ivar cors_origins: the origins whose web pages may call the API and
        poll the network (C{"*"}: any; none: no cross-origin page).
    @ivar max_session_queue: bytes of packets a network session may have
        waiting for its client (not polled, or not read off its WebSocket);
        past it the session is closed.
    @ivar max_session_messages: the same in packets.
    @ivar max_subscriptions: channels one network session may listen to.
    @ivar max_sessions_per_identity: network sessions one identity may
        hold; a new one closes its oldest.  An unpaired device holds one.
    @ivar max_responses: responses one broadcast collects; more are dropped.
    @ivar max_response_bytes: bytes (as JSON) of the responses one broadcast
        collects; more are dropped.
    """

    public_url: str | None = None
    token_lifetime: float = 3600.0
    max_body: int = 1 << 20
    max_broadcast_timeout: float = 60.0
    content: str | None = None
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    access_log: bool = True
    #: scrypt's cost for passwords, as log2 of N (hashes of a lower cost are
    #: redone at the next login).
    password_cost: int = PASSWORD_COST
    #: Failed logins and pairing attempts a peer address may make a minute.
    failures_per_minute: float = 30.0
    #: Failed logins (or pairing codes) of one account that lock it ...
    lockout_failures: int = 10
    #: ... for this many seconds.
    lockout_seconds: float = 300.0
    #: Unpaired device logins a peer address may make a minute.
    unpaired_logins_per_minute: float = 30.0
    #: Seconds a pairing code is good for.
    pairing_code_lifetime: float = 900.0
    #: Seconds a request's head may take from its first byte.
    head_timeout: float = 10.0
    #: Connections one peer address may hold open at once (0: no limit).
    max_connections_per_peer: int = 1000
    feed_allow: Sequence[str] = ()
    feed_timeout: float = _feeds.FETCH_TIMEOUT
    feed_max_bytes: int = _feeds.MAX_FEED_BYTES
    #: Seconds a process's word that its devices are online holds unrenewed.
    presence_lease: float = LEASE
    cors_origins: tuple[str, ...] = attrs.field(default=(ANY_ORIGIN,),
                                                converter=normalize_origins)
    max_session_queue: int = MAX_SESSION_QUEUE
    max_session_messages: int = MAX_SESSION_MESSAGES
    max_subscriptions: int = MAX_SUBSCRIPTIONS
    max_sessions_per_identity: int = MAX_SESSIONS_PER_IDENTITY
    max_responses: int = MAX_RESPONSES
    max_response_bytes: int = MAX_RESPONSE_BYTES
