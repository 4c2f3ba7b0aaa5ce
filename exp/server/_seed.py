"""
Seed files (PROTOCOL.md Part B): organizations with their users, devices,
consumer apps, resources, data items, content folder and layout images.

L{load_seed} checks a whole file before anything is stored, so that a bad
seed stops the server with a message naming the problem; L{apply_seed}
adds what is missing and changes nothing else.
"""

from __future__ import annotations

import json
import os
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from exp.server._storage import IStorage, dumps

#: The collections of resources a seed may give.
RESOURCES = ("things", "experiences", "locations", "feeds")
_ORG_KEYS = {"name", "users", "devices", "consumerApps", "data", "content", *RESOURCES}
_NAMESPACE = uuidlib.UUID("0c7f6a0e-5a0b-4d0e-8a53-3f3c1e0d9b21")


class SeedError(ValueError):
    """A seed file that cannot be loaded; the message names the problem."""


@attrs.frozen
class Organization:
    """
    An organization of a seed, checked, its paths made absolute.

    @ivar name: its name.
    @ivar users: C{{username, password}} and more.
    @ivar devices: C{{uuid, secret}} and more.
    @ivar consumer_apps: C{{uuid, apiKey}} and more.
    @ivar resources: the documents of each of L{RESOURCES}, with their uuids.
    @ivar data: C{{group, key, value}}.
    @ivar content: its content folder.
    @ivar layouts: the image file of each location that names one, by uuid.
    """

    name: str
    users: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    consumer_apps: list[dict[str, Any]]
    resources: dict[str, list[dict[str, Any]]]
    data: list[dict[str, Any]]
    content: str | None
    layouts: dict[str, str]


def demo_seed_path() -> str:
    """The seed that ships with the server and runs when none is given."""
    return os.path.join(os.path.dirname(__file__), "demo", "seed.json")


def _objects(org: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = org.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SeedError(f"{where}.{key} must be a list of objects")
    return [dict(v) for v in value]


def _require_strings(item: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if not isinstance(item.get(key), str) or not item[key]:
            raise SeedError(f"{where} needs a non-empty string {key!r}")


def _stable_uuid(org: str, collection: str, document: dict[str, Any]) -> str:
    """A uuid for a seeded document that gives none, the same on every load."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return str(uuidlib.uuid5(_NAMESPACE, f"{org}/{collection}/{canonical}"))


def resource_defaults(collection: str, document: dict[str, Any]) -> dict[str, Any]:
    """
    Give C{document}, a new device, thing, experience, location or feed,
    the fields the hosted EXP fills in and the official clients rely on
    (PROTOCOL.md A7): C{name} (C{""} when none) and a location's C{zones}
    (C{[]}).  Returns C{document}, changed in place.
    """
    document.setdefault("name", "")
    if collection == "locations":
        document.setdefault("zones", [])
    return document


def load_seed(path: str) -> list[Organization]:
    """
    Read and check a seed file.

    @raise SeedError: naming the file and the first problem found.
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise SeedError(f"cannot read seed file {path}: {e.strerror}") from None
    except ValueError as e:
        raise SeedError(f"seed file {path} is not valid JSON: {e}") from None
    try:
        return _parse(raw, os.path.dirname(os.path.abspath(path)))
    except SeedError as e:
        raise SeedError(f"seed file {path}: {e}") from None


def _parse(raw: Any, base: str) -> list[Organization]:
    if not isinstance(raw, dict) or not isinstance(raw.get("organizations"), list):
        raise SeedError("the top level must be an object with an 'organizations' list")
    organizations: list[Organization] = []
    seen: set[str] = set()
    for i, org in enumerate(raw["organizations"]):
        where = f"organizations[{i}]"
        if not isinstance(org, dict):
            raise SeedError(f"{where} must be an object")
        _require_strings(org, ("name",), where)
        name = org["name"]
        if name in seen:
            raise SeedError(f"organization {name!r} is declared twice")
        seen.add(name)
        where = f"organization {name!r}"
        unknown = set(org) - _ORG_KEYS
        if unknown:
            raise SeedError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        users = _objects(org, "users", where)
        for user in users:
            _require_strings(user, ("username", "password"), f"{where}: a user")
        devices = _objects(org, "devices", where)
        for device in devices:
            _require_strings(device, ("uuid", "secret"), f"{where}: a device")
            resource_defaults("devices", device)
        apps = _objects(org, "consumerApps", where)
        for app in apps:
            _require_strings(app, ("uuid", "apiKey"), f"{where}: a consumer app")
        resources = {key: _objects(org, key, where) for key in RESOURCES}
        layouts: dict[str, str] = {}
        for collection, documents in resources.items():
            for document in documents:
                if "uuid" in document and (
                    not isinstance(document["uuid"], str) or not document["uuid"]
                ):
                    raise SeedError(f"{where}: a uuid in {collection} must be a string")
                layout = document.pop("layout", None) if collection == "locations" else None
                document.setdefault("uuid", _stable_uuid(name, collection, document))
                resource_defaults(collection, document)
                if layout is not None:
                    layouts[document["uuid"]] = _existing(
                        base, layout, os.path.isfile,
                        f"{where}: a location's layout is an image file path",
                        f"{where}: layout image {{}} does not exist")
        data = _objects(org, "data", where)
        for item in data:
            item.setdefault("group", "default")
            _require_strings(item, ("group", "key"), f"{where}: a data item")
            if "value" not in item:
                raise SeedError(f"{where}: data item {item['group']}/{item['key']} has no value")
        content = org.get("content")
        if content is not None:
            content = _existing(base, content, os.path.isdir, f"{where}: content is a folder path",
                                f"{where}: content folder {{}} does not exist")
        organizations.append(Organization(
            name=name, users=users, devices=devices, consumer_apps=apps,
            resources=resources, data=data, content=content, layouts=layouts,
        ))
    return organizations


def _existing(base: str, path: Any, exists: Callable[[str], bool], malformed: str,
              missing: str) -> str:
    """
    C{path}, relative to the seed file's folder C{base}, if it C{exists}.

    @raise SeedError: with C{malformed} if C{path} is not a string, with
        C{missing} (C{{}} the path) if it does not exist.
    """
    if not isinstance(path, str):
        raise SeedError(malformed)
    full = os.path.join(base, path)
    if not exists(full):
        raise SeedError(missing.format(full))
    return full


def data_uuid(group: str, key: str) -> str:
    """The storage key of a data item."""
    return dumps([group, key])


def user_uuid(username: str) -> str:
    """The storage key of a user: usernames are case-insensitive."""
    return username.lower()


async def _seeded(storage: IStorage, organization: str, what: str) -> bool:
    """
    Whether the seed item C{what} was stored in this database once: an item
    seeded and later deleted through the API stays deleted.
    """
    return await storage.get(organization, "seeded", what) is not None


async def _mark(storage: IStorage, organization: str, what: str) -> None:
    """
    Remember that C{what} is stored: only once it is, so that a process
    seeding the same database meanwhile stores it too (one insert wins)
    rather than serving without it.
    """
    await storage.insert(organization, "seeded", {"uuid": what}, replace_uuid=False)


async def apply_seed(storage: IStorage, organizations: list[Organization],
                     hash_password: Callable[[str], Awaitable[str]]) -> None:
    """
    Store what the seed declares and this database has never been seeded
    with; nothing already there is changed.

    @param hash_password: hashes a user's password.
    """
    for org in organizations:
        name = org.name
        for user in org.users:
            key = user_uuid(user["username"])
            what = f"users:{key}"
            if await storage.get(name, "users", key) is None and not await _seeded(
                    storage, name, what):
                hashed = await hash_password(user["password"])
                document = {k: v for k, v in user.items() if k != "password"}
                document.update(uuid=key, id=str(uuidlib.uuid4()), passwordHash=hashed)
                await storage.insert(name, "users", document, replace_uuid=False)
                await _mark(storage, name, what)
        documents = [("devices", d) for d in org.devices]
        documents += [("consumerApps", a) for a in org.consumer_apps]
        documents += [(c, d) for c, ds in org.resources.items() for d in ds]
        documents += [
            ("data", {"uuid": data_uuid(item["group"], item["key"]), "group": item["group"],
                      "key": item["key"], "value": item["value"]})
            for item in org.data
        ]
        for collection, document in documents:
            what = f"{collection}:{document['uuid']}"
            if not await _seeded(storage, name, what):
                await storage.insert(name, collection, document, replace_uuid=False)
                await _mark(storage, name, what)
        for location, path in org.layouts.items():
            what = f"layout:{location}"
            if not await _seeded(storage, name, what):
                with open(path, "rb") as f:
                    image = f.read()
                await storage.put_blob(name, f"layout:{location}", _image_type(path), image)
                await _mark(storage, name, what)


def _image_type(path: str) -> str:
    import mimetypes

    return mimetypes.guess_type(path)[0] or "application/octet-stream"
