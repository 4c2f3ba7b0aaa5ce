"""
PostgreSQL runs the finds of PROTOCOL.md A6 in the database: its answers
must be those of L{Query.run}, which SQLite's storage uses.  Both storages
get the same documents and hundreds of generated queries (filters through
lists and nested objects, every JSON type, sorts up and down, pages).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest_twisted

from exp.server import PostgreSQLStorage, SQLiteStorage
from exp.server._query import Query

from ._services import Engines

WORDS = ["alpha", "Beta", "gamma", "delta", "é", "Ω", "z", "", "1", "true", "null", "😀"]
NUMBERS = [0, 1, -1, 2, 1.5, -0.25, 10, 1e20, 3]


def scalar(rng: random.Random) -> Any:
    return rng.choice([
        lambda: rng.choice(WORDS),
        lambda: rng.choice(NUMBERS),
        lambda: rng.choice([True, False]),
        lambda: None,
    ])()


def document(rng: random.Random, i: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"uuid": f"d{i:03}", "i": i}
    if rng.random() < 0.8:
        doc["name"] = rng.choice(WORDS)
    if rng.random() < 0.8:
        doc["n"] = scalar(rng)
    if rng.random() < 0.6:
        doc["tags"] = [scalar(rng) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.6:
        doc["meta"] = {"kind": scalar(rng), "level": rng.choice(NUMBERS),
                       "flags": [rng.choice([True, False]) for _ in range(rng.randint(0, 2))]}
    if rng.random() < 0.5:
        doc["items"] = [{"sku": rng.choice(WORDS), "qty": rng.choice(NUMBERS)}
                        for _ in range(rng.randint(0, 3))]
    return doc


FILTER_PATHS = ["name", "n", "tags", "meta.kind", "meta.level", "meta.flags", "items.sku",
                "items.qty", "missing", "meta.missing", "name.deeper"]
SORT_FIELDS = ["name", "n", "tags", "meta.kind", "meta.level", "meta.flags", "items",
               "missing", "i"]
WANTED = [*WORDS, "0", "1.0", "01", "-1", "1e20", "1.5", "false", "2", "-0.25", "NaN", "x"]


def query(rng: random.Random) -> Query:
    filters = {path: rng.sample(WANTED, rng.randint(1, 2))
               for path in rng.sample(FILTER_PATHS, rng.choice([0, 1, 1, 2]))}
    sort = None
    if rng.random() < 0.7:
        sort = rng.choice(["", "-"]) + rng.choice(SORT_FIELDS)
    limit = rng.choice([None, None, 0, 1, 5, 50])
    return Query(filters=filters, limit=limit, skip=rng.choice([0, 0, 2, 7]), sort=sort)


@pytest_twisted.ensureDeferred
async def test_postgresql_finds_what_query_run_finds(tmp_path: Path, engines: Engines) -> None:
    rng = random.Random(8)
    documents = [document(rng, i) for i in range(150)]
    sqlite = SQLiteStorage(str(tmp_path / "exp.sqlite3"))
    postgresql = PostgreSQLStorage(engines.postgresql().database())
    await sqlite.open()
    await postgresql.open()
    try:
        for doc in documents:
            for storage in (sqlite, postgresql):
                await storage.insert("org", "things", doc)
        await postgresql.insert("other-org", "things", documents[0])
        matched = 0
        for _ in range(400):
            q = query(rng)
            expected, expected_total = await sqlite.find("org", "things", q)
            found, total = await postgresql.find("org", "things", q)
            assert total == expected_total, q
            assert [d["uuid"] for d in found] == [d["uuid"] for d in expected], q
            assert found == expected, q
            matched += bool(expected)
        assert matched > 100  # most queries find something
    finally:
        await sqlite.close()
        await postgresql.close()
