"""
L{IStorage} in PostgreSQL, for several server processes sharing one
database: documents are JSONB, and the queries of PROTOCOL.md A6 run in the
database as SQL/JSON paths.  The driver is psycopg 3 (its asyncio API, on
the loop thread of L{exp.server._asyncio}) with its connection pool.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from exp.server._asyncio import loop_thread
from exp.server._query import Query, filter_jsonpath, sort_jsonpath
from exp.server._storage import Document, InvalidDocument, IStorage, Unavailable, dumps

#: What a transaction gives.
T = TypeVar("T")

#: Serializes schema creation between processes starting together.
_SCHEMA_LOCK = 0x657870  # "exp"

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS exp_settings (name text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS exp_documents (
        seq bigserial PRIMARY KEY,
        organization text NOT NULL,
        collection text NOT NULL,
        uuid text NOT NULL,
        body jsonb NOT NULL,
        UNIQUE (organization, collection, uuid))""",
    "CREATE INDEX IF NOT EXISTS exp_documents_by_uuid ON exp_documents (collection, uuid)",
    "CREATE INDEX IF NOT EXISTS exp_documents_body ON exp_documents"
    " USING gin (body jsonb_path_ops)",
    """CREATE TABLE IF NOT EXISTS exp_blobs (
        organization text NOT NULL,
        name text NOT NULL,
        content_type text NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (organization, name))""",
    """CREATE TABLE IF NOT EXISTS exp_logs (
        seq bigserial PRIMARY KEY,
        organization text NOT NULL,
        identity jsonb NOT NULL,
        received double precision NOT NULL,
        entry jsonb NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS exp_logs_by_organization ON exp_logs (organization)",
]

#: The order of L{exp.server._query.sort_documents}: documents without the
#: field last; booleans, numbers, strings (by code point: UTF-8 bytes under
#: the C collation), then anything else; ties in insertion order.
_ORDER = """
    v IS NULL,
    CASE jsonb_typeof(v) WHEN 'boolean' THEN 0 WHEN 'number' THEN 1
                         WHEN 'string' THEN 2 ELSE 3 END {d},
    CASE WHEN jsonb_typeof(v) = 'boolean' THEN v::boolean END {d},
    CASE WHEN jsonb_typeof(v) = 'number' THEN v::numeric END {d},
    CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{{}}' END COLLATE "C" {d},
    seq
"""


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value, dumps=dumps)


@implementer(IStorage)
class PostgreSQLStorage:
    """
    L{IStorage} in the PostgreSQL database at C{url}
    (C{postgresql://user:password@host:port/database}).  Each call is one
    transaction, committed before its Deferred fires.
    """

    def __init__(self, url: str, reactor: Any = None, pool_size: int = 10,
                 timeout: float = 10.0) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        #: The database's URL.
        self.url = url
        self._reactor = reactor
        self._pool_size = pool_size
        self._timeout = timeout
        self._pool: Any = None

    async def _transaction(self, f: Callable[[Any], Awaitable[T]]) -> T:
        import psycopg
        from psycopg_pool import PoolTimeout

        assert self._pool is not None, "storage is not open"
        try:
            async with self._pool.connection() as db:
                return await f(db)
        except (PoolTimeout, psycopg.OperationalError) as e:
            raise Unavailable("PostgreSQL is unavailable") from e
        except psycopg.DataError as e:
            # Text with U+0000, which PostgreSQL's text and JSONB cannot hold.
            raise InvalidDocument(f"PostgreSQL cannot store this: {e}") from e

    def _run(self, f: Callable[[Any], Awaitable[T]]) -> Deferred[T]:
        # Not cancellable: a write the client stopped waiting for completes.
        return loop_thread(self._reactor).run(self._transaction(f), cancellable=False)

    def open(self) -> Deferred[None]:
        try:
            from psycopg_pool import AsyncConnectionPool
        except ImportError:
            return fail(Unavailable(
                "PostgreSQL storage needs psycopg: pip install 'txexp[postgresql]'"))

        async def connect() -> None:
            pool = AsyncConnectionPool(self.url, min_size=1, max_size=self._pool_size,
                                       timeout=self._timeout, open=False,
                                       name="exp-postgresql")
            try:
                await pool.open(wait=True, timeout=self._timeout)
            except Exception as e:
                await pool.close()
                raise Unavailable("PostgreSQL is unavailable") from e
            self._pool = pool

            async def create(db: Any) -> None:
                await db.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                for statement in _SCHEMA:
                    await db.execute(statement)

            await self._transaction(create)

        return loop_thread(self._reactor).run(connect())

    def close(self) -> Deferred[None]:
        async def disconnect() -> None:
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()

        return loop_thread(self._reactor).run(disconnect())

    def setting(self, name: str, default: Callable[[], str]) -> Deferred[str]:
        async def run(db: Any) -> str:
            await db.execute(
                "INSERT INTO exp_settings (name, value) VALUES (%s, %s)"
                " ON CONFLICT (name) DO NOTHING", [name, default()])
            row = await (await db.execute(
                "SELECT value FROM exp_settings WHERE name = %s", [name])).fetchone()
            return str(row[0])

        return self._run(run)

    def insert(self, organization: str, collection: str, document: Document,
               replace_uuid: bool = True) -> Deferred[Document | None]:
        async def add(db: Any, doc: Document) -> bool:
            cursor = await db.execute(
                "INSERT INTO exp_documents (organization, collection, uuid, body)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING seq",
                [organization, collection, doc["uuid"], _jsonb(doc)])
            return await cursor.fetchone() is not None

        async def run(db: Any) -> Document | None:
            doc = dict(document)
            given = doc.get("uuid")
            if isinstance(given, str) and given and await add(db, doc):
                return doc
            if not replace_uuid:
                return None
            doc["uuid"] = str(uuidlib.uuid4())
            await add(db, doc)
            return doc

        return self._run(run)

    def get(self, organization: str, collection: str, uuid: str) -> Deferred[Document | None]:
        key = [organization, collection, uuid]
        return self._run(lambda db: _body(db, f"SELECT body FROM exp_documents{_ONE}", key))

    def lookup(self, collection: str, uuid: str) -> Deferred[list[tuple[str, Document]]]:
        async def run(db: Any) -> list[tuple[str, Document]]:
            cursor = await db.execute(
                "SELECT organization, body FROM exp_documents"
                " WHERE collection = %s AND uuid = %s ORDER BY seq", [collection, uuid])
            return [(org, dict(body)) for org, body in await cursor.fetchall()]

        return self._run(run)

    def find(self, organization: str, collection: str, query: Query
             ) -> Deferred[tuple[list[Document], int]]:
        where = "organization = %s AND collection = %s"
        params: list[Any] = [organization, collection]
        for path, wanted in query.filters.items():
            jsonpath = filter_jsonpath(path, wanted)
            if jsonpath is None:
                return succeed(([], 0))
            where += " AND body @? %s::jsonpath"
            params.append(jsonpath)
        if query.sort:
            sort_path, descending = sort_jsonpath(query.sort)
            source = ("exp_documents, LATERAL (SELECT jsonb_path_query_first("
                      "body, %s::jsonpath, '{}', true) AS v) AS sort_value")
            order = _ORDER.format(d="DESC" if descending else "ASC")
            page_params = [sort_path, *params]
        else:
            source, order, page_params = "exp_documents", "seq", list(params)

        async def run(db: Any) -> tuple[list[Document], int]:
            # One snapshot for the total and the page.
            await db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor = await db.execute(
                f"SELECT count(*) FROM exp_documents WHERE {where}", params)
            (total,) = await cursor.fetchone()
            if query.limit == 0:
                return [], int(total)
            cursor = await db.execute(
                f"SELECT body FROM {source} WHERE {where} ORDER BY {order}"
                " LIMIT %s OFFSET %s", [*page_params, _bigint(query.limit), _bigint(query.skip)])
            return [dict(body) for (body,) in await cursor.fetchall()], int(total)

        return self._run(run)

    def update(self, organization: str, collection: str, uuid: str,
               fields: Document) -> Deferred[Document | None]:
        async def run(db: Any) -> Document | None:
            cursor = await db.execute(
                "UPDATE exp_documents SET body = body || %s"
                " WHERE organization = %s AND collection = %s AND uuid = %s RETURNING body",
                [_jsonb({**fields, "uuid": uuid}), organization, collection, uuid])
            row = await cursor.fetchone()
            return None if row is None else dict(row[0])

        return self._run(run)

    def put(self, organization: str, collection: str, uuid: str,
            document: Document) -> Deferred[tuple[Document, bool]]:
        async def run(db: Any) -> tuple[Document, bool]:
            # xmax is 0 on a row version that an INSERT made.
            cursor = await db.execute(
                "INSERT INTO exp_documents (organization, collection, uuid, body)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (organization, collection, uuid)"
                " DO UPDATE SET body = EXCLUDED.body RETURNING xmax = 0",
                [organization, collection, uuid, _jsonb(document)])
            (created,) = await cursor.fetchone()
            return document, bool(created)

        return self._run(run)

    def delete(self, organization: str, collection: str, uuid: str) -> Deferred[Document | None]:
        sql = f"DELETE FROM exp_documents{_ONE} RETURNING body"
        return self._run(lambda db: _body(db, sql, [organization, collection, uuid]))

    def put_blob(self, organization: str, name: str, content_type: str,
                 data: bytes) -> Deferred[None]:
        async def run(db: Any) -> None:
            await db.execute(
                "INSERT INTO exp_blobs (organization, name, content_type, data)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (organization, name)"
                " DO UPDATE SET content_type = EXCLUDED.content_type, data = EXCLUDED.data",
                [organization, name, content_type, data])

        return self._run(run)

    def get_blob(self, organization: str, name: str) -> Deferred[tuple[str, bytes] | None]:
        async def run(db: Any) -> tuple[str, bytes] | None:
            cursor = await db.execute(
                "SELECT content_type, data FROM exp_blobs WHERE organization = %s AND name = %s",
                [organization, name])
            row = await cursor.fetchone()
            return None if row is None else (row[0], bytes(row[1]))

        return self._run(run)

    def add_logs(self, organization: str, identity: Document,
                 entries: list[Any]) -> Deferred[None]:
        now = self._reactor.seconds()

        async def run(db: Any) -> None:
            async with db.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO exp_logs (organization, identity, received, entry)"
                    " VALUES (%s, %s, %s, %s)",
                    [(organization, _jsonb(identity), now, _jsonb(entry)) for entry in entries])

        return self._run(run)

    def count_logs(self, organization: str) -> Deferred[int]:
        async def run(db: Any) -> int:
            cursor = await db.execute(
                "SELECT count(*) FROM exp_logs WHERE organization = %s", [organization])
            (count,) = await cursor.fetchone()
            return int(count)

        return self._run(run)


#: The condition of one document's row.
_ONE = " WHERE organization = %s AND collection = %s AND uuid = %s"


async def _body(db: Any, sql: str, parameters: list[Any]) -> Document | None:
    """The document in the C{body} of the row that C{sql} gives, if it gives one."""
    cursor = await db.execute(sql, parameters)
    row = await cursor.fetchone()
    return None if row is None else dict(row[0])


def _bigint(count: int | None) -> int | None:
    """A count as PostgreSQL takes it: beyond any table, not beyond a bigint."""
    return None if count is None else min(count, 2**63 - 1)
