"""
The JSON that EXP takes from a peer: standard JSON only, within a depth that
can be encoded again, and Unicode text only.  Shared by the REST API and the
Socket.IO packets of the network.

Pure functions over text; no sockets, no Twisted.
"""

from __future__ import annotations

import json
import re
from typing import Any


def _not_json(constant: str) -> Any:
    """Refuse what Python's json accepts but JSON is not: NaN and Infinity."""
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    """A number too large for a float would come back as Infinity: refuse it."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def compact_json(value: Any) -> str:
    """
    C{value} as compact JSON text (no blanks), its non-ASCII characters as
    they are: C{json.dumps(value, separators=(",", ":"), ensure_ascii=False)},
    with one encoder for every call.
    """
    return _COMPACT(value)

#: The deepest nesting L{strict_json} accepts: whatever it returns can be
#: encoded again, wrapped in a few more levels, from any stack depth.
MAX_DEPTH = 500
#: Where a lone surrogate could come from: an escape, or one already in the text.
_SURROGATE_SOURCE = re.compile(r"\\u[dD][89abcdefABCDEF]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _too_deep(value: Any) -> bool:
    """Whether C{value} nests containers deeper than L{MAX_DEPTH}."""
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [child for item in level
                 for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (list, dict))]
        if not level:
            return False
    return True


def _has_lone_surrogate(value: Any) -> bool:
    """Whether C{value} holds a string (or key) that is not Unicode text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def strict_json(text: str | bytes) -> Any:
    """
    Decode standard JSON only: no C{NaN}/C{Infinity}, no number beyond a
    float's range, no nesting deeper than L{MAX_DEPTH}, no string with a
    lone surrogate (C{"\\ud800"}: not text, and not encodable).

    @raise ValueError: if C{text} is not such JSON.
    """
    if isinstance(text, str):
        if text.startswith("\ufeff"):
            raise ValueError("a byte order mark is not JSON")
        source = text
    else:
        source = text.decode(json.detect_encoding(text), "surrogatepass")
    try:
        value = _DECODER.decode(source)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if source.count("[") + source.count("{") > MAX_DEPTH and _too_deep(value):
        raise ValueError(f"JSON nested more than {MAX_DEPTH} deep")
    if _SURROGATE_SOURCE.search(source) and _has_lone_surrogate(value):
        raise ValueError("a string holds a lone UTF-16 surrogate")
    return value
