"""
Who may do what: the permission rules of README.md ("Decisions where the
protocol is silent", Permissions) as one table, L{PERMISSIONS}, and the
L{Policy} that finds who a request acts for and holds it to the table.

The rules, as the README states them: users and devices may do everything
within their organization (devices may also pair devices); consumer apps may
only read resources and data, never see device secrets (the devices'
L{exp.server._collections.Collection} hides them), may ship logs, and use
consumer channels only (L{channel_allowed}); the restricted token is refused
everywhere but delivery and layout URLs; an unpaired device may only refresh
its token and listen on its own system channel.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from exp.protocol import ChannelId, InvalidChannelId, InvalidToken
from exp.server._auth import CONSUMER_APP, DEVICE, USER, Identity, TokenIssuer, channel_allowed
from exp.server._revocation import Revocations, key_of
from exp.server._web import ApiRequest, HttpError, bad_request, forbidden, unauthorized

#: A caller that holds an unpaired device's token.
UNPAIRED = "unpairedDevice"
#: A caller that holds a restricted token (of any identity).
RESTRICTED = "restrictedToken"


class Action(enum.Enum):
    """What a caller asks to do, as the rows of L{PERMISSIONS} name it."""

    #: Refresh its token (C{POST /api/auth/token}).
    REFRESH = "refresh"
    #: Read resources, data, content and feeds' data.
    READ = "read"
    #: Fetch delivered files and layout images, with a restricted token too.
    FETCH = "fetch"
    #: Create, change and delete resources, data and layout images.
    WRITE = "write"
    #: Pair a device that waits with a pairing code.
    PAIR = "pair"
    #: Ship logs (C{POST /api/logs}).
    SHIP_LOGS = "ship logs"
    #: Broadcast, on a channel that L{channel_allowed} lets it send on.
    BROADCAST = "broadcast"
    #: Respond to a broadcast, on a channel that L{channel_allowed} lets it listen on.
    RESPOND = "respond"


#: Who may do what: for each action, the callers who may.
PERMISSIONS: dict[Action, frozenset[str]] = {
    Action.REFRESH:   frozenset({USER, DEVICE, CONSUMER_APP, UNPAIRED}),
    Action.READ:      frozenset({USER, DEVICE, CONSUMER_APP}),
    Action.FETCH:     frozenset({USER, DEVICE, CONSUMER_APP, RESTRICTED}),
    Action.WRITE:     frozenset({USER, DEVICE}),
    Action.PAIR:      frozenset({USER, DEVICE}),
    Action.SHIP_LOGS: frozenset({USER, DEVICE, CONSUMER_APP}),
    Action.BROADCAST: frozenset({USER, DEVICE, CONSUMER_APP}),
    Action.RESPOND:   frozenset({USER, DEVICE, CONSUMER_APP}),
}

#: The 403 answer (code, message) of a caller refused by L{PERMISSIONS}.
REFUSALS: dict[str, tuple[str, str]] = {
    RESTRICTED: ("auth.restricted",
                 "a restricted token is only good for delivery and layout URLs"),
    UNPAIRED: ("device.unpaired", "an unpaired device can only wait to be paired"),
    CONSUMER_APP: ("permission.denied", "consumer apps can only read"),
}


def caller(identity: Identity) -> str:
    """
    The column of L{PERMISSIONS} that C{identity} falls in: L{RESTRICTED}
    for a restricted token, L{UNPAIRED} for an unpaired device, else its type.
    """
    if identity.restricted:
        return RESTRICTED
    if identity.is_pairing:
        return UNPAIRED
    return identity.type


def may(identity: Identity, action: Action) -> bool:
    """Whether C{identity} may do C{action}."""
    return caller(identity) in PERMISSIONS[action]


@attrs.define
class Policy:
    """
    Finds who a request acts for, from its token, and holds it to
    L{PERMISSIONS}.

    @ivar revocations: the credentials that changed, which refuse the
        tokens issued before.
    @ivar tokens: signs and verifies the server's tokens; C{None} until the
        server has started (its key is in the storage).
    """

    revocations: Revocations
    tokens: TokenIssuer | None = None

    def issuer(self) -> TokenIssuer:
        """
        The server's L{TokenIssuer}.

        @raise HttpError: 503 while the server is starting.
        """
        if self.tokens is None:
            raise HttpError(503, "server.starting", "the server is starting")
        return self.tokens

    def identify_token(self, token: str) -> Identity:
        """
        The identity of a token that the network's handshake carries.

        @raise InvalidToken: if the token is not (or no longer) good.
        """
        if self.tokens is None:
            raise InvalidToken("the server is starting")
        return self.revocations.check(self.tokens.identify(token))

    def issue(self, identity: Identity, public_url: str) -> dict[str, Any]:
        """An auth payload for C{identity}, bound to its current credential."""
        credential = self.revocations.credential(key_of(identity))
        return self.issuer().issue(attrs.evolve(identity, credential=credential), public_url)

    def identify(self, req: ApiRequest, restricted_ok: bool = False,
                 path_token: str | None = None) -> Identity:
        """
        Who C{req} acts for: the token of its C{Authorization} header or,
        where a restricted token is good (C{restricted_ok}), of its C{_rt}
        parameter or its path (C{path_token}).

        @raise HttpError: 401 without a token, or with one that is not good.
        """
        header = req.header("authorization") or ""
        token: str | None = None
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise unauthorized("the Authorization header must be 'Bearer <token>'")
            token = value.strip()
        elif restricted_ok:
            token = req.param("_rt") or path_token
        if not token:
            raise unauthorized("this call needs a token", "auth.required")
        try:
            return self.revocations.check(self.issuer().identify(token))
        except InvalidToken as e:
            raise unauthorized(f"the token is not valid: {e}") from None

    def allow(self, req: ApiRequest, action: Action, path_token: str | None = None) -> Identity:
        """
        Who C{req} acts for, if L{PERMISSIONS} lets it do C{action}.

        @param path_token: a token the request's path carries, where
            C{action} is good with a restricted token.
        @raise HttpError: 401 as L{identify} does; 403 if the caller may not.
        """
        restricted_ok = RESTRICTED in PERMISSIONS[action]
        identity = self.identify(req, restricted_ok=restricted_ok, path_token=path_token)
        if not may(identity, action):
            code, message = REFUSALS.get(caller(identity), ("permission.denied",
                                                             "this identity may not do that"))
            raise forbidden(message, code)
        return identity

    def channel(self, identity: Identity, channel_id: Any, *, send: bool) -> ChannelId:
        """
        The channel named C{channel_id}, if C{identity} may broadcast on it
        (C{send}) or listen to it (L{channel_allowed}).

        @raise HttpError: 400 for a malformed channel id, 403 for a channel
            C{identity} may not use.
        """
        try:
            channel = ChannelId.decode(channel_id)
        except InvalidChannelId as e:
            raise bad_request("channel.invalid", str(e)) from None
        if not channel_allowed(identity, channel, send=send):
            raise forbidden("this identity may not use that channel", "channel.forbidden")
        return channel
