"""
Pairing codes: an unpaired device logs in and gets a code, a person reads it
off the device's screen, and a user pairs the device with it
(C{POST /api/devices/pair}).  Codes are stored under no organization, live
for a while, and are purged once expired.
"""

from __future__ import annotations

import math
import secrets

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from exp.server._auth import DEVICE, NO_ORGANIZATION, Identity, pairing_code
from exp.server._query import Query
from exp.server._storage import Document, IStorage
from exp.server._web import HttpError

#: Seconds between two purges of the expired pairing codes.
PURGE_INTERVAL = 60.0
#: Where pairing codes are stored, under no organization (their uuid is the code).
COLLECTION = "pairings"


class Pairings:
    """
    The pairing codes of the devices waiting to be paired.

    @param lifetime: seconds a pairing code is good for.
    """

    _log = Logger()

    def __init__(self, storage: IStorage, clock: IReactorTime, lifetime: float) -> None:
        self._storage = storage
        self._clock = clock
        self._lifetime = lifetime
        self._purge = LoopingCall(self.purge)
        self._purge.clock = clock

    def start(self) -> None:
        """Purge the expired codes every L{PURGE_INTERVAL} seconds."""
        self._purge.start(PURGE_INTERVAL, now=False)

    def stop(self) -> None:
        """Stop purging."""
        if self._purge.running:
            self._purge.stop()

    async def new_identity(self) -> Identity:
        """
        The identity of a device that waits to be paired, with a new code.

        @raise HttpError: 503 if no free code was found.
        """
        identity_uuid = f"pairing-{secrets.token_hex(12)}"
        for _ in range(20):
            code = pairing_code()
            expires = self._clock.seconds() + self._lifetime
            stored = await self._storage.insert(
                NO_ORGANIZATION, COLLECTION,
                {"uuid": code, "identity": identity_uuid, "expires": expires},
                replace_uuid=False,
            )
            if stored is not None:
                return Identity(DEVICE, identity_uuid, NO_ORGANIZATION, paired=False,
                                pairing_code=code)
        raise HttpError(503, "pairing.busy", "no pairing code is free; try again")

    def live(self, pairing: Document | None) -> bool:
        """Whether C{pairing} is a pairing code that has not expired."""
        return pairing is not None and float(pairing.get("expires", math.inf)) > (
            self._clock.seconds())

    async def waiting(self, code: str) -> bool:
        """Whether a device waits with C{code}, which has not expired."""
        return self.live(await self._storage.get(NO_ORGANIZATION, COLLECTION, code))

    async def take(self, code: str) -> Document | None:
        """The pairing of C{code}, removed, if it had not expired."""
        pairing = await self._storage.delete(NO_ORGANIZATION, COLLECTION, code)
        return pairing if self.live(pairing) else None

    async def purge(self) -> None:
        """Remove the pairing codes that have expired."""
        try:
            pairings, _ = await self._storage.find(NO_ORGANIZATION, COLLECTION, Query())
            for pairing in pairings:
                if not self.live(pairing):
                    await self._storage.delete(NO_ORGANIZATION, COLLECTION, pairing["uuid"])
        except Exception:
            self._log.failure("could not purge the expired pairing codes")
