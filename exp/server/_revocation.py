"""
Tokens die with their credentials: when a device is deleted or its secret
changes, the tokens issued before are refused at once in every process of the
server, and after restarts, until the last of them has expired.

Every server token carries the credential of its identity when it was issued
(claim C{cred}): C{""} for an identity whose credentials have not changed
within a token lifetime, else the random credential its latest change made.
A change gives the identity a new credential, which the processes learn
through the hub at once and from storage at start and every
L{RELOAD_INTERVAL} seconds (in case the hub missed it).  A token whose
credential is not its identity's current one is refused.  A change is
forgotten a token lifetime after it was made: every token issued before has
expired by then.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from exp.protocol import InvalidToken
from exp.server._auth import NO_ORGANIZATION, Identity
from exp.server._hub import IHub, ISubscriber, Message
from exp.server._query import Query
from exp.server._storage import IStorage, dumps

#: Seconds between two readings of the stored changes.
RELOAD_INTERVAL = 30.0
#: The hub channel between the processes of one server; no client channel id
#: looks like it.
SERVER_CHANNEL = "exp:server"
#: Where the changes are stored, under no organization.
COLLECTION = "revocations"
#: The event on L{SERVER_CHANNEL} that announces a change.
REVOKED = "revoked"

#: Whose credentials: C{(identity type, organization, uuid)}.
Key = tuple[str, str, str]


@attrs.frozen
class Change:
    """
    An identity's credential since its latest change, good until C{until}.

    @ivar credential: what the tokens issued since carry.
    @ivar until: when the change is forgotten (seconds since the epoch):
        every token issued before it has expired by then.
    """

    credential: str
    until: float


def key_of(identity: Identity) -> Key:
    """Whose credentials C{identity} acts with."""
    return (identity.type, identity.organization, identity.uuid)


def _uncancellable(d: Deferred[Any]) -> Deferred[Any]:
    """What C{d} gives, in a Deferred whose cancellation leaves C{d} running."""
    shield: Deferred[Any] = Deferred()

    def passed(result: Any) -> None:
        if not shield.called:
            if isinstance(result, Failure):
                shield.errback(result)
            else:
                shield.callback(result)

    d.addBoth(passed)
    return shield


@implementer(ISubscriber)
class Revocations:
    """
    The identities whose credentials changed within a token lifetime.

    @param storage: where changes are kept, for restarts and later processes.
    @param hub: tells the other processes of a change at once.
    @param clock: the clock of the changes' ends.
    @param lifetime: seconds a server token is valid.
    @param revoked: called with the key of every identity whose tokens this
        process learns are revoked (to end its network sessions).
    """

    _log = Logger()

    def __init__(self, storage: IStorage, hub: IHub, clock: IReactorTime, lifetime: float,
                 revoked: Callable[[Key], None]) -> None:
        self._storage, self._hub, self._clock = storage, hub, clock
        self._lifetime, self._revoked = lifetime, revoked
        self._changes: dict[Key, Change] = {}
        self._reload = LoopingCall(self._reload_changes)
        self._reload.clock = clock

    async def start(self) -> None:
        """Listen for changes from other processes, then read the stored ones."""
        # Subscribed before loading: no change falls between the two.
        self._hub.subscribe(SERVER_CHANNEL, self)
        await self._load()
        self._reload.start(RELOAD_INTERVAL, now=False)

    def stop(self) -> None:
        """Stop reading changes from the storage and the other processes."""
        if self._reload.running:
            self._reload.stop()
        self._hub.unsubscribe_all(self)

    def credential(self, key: Key) -> str:
        """The credential a token issued now for C{key} carries."""
        change = self._changes.get(key)
        if change is None or change.until <= self._clock.seconds():
            return ""
        return change.credential

    def check(self, identity: Identity) -> Identity:
        """
        C{identity}, unless its token was issued before its credentials changed.

        @raise InvalidToken: if it was.
        """
        if self._changes and identity.credential != self.credential(key_of(identity)):
            raise InvalidToken("its credentials have changed since it was issued")
        return identity

    async def revoke(self, key: Key) -> None:
        """
        Refuse the tokens issued so far for C{key}, in every process and
        after restarts.  A client leaving does not stop it half-way.
        """
        change = Change(secrets.token_urlsafe(12), self._clock.seconds() + self._lifetime + 1)
        # At once in this process (the hub delivers here synchronously), soon
        # in the others, then for processes started later.
        self._hub.notify(SERVER_CHANNEL, REVOKED, _record(key, change))
        await _uncancellable(self._storage.put(
            NO_ORGANIZATION, COLLECTION, dumps(list(key)), _record(key, change)))

    def deliver(self, message: Message) -> None:
        if message.body["name"] == REVOKED:
            self._learn(*_parse(message.body["payload"]))

    def _learn(self, key: Key, change: Change) -> None:
        now = self._clock.seconds()
        known = self._changes.get(key)
        if known == change or change.until <= now:
            return
        self._changes = {k: v for k, v in self._changes.items() if v.until > now}
        if known is None or known.until <= change.until:
            self._changes[key] = change
            self._revoked(key)

    async def _load(self) -> None:
        """Learn the stored changes; remove those that are over."""
        records, _ = await self._storage.find(NO_ORGANIZATION, COLLECTION, Query())
        now = self._clock.seconds()
        for record in records:
            key, change = _parse(record)
            if change.until <= now:
                await self._storage.delete(NO_ORGANIZATION, COLLECTION, record["uuid"])
            else:
                self._learn(key, change)

    async def _reload_changes(self) -> None:
        try:
            await self._load()
        except Exception:
            self._log.failure("could not read the revoked credentials")


def _record(key: Key, change: Change) -> dict[str, Any]:
    return {"uuid": dumps(list(key)), "type": key[0], "organization": key[1], "identity": key[2],
            "credential": change.credential, "until": change.until}


def _parse(record: dict[str, Any]) -> tuple[Key, Change]:
    key = (record["type"], record["organization"], record["identity"])
    return key, Change(record["credential"], record["until"])

