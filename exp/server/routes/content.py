"""
The routes of content: the items of an organization's content folder, and
the delivery of its files (C{/api/delivery/<path>}), apps' included.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet.threads import deferToThread
from twisted.web import static

from exp.server import _content
from exp.server._auth import Identity
from exp.server._policy import Action
from exp.server._seam import Server
from exp.server._storage import Document
from exp.server._web import ApiRequest, Delegate, Redirect, Routes, not_found
from exp.server.routes.documents import query_of, sandboxed

#: The first segment of a delivery path that carries the restricted token,
#: C{/api/delivery/_rt=<token>/<path>}: an app's files, loaded by relative
#: URLs from its C{index.html}, carry it so.
PATH_TOKEN = "_rt="
#: Past this many parts, a Range header is ignored and the whole file served.
MAX_RANGES = 8

#: The routes of this module, in the order declared.
routes: Routes[Server] = Routes()


def split_path_token(path: str) -> tuple[str | None, str]:
    """C{(token, path)} of a delivery path that starts with L{PATH_TOKEN}."""
    if not path.startswith(PATH_TOKEN):
        return None, path
    token, _, rest = path[len(PATH_TOKEN):].partition("/")
    return token, rest


async def _items(server: Server, identity: Identity) -> list[Document]:
    root = server.content.root(identity.organization)
    if root is None:
        return []
    return await deferToThread(_content.scan, root)


@routes.get("/api/content")
async def find_content(server: Server, req: ApiRequest) -> Any:
    """The content items that match the request's query."""
    identity = server.policy.allow(req, Action.READ)
    query = query_of(req)
    results, total = query.run(await _items(server, identity))
    return {"results": results, "total": total}


@routes.get("/api/content/{uuid}")
async def get_content(server: Server, req: ApiRequest) -> Any:
    """A content item."""
    identity = server.policy.allow(req, Action.READ)
    uuid = req.match["uuid"]
    for item in await _items(server, identity):
        if item["uuid"] == uuid:
            return item
    raise not_found(f"content {uuid}")


@routes.get("/api/delivery/{path*}")
async def delivery(server: Server, req: ApiRequest) -> Any:
    """
    A file of the content folder; a file of an app asked for with C{?_rt=}
    is redirected to a path that carries the token (L{PATH_TOKEN}).
    """
    path_token, path = split_path_token(req.match["path"])
    identity = server.policy.allow(req, Action.FETCH, path_token=path_token)
    root = server.content.root(identity.organization)
    filename = in_app = None
    if root is not None:
        filename, in_app = await deferToThread(_content.resolve_in_app, root, path,
                                               req.param("variant"))
    if filename is None:
        raise not_found(f"content {path}")
    query_token = req.param("_rt")
    if in_app and query_token and path_token is None:
        # The app's own files are loaded by URLs relative to this one:
        # move the token into the path, where they find it.
        return Redirect(f"/api/delivery/{PATH_TOKEN}{quote(query_token, safe='')}/"
                        f"{quote(path.lstrip('/'))}")
    sandboxed(req)
    ranges = req.header("range")
    if ranges is not None and ranges.count(",") >= MAX_RANGES:
        req.http.requestHeaders.removeHeader(b"range")
    return Delegate(static.File(filename))
