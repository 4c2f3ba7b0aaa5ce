"""
The collections of common resources under C{/api/} (devices, things,
experiences, locations and feeds), each described once: its path, the
fields a caller may not see, and what happens on its create, update and
delete beyond storing.  The REST API's generic handlers
(L{exp.server.routes.documents}) read these descriptions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import attrs

from exp.server._auth import CONSUMER_APP, DEVICE, Identity, new_secret, same_secret
from exp.server._policy import caller
from exp.server._seam import Server
from exp.server._seed import resource_defaults
from exp.server._storage import Document
from exp.server._web import bad_request

#: Stores the fields of an update and gives the document after it (or
#: C{None} if there is none to update).
Store = Callable[[], Awaitable[Document | None]]
#: A hook around an update: given the server, the organization, the uuid,
#: the fields and L{Store}, stores them and gives what L{Store} gave.
UpdateHook = Callable[[Server, str, str, Document, Store], Awaitable[Document | None]]
#: A hook after a delete: given the server, the organization and the uuid.
DeleteHook = Callable[[Server, str, str], Awaitable[None]]


def _as_given(document: Document) -> None:
    """Change nothing of a new document."""


async def _just_store(server: Server, organization: str, uuid: str, fields: Document,
                      store: Store) -> Document | None:
    """Store an update, with nothing else to do."""
    return await store()


async def _nothing_more(server: Server, organization: str, uuid: str) -> None:
    """Nothing to do after a delete."""


@attrs.frozen
class Collection:
    """
    A collection of documents under C{/api/}.

    @ivar name: its name in the storage.
    @ivar path: its path under C{/api/}.
    @ivar what: one of its documents in messages (C{"device"}).
    @ivar hidden: the fields each kind of caller
        (L{exp.server._policy.caller}) may not see, nor find or sort by.
    @ivar on_create: fills a new document in before it is stored.
    @ivar on_update: stores an update and does what goes with it.
    @ivar on_delete: what follows a delete.
    """

    name: str
    path: str
    what: str
    hidden: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    on_create: Callable[[Document], None] = _as_given
    on_update: UpdateHook = _just_store
    on_delete: DeleteHook = _nothing_more

    def new(self, document: Document) -> Document:
        """C{document}, with what the hosted EXP fills in and L{on_create}'s fields."""
        self.on_create(document)
        return resource_defaults(self.name, document)

    def hidden_from(self, identity: Identity) -> frozenset[str]:
        """The fields C{identity} may not see."""
        return self.hidden.get(caller(identity), frozenset())

    def shown(self, identity: Identity, document: Document) -> Document:
        """C{document} as C{identity} sees it."""
        hidden = self.hidden_from(identity)
        if not hidden:
            return document
        return {k: v for k, v in document.items() if k not in hidden}


# -- devices: their secret is a credential ----------------------------------------


def _give_secret(document: Document) -> None:
    """Give a new device a secret, unless it names one."""
    if not isinstance(document.get("secret"), str) or not document["secret"]:
        document["secret"] = new_secret()


async def _update_device(server: Server, organization: str, uuid: str, fields: Document,
                         store: Store) -> Document | None:
    """
    Store an update of a device; if it changes the secret, the tokens signed
    in with the old one die with it.
    """
    if "secret" not in fields:
        return await store()
    if not isinstance(fields["secret"], str) or not fields["secret"]:
        raise bad_request("device.invalidSecret", "a device's secret is a non-empty string")
    before = await server.storage.get(organization, "devices", uuid)
    document = await store()
    if document is not None and before is not None and not same_secret(
            str(before.get("secret")), fields["secret"]):
        await server.revocations.revoke((DEVICE, organization, uuid))
    return document


async def _revoke_device(server: Server, organization: str, uuid: str) -> None:
    """A deleted device's tokens die with it."""
    await server.revocations.revoke((DEVICE, organization, uuid))


#: Devices: consumer apps never see their secrets, a new one gets a secret
#: unless it names one, and their tokens die with a change of secret or a delete.
DEVICES = Collection("devices", "devices", "device",
                     hidden={CONSUMER_APP: frozenset({"secret"})},
                     on_create=_give_secret, on_update=_update_device,
                     on_delete=_revoke_device)
#: Things: documents and nothing more.
THINGS = Collection("things", "things", "thing")
#: Experiences: documents and nothing more.
EXPERIENCES = Collection("experiences", "experiences", "experience")
#: Locations: documents (their layout images have routes of their own).
LOCATIONS = Collection("locations", "locations", "location")
#: Feeds, under C{/api/connectors/feeds} (their data has a route of its own).
FEEDS = Collection("feeds", "connectors/feeds", "feed")

#: The collections of common resources, in the order of their routes.
COLLECTIONS = (DEVICES, THINGS, EXPERIENCES, LOCATIONS, FEEDS)
