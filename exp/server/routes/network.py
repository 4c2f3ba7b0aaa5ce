"""
The network's REST side: broadcasts that collect responses for a while, and
the responses to them.
"""

from __future__ import annotations

import math
from typing import Any

from exp.server._policy import Action
from exp.server._query import UNSET
from exp.server._seam import Server
from exp.server._web import ApiRequest, Routes, bad_request

#: The routes of this module, in the order declared.
routes: Routes[Server] = Routes()


@routes.post("/api/networks/current/broadcasts")
async def broadcast(server: Server, req: ApiRequest) -> Any:
    """Broadcast on a channel; the answer lists the responses collected within C{timeout}."""
    identity = server.policy.allow(req, Action.BROADCAST)
    timeout = _timeout(req.param("timeout"), server.config.max_broadcast_timeout)
    body = req.document()
    channel = server.policy.channel(identity, body.get("channel"), send=True)
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("broadcast.nameRequired", "a broadcast needs a name (a string)")
    return await server.hub.broadcast(
        channel.encode(), name, body.get("payload"), timeout,
        max_responses=server.config.max_responses,
        max_bytes=server.config.max_response_bytes)


def _timeout(raw: str | None, cap: float) -> float:
    """Seconds of a C{timeout} parameter in milliseconds, at most C{cap}; none is 0."""
    if raw is None or raw.strip() in UNSET:
        return 0.0
    try:
        value = float(raw) / 1000.0
    except ValueError:
        raise bad_request("request.invalidParameter",
                          f"timeout is in milliseconds, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise bad_request("request.invalidParameter", "timeout must be a positive number")
    return min(value, cap)


@routes.post("/api/networks/current/responses")
async def respond(server: Server, req: ApiRequest) -> Any:
    """Respond to a broadcast (dropped if it is no longer collecting)."""
    identity = server.policy.allow(req, Action.RESPOND)
    body = req.document()
    channel = server.policy.channel(identity, body.get("channel"), send=False)
    broadcast_id = body.get("id")
    if not isinstance(broadcast_id, str) or not broadcast_id:
        raise bad_request("response.idRequired", "a response names its broadcast's id")
    server.hub.respond(broadcast_id, channel.encode(), body.get("payload"))
    return None
