"""
Queries over JSON documents (PROTOCOL.md A6): dotted field filters that
match through lists, C{limit}, C{skip} and C{sort}.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

#: Query parameters that are not document fields.
RESERVED = frozenset({"limit", "skip", "sort"})

#: A numeric parameter with one of these values is not given: unset
#: JavaScript values reach query strings as text (C{?timeout=undefined},
#: PROTOCOL.md A7).
UNSET = frozenset({"", "undefined", "null"})


class InvalidQuery(ValueError):
    """A query parameter with a value it cannot have."""


@attrs.frozen
class Query:
    """
    A parsed find request.

    @ivar filters: dotted field path → the accepted string values.
    @ivar limit: the most documents to give (all if C{None}).
    @ivar skip: how many matching documents to pass over first.
    @ivar sort: the dotted field path to sort by, C{-} before it for
        descending order.
    """

    filters: Mapping[str, Sequence[str]] = attrs.field(factory=dict)
    limit: int | None = None
    skip: int = 0
    sort: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]],
                    ignore: Iterable[str] = ()) -> Query:
        """
        Build a query from decoded URL parameters.

        @raise InvalidQuery: if C{limit}, C{skip} or C{sort} are malformed.
        """
        ignored = set(ignore)
        filters = {
            k: list(v) for k, v in params.items()
            if k not in RESERVED and k not in ignored and k
        }
        return cls(
            filters=filters,
            limit=_count(params, "limit"),
            skip=_count(params, "skip") or 0,
            sort=_sort(params),
        )

    def run(self, documents: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """Apply the query: the page of matching documents and their total."""
        found = [d for d in documents if self.matches(d)]
        if self.sort:
            found = sort_documents(found, self.sort)
        total = len(found)
        end = None if self.limit is None else self.skip + self.limit
        return found[self.skip:end], total

    def matches(self, document: Any) -> bool:
        """Whether C{document} passes every filter."""
        return all(
            any(_match(document, path.split("."), want) for want in wanted)
            for path, wanted in self.filters.items()
        )


def _count(params: Mapping[str, Sequence[str]], name: str) -> int | None:
    values = params.get(name)
    if not values or values[-1].strip() in UNSET:
        return None
    try:
        value = int(values[-1])
    except ValueError:
        raise InvalidQuery(f"{name} must be a whole number, not {values[-1]!r}") from None
    if value < 0:
        raise InvalidQuery(f"{name} must not be negative")
    return value


def _sort(params: Mapping[str, Sequence[str]]) -> str | None:
    values = params.get("sort")
    if not values:
        return None
    field = values[-1]
    if not field.lstrip("-"):
        raise InvalidQuery("sort names a field, optionally prefixed by '-'")
    return field


def _match(node: Any, path: list[str], want: str) -> bool:
    """
    Whether C{node} has C{want} at C{path}, through lists at any level.
    Iterative, so that no nesting of a document or length of a path can
    exhaust the stack.
    """
    stack = [(node, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, list):
            stack.extend((item, depth) for item in node)
        elif depth == len(path):
            if _equal(node, want):
                return True
        elif isinstance(node, dict) and path[depth] in node:
            stack.append((node[path[depth]], depth + 1))
    return False


def _equal(value: Any, want: str) -> bool:
    """Whether a document value equals a query string."""
    if isinstance(value, str):
        return value == want
    if isinstance(value, bool):
        return want == ("true" if value else "false")
    if value is None:
        return want == "null"
    if isinstance(value, (int, float)):
        try:
            return float(want) == value
        except ValueError:
            return False
    return False


_MISSING = object()


def _lookup(document: Any, path: list[str]) -> Any:
    node = document
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    # null, lists and objects: after the scalars, in insertion order.
    return (3, 0)


def sort_documents(documents: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """
    Sort by a dotted field, C{-} for descending: booleans, numbers, then
    strings (by code point), then null, lists and objects; documents without
    the field go last; ties keep insertion order.
    """
    descending = field.startswith("-")
    path = field.lstrip("-").split(".")
    present = [(d, _lookup(d, path)) for d in documents]
    have = [(d, v) for d, v in present if v is not _MISSING]
    have.sort(key=lambda pair: _sort_key(pair[1]), reverse=descending)
    return [d for d, _ in have] + [d for d, v in present if v is _MISSING]


# -- the same queries as SQL/JSON paths, for engines that run them --------


def _jsonpath_string(text: str) -> str:
    """A SQL/JSON path string literal (JSON escapes are valid there)."""
    return json.dumps(text, ensure_ascii=False)


def _jsonpath_keys(path: str) -> str:
    return "".join("." + _jsonpath_string(key) for key in path.split("."))


def filter_jsonpath(path: str, wanted: Sequence[str]) -> str | None:
    """
    A lax SQL/JSON path that exists in a document when L{Query.matches}
    accepts it for this filter: lax mode matches through lists as L{_match}
    does, except a list directly inside a list on the path (lax mode
    unwraps one level per step).  C{None} when no stored document can
    match (PostgreSQL cannot hold text with U+0000).
    """
    alternatives: list[str] = []
    for want in wanted:
        if "\x00" in want:
            continue
        alternatives.append(f"@ == {_jsonpath_string(want)}")
        if want in ("true", "false", "null"):
            alternatives.append(f"@ == {want}")
        try:
            number = float(want)
        except ValueError:
            continue
        if math.isfinite(number):
            alternatives.append(f"@ == {number!r}")
    if not alternatives:
        return None
    return f"lax ${_jsonpath_keys(path)} ? ({' || '.join(alternatives)})"


def sort_jsonpath(field: str) -> tuple[str, bool]:
    """
    The strict SQL/JSON path of a sort field (missing when any step is not
    an object, as for L{sort_documents}) and whether it is descending.
    """
    return f"strict ${_jsonpath_keys(field.lstrip('-'))}", field.startswith("-")
