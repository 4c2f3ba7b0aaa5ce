"""
Where the server keeps what it acknowledged.

L{IStorage} is what the REST and network code use; L{SQLiteStorage} is the
embedded engine.  Every collection is a set of JSON documents keyed by
organization and uuid: the common resources, C{consumerApps}, C{users}
(keyed by username) and C{data} (keyed by group and key).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid as uuidlib
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from exp.protocol import compact_json
from exp.server._query import Query

#: What a transaction gives.
T = TypeVar("T")
#: A JSON object as stored: a resource, a data item, a user ...
Document = dict[str, Any]


class Unavailable(Exception):
    """The storage cannot be reached now; the call may succeed later."""


class InvalidDocument(ValueError):
    """The storage cannot hold this document or key (PostgreSQL: text with U+0000)."""


class IStorage(Interface):
    """
    Documents by organization, collection and uuid, plus server settings,
    binary blobs and device logs.  Every method returns a Deferred.
    """

    def open() -> Deferred[None]:
        """Make the storage ready (create what is missing)."""

    def close() -> Deferred[None]:
        """Release the storage; no call may follow."""

    def setting(name: str, default: Callable[[], str]) -> Deferred[str]:
        """The setting C{name}, stored as C{default()} the first time it is asked for."""

    def insert(organization: str, collection: str, document: Document,
               replace_uuid: bool = True) -> Deferred[Document | None]:
        """
        Store a new document.  Its C{uuid} is kept when free; a missing or
        taken uuid is replaced by a new one when C{replace_uuid}, otherwise
        nothing is stored and the result is C{None}.
        """

    def get(organization: str, collection: str, uuid: str) -> Deferred[Document | None]:
        """One document, or C{None}."""

    def lookup(collection: str, uuid: str) -> Deferred[list[tuple[str, Document]]]:
        """Every C{(organization, document)} of C{collection} with this uuid."""

    def find(organization: str, collection: str, query: Query
             ) -> Deferred[tuple[list[Document], int]]:
        """The page of documents matching C{query}, and the total of matches."""

    def update(organization: str, collection: str, uuid: str,
               fields: Document) -> Deferred[Document | None]:
        """Merge C{fields} into a document's top level; C{None} if there is none."""

    def put(organization: str, collection: str, uuid: str,
            document: Document) -> Deferred[tuple[Document, bool]]:
        """Create or overwrite a document; whether it was created."""

    def delete(organization: str, collection: str, uuid: str) -> Deferred[Document | None]:
        """Remove a document and return it, or C{None} if there was none."""

    def put_blob(organization: str, name: str, content_type: str,
                 data: bytes) -> Deferred[None]:
        """Store binary content (a location's layout image)."""

    def get_blob(organization: str, name: str) -> Deferred[tuple[str, bytes] | None]:
        """The content type and bytes of a blob, or C{None}."""

    def add_logs(organization: str, identity: Document,
                 entries: list[Any]) -> Deferred[None]:
        """Keep log entries shipped by an identity."""

    def count_logs(organization: str) -> Deferred[int]:
        """How many log entries an organization has shipped."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    organization TEXT NOT NULL,
    collection TEXT NOT NULL,
    uuid TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (organization, collection, uuid)
);
CREATE INDEX IF NOT EXISTS documents_by_uuid ON documents (collection, uuid);
CREATE TABLE IF NOT EXISTS blobs (
    organization TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (organization, name)
);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    organization TEXT NOT NULL,
    identity TEXT NOT NULL,
    received REAL NOT NULL,
    entry TEXT NOT NULL
);
"""


def dumps(document: Any) -> str:
    """Compact JSON text, as stored."""
    return compact_json(document)


@implementer(IStorage)
class SQLiteStorage:
    """
    L{IStorage} in one SQLite file, in WAL mode with synchronous commits, so
    that what a call acknowledged survives a crash of the process.  Every
    query runs on one database thread, never on the reactor's.
    """

    def __init__(self, path: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        #: The database file.
        self.path = path
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"exp-sqlite:{path}")
        self._db: sqlite3.Connection | None = None
        self._shutdown: Any = None

    def _run(self, f: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        def transaction() -> T:
            db = self._db
            assert db is not None, "storage is not open"
            with db:
                return f(db)

        return deferToThreadPool(self._reactor, self._pool, transaction)

    def open(self) -> Deferred[None]:
        self._pool.start()
        # Like the reactor's own pool: a program that never closes the
        # storage must still be able to exit.
        self._shutdown = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._pool.stop)

        def connect() -> None:
            if self.path != ":memory:" and not os.path.exists(self.path):
                # The file holds the server's signing key: owner-only.
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.isolation_level = "DEFERRED"
            self._db = db

        return deferToThreadPool(self._reactor, self._pool, connect)

    def close(self) -> Deferred[None]:
        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        return ensureDeferred(self._close(disconnect))

    async def _close(self, disconnect: Callable[[], None]) -> None:
        try:
            await deferToThreadPool(self._reactor, self._pool, disconnect)
        finally:
            self._reactor.removeSystemEventTrigger(self._shutdown)
            self._pool.stop()

    def setting(self, name: str, default: Callable[[], str]) -> Deferred[str]:
        def run(db: sqlite3.Connection) -> str:
            db.execute(
                "INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", (name, default())
            )
            row = db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            return str(row[0])

        return self._run(run)

    def insert(self, organization: str, collection: str, document: Document,
               replace_uuid: bool = True) -> Deferred[Document | None]:
        def run(db: sqlite3.Connection) -> Document | None:
            doc = dict(document)
            given = doc.get("uuid")
            if not isinstance(given, str) or not given or _exists(
                db, organization, collection, given
            ):
                if not replace_uuid:
                    return None
                doc["uuid"] = str(uuidlib.uuid4())
            db.execute(
                "INSERT INTO documents (organization, collection, uuid, body) VALUES (?,?,?,?)",
                (organization, collection, doc["uuid"], dumps(doc)),
            )
            return doc

        return self._run(run)

    def get(self, organization: str, collection: str, uuid: str) -> Deferred[Document | None]:
        return self._run(lambda db: _get(db, organization, collection, uuid))

    def lookup(self, collection: str, uuid: str) -> Deferred[list[tuple[str, Document]]]:
        def run(db: sqlite3.Connection) -> list[tuple[str, Document]]:
            rows = db.execute(
                "SELECT organization, body FROM documents WHERE collection = ? AND uuid = ?",
                (collection, uuid),
            )
            return [(org, dict(json.loads(body))) for org, body in rows]

        return self._run(run)

    def find(self, organization: str, collection: str, query: Query
             ) -> Deferred[tuple[list[Document], int]]:
        def run(db: sqlite3.Connection) -> tuple[list[Document], int]:
            rows = db.execute(
                "SELECT body FROM documents WHERE organization = ? AND collection = ?"
                " ORDER BY seq",
                (organization, collection),
            )
            return query.run(json.loads(body) for (body,) in rows)

        return self._run(run)

    def update(self, organization: str, collection: str, uuid: str,
               fields: Document) -> Deferred[Document | None]:
        def run(db: sqlite3.Connection) -> Document | None:
            doc = _get(db, organization, collection, uuid)
            if doc is None:
                return None
            doc.update(fields)
            doc["uuid"] = uuid
            _write(db, organization, collection, uuid, doc)
            return doc

        return self._run(run)

    def put(self, organization: str, collection: str, uuid: str,
            document: Document) -> Deferred[tuple[Document, bool]]:
        def run(db: sqlite3.Connection) -> tuple[Document, bool]:
            created = not _exists(db, organization, collection, uuid)
            if created:
                db.execute(
                    "INSERT INTO documents (organization, collection, uuid, body)"
                    " VALUES (?,?,?,?)",
                    (organization, collection, uuid, dumps(document)),
                )
            else:
                _write(db, organization, collection, uuid, document)
            return document, created

        return self._run(run)

    def delete(self, organization: str, collection: str, uuid: str) -> Deferred[Document | None]:
        def run(db: sqlite3.Connection) -> Document | None:
            doc = _get(db, organization, collection, uuid)
            if doc is not None:
                db.execute(
                    "DELETE FROM documents WHERE organization = ? AND collection = ?"
                    " AND uuid = ?",
                    (organization, collection, uuid),
                )
            return doc

        return self._run(run)

    def put_blob(self, organization: str, name: str, content_type: str,
                 data: bytes) -> Deferred[None]:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO blobs (organization, name, content_type, data)"
                " VALUES (?,?,?,?)",
                (organization, name, content_type, data),
            )

        return self._run(run)

    def get_blob(self, organization: str, name: str) -> Deferred[tuple[str, bytes] | None]:
        def run(db: sqlite3.Connection) -> tuple[str, bytes] | None:
            row = db.execute(
                "SELECT content_type, data FROM blobs WHERE organization = ? AND name = ?",
                (organization, name),
            ).fetchone()
            return None if row is None else (row[0], bytes(row[1]))

        return self._run(run)

    def add_logs(self, organization: str, identity: Document,
                 entries: list[Any]) -> Deferred[None]:
        now = self._reactor.seconds()

        def run(db: sqlite3.Connection) -> None:
            who = dumps(identity)
            db.executemany(
                "INSERT INTO logs (organization, identity, received, entry) VALUES (?,?,?,?)",
                [(organization, who, now, dumps(entry)) for entry in entries],
            )

        return self._run(run)

    def count_logs(self, organization: str) -> Deferred[int]:
        def run(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT COUNT(*) FROM logs WHERE organization = ?", (organization,)
            ).fetchone()
            return int(row[0])

        return self._run(run)


def _exists(db: sqlite3.Connection, organization: str, collection: str, uuid: str) -> bool:
    return db.execute(
        "SELECT 1 FROM documents WHERE organization = ? AND collection = ? AND uuid = ?",
        (organization, collection, uuid),
    ).fetchone() is not None


def _get(db: sqlite3.Connection, organization: str, collection: str,
         uuid: str) -> Document | None:
    row = db.execute(
        "SELECT body FROM documents WHERE organization = ? AND collection = ? AND uuid = ?",
        (organization, collection, uuid),
    ).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def _write(db: sqlite3.Connection, organization: str, collection: str, uuid: str,
           document: Document) -> None:
    db.execute(
        "UPDATE documents SET body = ? WHERE organization = ? AND collection = ? AND uuid = ?",
        (dumps(document), organization, collection, uuid),
    )
