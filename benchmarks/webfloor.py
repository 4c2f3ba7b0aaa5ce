"""
The floor of benchmarks/peers.py's ``floor`` benchmark: a bare twisted.web
Site on the same Python and reactor as our server, doing no EXP work at all.

    python benchmarks/webfloor.py --port N

It listens on 127.0.0.1:N and answers every POST as twisted.web does when a
resource returns bytes: ``/api/auth/login`` with an auth payload whose api
and network hosts are this server (what the benchmarks' clients read), any
other path with ``[]``, the body read and ignored.  It logs no requests and
runs until it is killed.  Like our server, it does not parse bodies as
forms (twisted.web would, through the email package, for every POST).  What
it costs per request is what twisted.web costs
before our server does anything.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from twisted.internet import reactor
from twisted.web import resource, server


class Floor(resource.Resource):
    """Every POST: the login's payload, or C{[]}."""

    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:
        assert request.content is not None
        request.content.read()
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        if request.path != b"/api/auth/login":
            return b"[]"
        host = "http://" + (request.getHeader(b"host") or b"").decode("ascii")
        return json.dumps({"token": "floor", "identity": {"organization": "scala"},
                           "api": {"host": host}, "network": {"host": host}}).encode("utf-8")


class FormlessRequest(server.Request):
    """A request whose body is not parsed as a form."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)


class QuietSite(server.Site):
    """A site that writes no access log (as our server with --no-access-log)."""

    requestFactory = FormlessRequest

    def log(self, request: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    reactor.listenTCP(port, QuietSite(Floor()), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
