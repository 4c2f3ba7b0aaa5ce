"""
HTTP for the SDK: JSON over treq on one persistent connection pool, with a
timeout on every call and EXP's error mapping (PROTOCOL.md A1).
"""

from __future__ import annotations

import json
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

from exp.errors import ApiError, AuthenticationError, NetworkError, UnexpectedError

#: Marks a call without a body.
NO_BODY = object()


def encode_json(payload: Any) -> bytes:
    """
    The JSON body of C{payload}.

    @raise TypeError: if it is not JSON-serializable (before anything is sent).
    """
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"payload is not JSON-serializable: {e}") from None


def error_for(status: int, body: Any) -> Exception:
    """The exception for an error answer of the API."""
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if status == 401:
        return AuthenticationError(message or "the server refused the credentials or token")
    return ApiError(status, code if isinstance(code, str) else None,
                    message if isinstance(message, str) else None, body)


def _timed_out(result: Any, timeout: float) -> Any:
    """A request cancelled by its timeout failed with TimeoutError, however wrapped."""
    if isinstance(result, Failure):
        raise TimeoutError(f"no answer within {timeout:g} s")
    return result


class Http:
    """JSON calls over a persistent pool; L{close} cancels what is in flight."""

    def __init__(self, reactor: Any, timeout: float = 30.0) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 8
        self._client = HTTPClient(Agent(reactor, pool=self._pool))
        self._timeout = timeout
        self._in_flight: set[Deferred[Any]] = set()
        self.closed = False

    async def call(self, method: str, url: str, *, token: str | None = None,
                   params: Any = None, payload: Any = NO_BODY,
                   timeout: float | None = None) -> tuple[int, Any]:
        """
        Make one call; answer the status and the decoded JSON body (C{None}
        when empty).

        @raise TypeError: if C{payload} is not JSON-serializable.
        @raise NetworkError: if the server cannot be reached or does not
            answer in time.
        @raise UnexpectedError: if the answer is not JSON.
        """
        if self.closed:
            raise NetworkError("the SDK has been stopped")
        headers: dict[bytes | str, list[bytes | str]] = {b"Accept": [b"application/json"]}
        data = None
        if payload is not NO_BODY:
            data = encode_json(payload)
            headers[b"Content-Type"] = [b"application/json"]
        if token is not None:
            headers[b"Authorization"] = [b"Bearer " + token.encode("ascii", "replace")]
        limit = self._timeout if timeout is None else timeout
        d = self._request(method, url, headers, params, data, limit)
        self._in_flight.add(d)
        try:
            status, raw = await d
        except TimeoutError:
            raise NetworkError(f"no answer from {url} within {limit:g} s") from None
        except (ConnectError, DNSLookupError, ResponseFailed, ResponseNeverReceived,
                RequestNotSent, RequestTransmissionFailed, CancelledError) as e:
            # the Agent wraps a cancellation in ResponseNeverReceived & co.
            cancelled = isinstance(e, CancelledError) or any(
                f.check(CancelledError) for f in getattr(e, "reasons", ()))
            if cancelled and self.closed:
                raise NetworkError("the SDK has been stopped") from None
            if cancelled:
                # the caller cancelled: that is no network failure to retry
                raise CancelledError() from None
            raise NetworkError(f"cannot reach {url}: {e.__class__.__name__}") from None
        finally:
            self._in_flight.discard(d)
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            if status >= 400:
                return status, None
            raise UnexpectedError(
                f"{method} {url} answered {status} with a body that is not JSON"
            ) from None

    def _request(self, method: str, url: str, headers: dict[bytes | str, list[bytes | str]],
                 params: Any, data: bytes | None, timeout: float) -> Deferred[tuple[int, bytes]]:
        async def request() -> tuple[int, bytes]:
            response = await self._client.request(method, url, headers=headers,
                                                  params=params, data=data)
            return response.code, await treq.content(response)

        d = ensureDeferred(request())
        d.addTimeout(timeout, self._reactor, onTimeoutCancel=_timed_out)
        return d

    async def close(self) -> None:
        """Cancel the calls in flight and close the pool's connections."""
        self.closed = True
        for d in list(self._in_flight):
            d.cancel()
        await self._pool.closeCachedConnections()
