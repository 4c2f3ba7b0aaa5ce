"""
The local EXP server: the REST API and real-time network of PROTOCOL.md,
on an embedded SQLite database for development, tests and small sites, or
as several processes on PostgreSQL (L{PostgreSQLStorage}) and Redis
(L{RedisHub}).

Run it with C{twistd -n exp-server}; embed it with L{ExpServer}; test
against it with L{exp.server.testing}.
"""

from exp.server._auth import Identity, channel_allowed
from exp.server._config import ServerConfig
from exp.server._hub import IHub, ISubscriber, LocalHub
from exp.server._postgresql import PostgreSQLStorage
from exp.server._redis import RedisHub
from exp.server._seed import SeedError, demo_seed_path, load_seed
from exp.server._server import ExpServer
from exp.server._storage import IStorage, SQLiteStorage, Unavailable

__all__ = [
    "ExpServer",
    "IHub",
    "IStorage",
    "ISubscriber",
    "Identity",
    "LocalHub",
    "PostgreSQLStorage",
    "RedisHub",
    "SQLiteStorage",
    "SeedError",
    "ServerConfig",
    "Unavailable",
    "channel_allowed",
    "demo_seed_path",
    "load_seed",
]
