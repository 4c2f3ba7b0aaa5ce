"""
What the route handlers (L{exp.server.routes}) and collection hooks
(L{exp.server._collections}) use of the server: its parts, each public.
L{exp.server.ExpServer} offers them; a test may offer a spy instead.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from exp.server._auth import PasswordHasher
from exp.server._config import ServerConfig
from exp.server._content import ContentFolders
from exp.server._feeds import FeedFetcher
from exp.server._hub import IHub
from exp.server._limits import LoginBudgets
from exp.server._pairing import Pairings
from exp.server._policy import Policy
from exp.server._presence import Presence
from exp.server._revocation import Revocations
from exp.server._storage import IStorage
from exp.server._web import ApiRequest


class Server(Protocol):
    """The parts of the server that answer requests."""

    #: The clock of every expiry and budget.
    reactor: IReactorTime
    #: The server's settings.
    config: ServerConfig
    #: Where documents, settings and logs are kept.
    storage: IStorage
    #: Fans out messages and collects responses, across processes.
    hub: IHub
    #: Who may do what, and who a request acts for.
    policy: Policy
    #: Failed logins and pairing attempts, per peer and per account.
    budgets: LoginBudgets
    #: Hashes and checks passwords on a pool of its own.
    passwords: PasswordHasher
    #: The codes of devices waiting to be paired.
    pairings: Pairings
    #: The credentials that changed, whose earlier tokens are refused.
    revocations: Revocations
    #: Fetches the data of feeds.
    feeds: FeedFetcher
    #: The content folder of each organization.
    content: ContentFolders
    #: Which devices have a network session, across processes.
    presence: Presence

    def notify(self, organization: str, name: str, event: str, document: Any) -> None:
        """Announce a change on the system channel C{name} of C{organization}."""

    def public_url(self, req: ApiRequest) -> str:
        """The URL clients are told to use for REST and the network."""
