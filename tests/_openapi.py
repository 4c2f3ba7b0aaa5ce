"""
The OpenAPI 3.0 description of the REST API as the package ships it
(exp/server/openapi.json), and how to walk it: its operations, and what a
C{$ref} points at.  Shared by the description's tests and the REST fuzz.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

#: The operations a path item of OpenAPI 3.0 may hold.
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load() -> dict[str, Any]:
    """The description as the package ships it."""
    text = resources.files("exp.server").joinpath("openapi.json").read_text("utf-8")
    return dict(json.loads(text))


SPEC = load()


def resolve(document: dict[str, Any], node: Any) -> Any:
    """C{node}, or what its C{$ref} points at (refs to refs followed)."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#/"), ref
        target: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(target, dict) and part in target, f"unresolved $ref {ref}"
            target = target[part]
        node = target
    return node


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any],
                                                           list[dict[str, Any]]]]:
    """Every C{(METHOD, path, operation, parameters)}; parameters merged from the path item."""
    for path, item in document["paths"].items():
        shared = [resolve(document, p) for p in item.get("parameters", [])]
        for method in METHODS:
            if method in item:
                operation = item[method]
                own = [resolve(document, p) for p in operation.get("parameters", [])]
                merged = {(p["name"], p["in"]): p for p in shared + own}
                yield method.upper(), path, operation, list(merged.values())
