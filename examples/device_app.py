"""
A device app for ``twistd exp``: it answers broadcasts named ``ping`` on the
channel ``ops`` with ``{"name": "pong", "uuid": <its uuid>}``, and keeps the
data item ``status/<its uuid>`` up to date with ``{"online": true,
"updated": <unix time>}`` every ``STATUS_INTERVAL`` seconds (default 10).

Run it from the repository root, so that ``examples`` is importable (from
elsewhere, put the repository on ``PYTHONPATH``, or copy this file next to
you and name it ``--app device_app:main``)::

    twistd -n exp --app examples.device_app:main

Without ``--host`` an embedded local EXP server (demo seed) runs in the same
process and the app is the demo device; its URL is in the log.  Against a
server, give the device's credentials as options or ``EXP_*`` variables::

    EXP_HOST=http://127.0.0.1:9000 EXP_UUID=test-uuid EXP_SECRET=test-secret \\
        STATUS_INTERVAL=2 twistd -n exp --app examples.device_app:main

Then, as a user, broadcast ``ping`` on ``ops`` (with a timeout) to get the
pong, and read ``GET /api/data/status/test-uuid``.  Stop it with Ctrl-C or
SIGTERM: the status timer stops with the service.
"""

from __future__ import annotations

import os
import time

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from exp.twisted import Broadcast, ExpError, ExpService

log = Logger(namespace="device_app")


def interval() -> float:
    """Seconds between status updates, from C{STATUS_INTERVAL}."""
    return float(os.environ.get("STATUS_INTERVAL") or 10)


async def main(service: ExpService) -> None:
    """Called by C{twistd exp} with the started, authenticated service."""
    uuid = service.identity["uuid"]

    def pong(broadcast: Broadcast) -> Deferred[None]:
        log.info("ping {payload!r}; answering pong", payload=broadcast.payload)
        return broadcast.respond({"name": "pong", "uuid": uuid})

    await service.get_channel("ops").listen("ping", pong)
    log.info("answering ping on channel ops as {uuid}", uuid=uuid)

    async def report() -> None:
        try:
            await service.create_data(uuid, "status", {"online": True, "updated": time.time()})
        except ExpError as e:  # keep reporting: the next update may well get through
            log.warn("could not update status/{uuid}: {error}", uuid=uuid, error=e)

    # A LoopingCall as a child service: it runs on the service's clock and
    # stops (waiting for an update in flight) when the ExpService stops.
    timer = TimerService(interval(), lambda: ensureDeferred(report()))
    timer.clock = service.clock
    timer.setServiceParent(service)
    log.info("updating status/{uuid} every {interval} s", uuid=uuid, interval=interval())
