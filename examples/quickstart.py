"""
The main job of the README, end to end with no account anywhere: start the
local EXP server (demo seed) on a free loopback port, log in as the demo
user over HTTP, and list what the organization has.

Run it with ``make demo`` (or ``python examples/quickstart.py`` in the venv).
"""

from __future__ import annotations

import json

import treq
from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from exp.server.testing import DEMO, start_server


async def main(reactor: object) -> None:
    server = await start_server()
    try:
        print(f"local EXP server on {server.url} (demo seed)")
        response = await treq.post(
            server.url + "/api/auth/login",
            json={"username": DEMO["username"], "password": DEMO["password"],
                  "organization": DEMO["organization"]},
        )
        auth = await response.json()
        print("logged in as", json.dumps(auth["identity"]))
        headers = {"Authorization": "Bearer " + auth["token"]}
        for path in ("/api/devices", "/api/locations", "/api/data"):
            answer = await (await treq.get(server.url + path, headers=headers)).json()
            print(f"{path}: {answer['total']} →",
                  ", ".join(d.get("name") or d.get("key", "?") for d in answer["results"]))
    finally:
        await server.stop()


if __name__ == "__main__":
    task.react(lambda reactor: ensureDeferred(main(reactor)))
