"""
Which devices are online: a device is online while it has a network session
on any process of the server.

Each process keeps, in storage, a record of itself with a lease
(C{processes}: its id and C{until}), renewed every third of the lease, and
one record for each device it has sessions of (C{presence}: organization,
device and process).  A device is online when it has a presence record of a
process whose lease holds.  A process that stops removes its own record at
once; one that is killed loses it when its lease runs out, and the next
process to renew removes its presence records.  Each change is announced as
a broadcast C{status} with C{{"uuid", "online"}} on the device's system
channel: the process that saw the change, after it wrote it, announces it.

The records are keyed under no organization, as the revoked credentials are.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from exp.server._auth import DEVICE, NO_ORGANIZATION, Identity
from exp.server._query import Query
from exp.server._storage import IStorage, dumps

#: Seconds a process's word that its devices are online holds unrenewed.
LEASE = 30.0
#: The event announced on a device's system channel.
STATUS = "status"
#: The collections (under no organization) of the processes' leases and of the
#: devices each process has sessions of.
PROCESSES, PRESENCE = "processes", "presence"

#: A device: C{(organization, uuid)}.
Who = tuple[str, str]
#: Announces a status: C{(organization, device uuid, payload)}.
Notify = Callable[[str, str, dict[str, Any]], None]


class Presence:
    """
    The devices with sessions in this process, written down for the others.

    @param lease: seconds this process's records hold without renewal; it
        renews them every third of that.
    """

    _log = Logger()

    def __init__(self, storage: IStorage, notify: Notify, clock: IReactorTime,
                 lease: float = LEASE) -> None:
        self._storage = storage
        self._notify = notify
        self._clock = clock
        #: Seconds this process's records hold without renewal.
        self.lease = lease
        #: This process's id in the records.
        self.process = secrets.token_hex(8)
        self._sessions: Counter[Who] = Counter()
        self._written: set[Who] = set()
        self._busy: set[Who] = set()
        self._running = False
        self._renew = LoopingCall(self._renew_and_sweep)
        self._renew.clock = clock

    async def start(self) -> None:
        """Write this process's lease and keep it renewed."""
        await self._write_lease()
        self._running = True
        self._renew.start(self.lease / 3, now=False)

    async def stop(self) -> None:
        """
        Give up this process's lease: its devices are offline here at once
        (announced where they are offline everywhere).
        """
        self._running = False
        if self._renew.running:
            self._renew.stop()
        mine = sorted(self._written)
        self._written.clear()
        self._sessions.clear()
        try:
            await self._storage.delete(NO_ORGANIZATION, PROCESSES, self.process)
            for organization, device in mine:
                await self._storage.delete(NO_ORGANIZATION, PRESENCE,
                                           _presence_id(organization, device, self.process))
                if not await self.online(organization, device):
                    # The hub publishes it before it closes.
                    self._announce(organization, device, False)
        except Exception:
            self._log.failure("could not give up this process's presence records")

    # -- sessions of this process ----------------------------------------------

    def opened(self, identity: Identity) -> None:
        """A network session of C{identity} began in this process."""
        who = _device(identity)
        if who is not None and self._running:
            self._sessions[who] += 1
            if self._sessions[who] == 1:
                self._changed(who)

    def closed(self, identity: Identity) -> None:
        """A network session of C{identity} ended in this process."""
        who = _device(identity)
        if who is not None and self._running and self._sessions[who] > 0:
            self._sessions[who] -= 1
            if not self._sessions[who]:
                del self._sessions[who]
                self._changed(who)

    def _changed(self, who: Who) -> None:
        if who not in self._busy:
            self._busy.add(who)
            ensureDeferred(self._settle(who))

    async def _settle(self, who: Who) -> None:
        """Write what this process knows of C{who} until storage agrees with it."""
        organization, device = who
        try:
            while self._running and (who in self._sessions) != (who in self._written):
                record_id = _presence_id(organization, device, self.process)
                if who in self._sessions:
                    await self._storage.put(NO_ORGANIZATION, PRESENCE, record_id, {
                        "uuid": record_id, "organization": organization, "device": device,
                        "process": self.process})
                    self._written.add(who)
                    self._announce(organization, device, True)
                else:
                    await self._storage.delete(NO_ORGANIZATION, PRESENCE, record_id)
                    self._written.discard(who)
                    if not await self.online(organization, device):
                        self._announce(organization, device, False)
        except Exception:
            self._log.failure("could not record whether device {device} is online",
                              device=device)
        finally:
            self._busy.discard(who)

    def _announce(self, organization: str, device: str, online: bool) -> None:
        self._notify(organization, device, {"uuid": device, "online": online})

    # -- what every process knows ----------------------------------------------

    async def online(self, organization: str, device: str) -> bool:
        """Whether C{device} has a session on a process whose lease holds."""
        if (organization, device) in self._sessions:
            return True
        records, _ = await self._storage.find(NO_ORGANIZATION, PRESENCE, Query(
            filters={"organization": [organization], "device": [device]}))
        now = self._clock.seconds()
        for process in {record["process"] for record in records}:
            lease = await self._storage.get(NO_ORGANIZATION, PROCESSES, process)
            if lease is not None and float(lease["until"]) > now:
                return True
        return False

    async def _write_lease(self) -> None:
        await self._storage.put(NO_ORGANIZATION, PROCESSES, self.process, {
            "uuid": self.process, "until": self._clock.seconds() + self.lease})

    async def _renew_and_sweep(self) -> None:
        """Renew this process's lease; remove the records of processes whose lease ran out."""
        try:
            await self._write_lease()
            processes, _ = await self._storage.find(NO_ORGANIZATION, PROCESSES, Query())
            now = self._clock.seconds()
            live = {p["uuid"] for p in processes if float(p["until"]) > now}
            records, _ = await self._storage.find(NO_ORGANIZATION, PRESENCE, Query())
            gone: set[Who] = set()
            for record in records:
                if record["process"] not in live and await self._storage.delete(
                        NO_ORGANIZATION, PRESENCE, record["uuid"]) is not None:
                    gone.add((record["organization"], record["device"]))
            for process in processes:
                if process["uuid"] not in live:
                    await self._storage.delete(NO_ORGANIZATION, PROCESSES, process["uuid"])
            for organization, device in sorted(gone):
                if not await self.online(organization, device):
                    self._announce(organization, device, False)
        except Exception:
            self._log.failure("could not renew this process's presence lease")


def _device(identity: Identity) -> Who | None:
    """The device an identity is, if it is a paired one."""
    if identity.type != DEVICE or identity.is_pairing or not identity.organization:
        return None
    return (identity.organization, identity.uuid)


def _presence_id(organization: str, device: str, process: str) -> str:
    return dumps([organization, device, process])

