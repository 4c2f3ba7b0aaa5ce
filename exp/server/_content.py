"""
The content tree of an organization: a folder on disk (PROTOCOL.md Part B).

Folders are C{scala:content:folder} items, files C{scala:content:file}
items, C{*.url} files C{scala:content:url} items, and sibling files named
C{<stem>.<variant>.<ext>} are the variants of C{<stem>.<ext>}.  A folder
that holds a C{manifest.json} is an app, C{scala:content:app}: one item,
delivered at C{<path>/index.html} with its own files under C{<path>/}.
The root folder is the item with uuid C{root}.  Item uuids are derived from their
paths, so they stay the same across scans and restarts.
"""

from __future__ import annotations

import mimetypes
import os
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

#: The subtypes of content items: a folder, a file, a C{*.url} file.
FOLDER, FILE, URL = "scala:content:folder", "scala:content:file", "scala:content:url"
#: The subtype of a folder that holds an L{APP_MANIFEST}.
APP = "scala:content:app"
#: The file that makes a folder an app.
APP_MANIFEST = "manifest.json"
#: The uuid of the root folder.
ROOT_UUID = "root"
_NAMESPACE = uuidlib.UUID("6f1c3a52-3c0e-4e4e-9f2b-8d7f1e1e0c11")


def item_uuid(path: str) -> str:
    """The uuid of the item at C{path} (C{/} for the root)."""
    return ROOT_UUID if path == "/" else str(uuidlib.uuid5(_NAMESPACE, path))


def _read_url(filename: str) -> str:
    """The URL a C{.url} file holds: its first line, or an C{URL=} line."""
    with open(filename, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f.read(65536).splitlines() if line.strip()]
    for line in lines:
        if line.upper().startswith("URL="):
            return line[4:]
    return lines[0] if lines and not lines[0].startswith("[") else ""


def _split_variant(name: str, siblings: set[str]) -> tuple[str, str] | None:
    """C{(base file, variant)} if C{name} is a variant of a sibling."""
    stem, ext = os.path.splitext(name)
    base, dot, variant = stem.rpartition(".")
    if dot and base and variant and (base + ext) in siblings:
        return base + ext, variant
    return None


def scan(root: str) -> list[dict[str, Any]]:
    """Every item of the tree under C{root}, the root folder first."""
    items: list[dict[str, Any]] = [
        {"uuid": ROOT_UUID, "name": "root", "path": "/", "subtype": FOLDER, "variants": []}
    ]
    if not os.path.isdir(root):
        return items
    real_root = os.path.realpath(root)

    def servable(full: str) -> bool:
        # What resolve() would serve: a file, not a symlink out of the folder.
        return os.path.isfile(full) and os.path.realpath(full).startswith(real_root + os.sep)

    def walk(directory: str, path: str) -> None:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return
        visible = {n for n in names if not n.startswith(".")}
        variants: dict[str, list[dict[str, str]]] = {}
        for name in sorted(visible):
            full = os.path.join(directory, name)
            if servable(full):
                split = _split_variant(name, visible)
                if split is not None:
                    variants.setdefault(split[0], []).append({"name": split[1]})
        for name in sorted(visible):
            full = os.path.join(directory, name)
            child = f"{path.rstrip('/')}/{name}"
            common = {"uuid": item_uuid(child), "path": child, "parent": item_uuid(path)}
            if os.path.isdir(full) and not os.path.islink(full):
                if servable(os.path.join(full, APP_MANIFEST)):
                    items.append(dict(common, name=name, subtype=APP, variants=[]))
                    continue
                items.append(dict(common, name=name, subtype=FOLDER, variants=[]))
                walk(full, child)
            elif servable(full):
                if _split_variant(name, visible) is not None:
                    continue
                if name.endswith(".url"):
                    items.append(dict(common, name=name[:-4], subtype=URL, variants=[],
                                      url=_read_url(full)))
                    continue
                mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
                items.append(dict(common, name=name, subtype=FILE,
                                  variants=variants.get(name, []), mimeType=mime,
                                  size=os.path.getsize(full)))

    walk(root, "/")
    return items


def resolve(root: str, path: str, variant: str | None = None) -> str | None:
    """
    The file on disk that serves C{path} (and C{variant}), or C{None} if
    there is none inside C{root}.
    """
    if "\x00" in path or (variant is not None and "\x00" in variant):
        return None
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    if variant is not None:
        if not variant or "/" in variant or variant.startswith("."):
            return None
        stem, ext = os.path.splitext(parts[-1])
        parts[-1] = f"{stem}.{variant}{ext}"
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, *parts))
    if not candidate.startswith(real_root + os.sep) or not os.path.isfile(candidate):
        return None
    return candidate


def resolve_in_app(root: str, path: str, variant: str | None = None
                   ) -> tuple[str | None, bool]:
    """
    L{resolve}, and whether the file is one of an app's (a folder above it,
    inside C{root}, holds a L{APP_MANIFEST}).
    """
    filename = resolve(root, path, variant)
    if filename is None:
        return None, False
    real_root = os.path.realpath(root)
    folder = os.path.dirname(filename)
    while folder.startswith(real_root + os.sep):
        if os.path.isfile(os.path.join(folder, APP_MANIFEST)):
            return filename, True
        folder = os.path.dirname(folder)
    return filename, False


class ContentFolders:
    """
    The content folder of each organization: the one its seed names, else
    the server's (C{--content}), else none.
    """

    def __init__(self, seeded: Mapping[str, str], default: str | None = None) -> None:
        """
        @param seeded: the folder of each organization whose seed names one.
        @param default: the folder of the others.
        """
        self._seeded = dict(seeded)
        self._default = default

    def root(self, organization: str) -> str | None:
        """The content folder of C{organization}, if it has one."""
        return self._seeded.get(organization, self._default)
