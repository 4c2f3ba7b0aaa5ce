"""
The routes of documents: the common resources of every
L{exp.server._collections.Collection}, data items, the layout images of
locations, and the data of feeds.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import attrs

from exp.server._collections import COLLECTIONS, Collection
from exp.server._policy import Action
from exp.server._query import InvalidQuery, Query
from exp.server._seam import Server
from exp.server._seed import data_uuid
from exp.server._storage import Document
from exp.server._web import (
    ApiRequest,
    HttpError,
    Raw,
    Routes,
    bad_request,
    not_found,
)

#: What delivered content may do in a browser: run as a page of its own
#: origin-less sandbox, never as the API's origin (whose pages hold tokens).
CONTENT_POLICY = b"sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
#: Layout images: raster types only (an SVG is a document that can run scripts).
LAYOUT_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
                          "image/avif", "image/tiff"})

#: The routes of this module, in the order declared.
routes: Routes[Server] = Routes()


def query_of(req: ApiRequest) -> Query:
    """
    The query of C{req}'s parameters (filters, C{sort}, C{limit}, C{skip}).

    @raise HttpError: 400 for a parameter that is not valid.
    """
    try:
        return Query.from_params(req.params)
    except InvalidQuery as e:
        raise bad_request("request.invalidParameter", str(e)) from None


def sandboxed(req: ApiRequest) -> None:
    """Have the answer to C{req} neither sniffed nor run as the API's origin."""
    req.http.setHeader(b"x-content-type-options", b"nosniff")
    req.http.setHeader(b"content-security-policy", CONTENT_POLICY)


# -- layouts and feeds ------------------------------------------------------------------


@routes.get("/api/locations/{uuid}/layout")
async def get_layout(server: Server, req: ApiRequest) -> Any:
    """The layout image of a location."""
    identity = server.policy.allow(req, Action.FETCH)
    blob = await server.storage.get_blob(identity.organization, f"layout:{req.match['uuid']}")
    if blob is None:
        raise HttpError(404, "layout.notFound", "this location has no layout image")
    sandboxed(req)
    return Raw(*blob)


@routes.put("/api/locations/{uuid}/layout")
async def put_layout(server: Server, req: ApiRequest) -> Any:
    """Upload the layout image of a location: the bytes of a raster image."""
    identity = server.policy.allow(req, Action.WRITE)
    uuid = req.match["uuid"]
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if content_type not in LAYOUT_TYPES:
        raise bad_request("layout.notImage", "a layout is uploaded as the bytes of a "
                          f"raster image: {', '.join(sorted(LAYOUT_TYPES))}")
    image = req.body_bytes()
    if not image:
        raise bad_request("request.bodyRequired", "the layout image is empty")
    if await server.storage.get(identity.organization, "locations", uuid) is None:
        raise not_found(f"location {uuid}")
    await server.storage.put_blob(identity.organization, f"layout:{uuid}", content_type, image)
    return None


@routes.get("/api/connectors/feeds/{uuid}/data")
async def feed_data(server: Server, req: ApiRequest) -> Any:
    """The data of a feed, fetched from its source now."""
    identity = server.policy.allow(req, Action.READ)
    uuid = req.match["uuid"]
    feed = found(await server.storage.get(identity.organization, "feeds", uuid), f"feed {uuid}")
    return await server.feeds.fetch(feed, req.param("searchValue"))


# -- the common resources ---------------------------------------------------------------


async def find(server: Server, req: ApiRequest, collection: Collection) -> Any:
    """The documents of C{collection} that match the request's query."""
    identity = server.policy.allow(req, Action.READ)
    query = query_of(req)
    hidden = collection.hidden_from(identity)
    if hidden:
        # A caller queries documents as it sees them, without the fields
        # hidden from it, so that a find by secret cannot probe secrets.
        if any(path.split(".")[0] in hidden for path in query.filters):
            return {"results": [], "total": 0}
        if query.sort and query.sort.lstrip("-").split(".")[0] in hidden:
            query = attrs.evolve(query, sort=None)
    results, total = await server.storage.find(identity.organization, collection.name, query)
    return {"results": [collection.shown(identity, d) for d in results], "total": total}


async def create(server: Server, req: ApiRequest, collection: Collection) -> Any:
    """Create a document of C{collection} from the request's body."""
    identity = server.policy.allow(req, Action.WRITE)
    document = collection.new(req.document())
    stored = await server.storage.insert(identity.organization, collection.name, document)
    assert stored is not None
    server.notify(identity.organization, stored["uuid"], "create", stored)
    return stored


def found(document: Document | None, what: str) -> Document:
    """
    C{document}, if there is one.

    @raise HttpError: 404, that C{what} (C{"device <uuid>"}) does not exist.
    """
    if document is None:
        raise not_found(what)
    return document


async def get(server: Server, req: ApiRequest, collection: Collection) -> Any:
    """A document of C{collection}."""
    identity = server.policy.allow(req, Action.READ)
    uuid = req.match["uuid"]
    document = await server.storage.get(identity.organization, collection.name, uuid)
    return collection.shown(identity, found(document, f"{collection.what} {uuid}"))


async def update(server: Server, req: ApiRequest, collection: Collection) -> Any:
    """Change the fields of a document of C{collection} that the request's body gives."""
    identity = server.policy.allow(req, Action.WRITE)
    organization, uuid = identity.organization, req.match["uuid"]
    fields = req.document()
    fields.pop("uuid", None)

    def store() -> Any:
        return server.storage.update(organization, collection.name, uuid, fields)

    document = found(await collection.on_update(server, organization, uuid, fields, store),
                     f"{collection.what} {uuid}")
    server.notify(organization, uuid, "update", document)
    return document


async def delete(server: Server, req: ApiRequest, collection: Collection) -> Any:
    """Delete a document of C{collection}."""
    organization = server.policy.allow(req, Action.WRITE).organization
    uuid = req.match["uuid"]
    document = found(await server.storage.delete(organization, collection.name, uuid),
                     f"{collection.what} {uuid}")
    server.notify(organization, uuid, "delete", document)
    await collection.on_delete(server, organization, uuid)
    return None


for _collection in COLLECTIONS:
    _path = f"/api/{_collection.path}"
    routes.get(_path)(partial(find, collection=_collection))
    routes.post(_path)(partial(create, collection=_collection))
    routes.get(_path + "/{uuid}")(partial(get, collection=_collection))
    routes.patch(_path + "/{uuid}")(partial(update, collection=_collection))
    routes.delete(_path + "/{uuid}")(partial(delete, collection=_collection))


@routes.get("/api/devices/{uuid}/status")
async def device_status(server: Server, req: ApiRequest) -> Any:
    """Whether a device has a network session on any process of the server."""
    identity = server.policy.allow(req, Action.READ)
    uuid = req.match["uuid"]
    found(await server.storage.get(identity.organization, "devices", uuid), f"device {uuid}")
    return {"uuid": uuid, "online": await server.presence.online(identity.organization, uuid)}


# -- data -------------------------------------------------------------------------------


def public_item(document: Document) -> Document:
    """A data item as clients see it."""
    return {"group": document["group"], "key": document["key"], "value": document["value"]}


def notify_data(server: Server, organization: str, group: str, key: str, event: str,
                item: Document) -> None:
    """
    Announce a change of a data item on its channel, C{data:<group>:<key>},
    and on C{data:<key>:<group>}, the name the official JS SDK listens on.
    """
    for name in dict.fromkeys((f"data:{group}:{key}", f"data:{key}:{group}")):
        server.notify(organization, name, event, item)


@routes.get("/api/data")
async def find_data(server: Server, req: ApiRequest) -> Any:
    """The data items that match the request's query."""
    identity = server.policy.allow(req, Action.READ)
    results, total = await server.storage.find(identity.organization, "data", query_of(req))
    return {"results": [public_item(d) for d in results], "total": total}


@routes.get("/api/data/{group}/{key}")
async def get_data(server: Server, req: ApiRequest) -> Any:
    """A data item."""
    identity = server.policy.allow(req, Action.READ)
    group, key = req.match["group"], req.match["key"]
    item = await server.storage.get(identity.organization, "data", data_uuid(group, key))
    return public_item(found(item, f"data item {group}/{key}"))


@routes.put("/api/data/{group}/{key}")
async def put_data(server: Server, req: ApiRequest) -> Any:
    """Store a data item: the request's body is its value."""
    identity = server.policy.allow(req, Action.WRITE)
    group, key = req.match["group"], req.match["key"]
    item = {"group": group, "key": key, "value": req.json()}
    _, created = await server.storage.put(
        identity.organization, "data", data_uuid(group, key), dict(item)
    )
    notify_data(server, identity.organization, group, key,
                "create" if created else "update", item)
    return item


@routes.delete("/api/data/{group}/{key}")
async def delete_data(server: Server, req: ApiRequest) -> Any:
    """Delete a data item."""
    identity = server.policy.allow(req, Action.WRITE)
    group, key = req.match["group"], req.match["key"]
    item = found(await server.storage.delete(identity.organization, "data", data_uuid(group, key)),
                 f"data item {group}/{key}")
    notify_data(server, identity.organization, group, key, "delete", public_item(item))
    return None
