"""
Endpoints whose connections' protocols are wrapped: the transport talks to
the wrapper, which decides what reaches the protocol, while the caller of
C{connect} gets the protocol its factory made, as it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer


@implementer(IProtocolFactory)
class _WrappingFactory:
    def __init__(self, wrapped: Any, wrap: Callable[[Any], Any]) -> None:
        self._wrapped = wrapped
        self._wrap = wrap

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self._wrapped.buildProtocol(addr)
        return None if protocol is None else self._wrap(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


@implementer(IStreamClientEndpoint)
class WrappingEndpoint:
    """
    C{endpoint}, with each connection's protocol wrapped by C{wrap(protocol)};
    the wrapper keeps the protocol as C{wrapped}.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, wrap: Callable[[Any], Any]) -> None:
        self._endpoint = endpoint
        self._wrap = wrap

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = self._endpoint.connect(_WrappingFactory(factory, self._wrap))
        return d.addCallback(lambda wrapper: wrapper.wrapped)
