"""The route of logs that clients ship to the server."""

from __future__ import annotations

from typing import Any

from exp.server._policy import Action
from exp.server._seam import Server
from exp.server._web import ApiRequest, Routes, bad_request

#: The routes of this module, in the order declared.
routes: Routes[Server] = Routes()


@routes.post("/api/logs")
async def logs(server: Server, req: ApiRequest) -> Any:
    """Store log entries, a JSON array of objects, with who sent them."""
    identity = server.policy.allow(req, Action.SHIP_LOGS)
    entries = req.json()
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise bad_request("logs.invalid", "logs are a JSON array of objects")
    if entries:
        await server.storage.add_logs(identity.organization, identity.to_json(), entries)
    return None
