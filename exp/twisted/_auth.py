"""
Authentication (PROTOCOL.md A2): login with the configured credentials,
refresh at about half the remaining lifetime, log in again when a refresh
is refused, retry transient failures with backoff, and never retry a login
the server refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from exp._options import CONSUMER_APP, DEVICE, PAIRING, USER, Options, check_hosts
from exp.errors import (
    ApiError,
    AuthenticationError,
    ExpError,
    NetworkError,
    RuntimeError,
    UnexpectedError,
)
from exp.protocol import consumer_app_token, device_token
from exp.twisted._events import Events
from exp.twisted._http import Http, error_for

_PAYLOAD_KEYS = ("token", "expiration", "identity", "api", "network")


def _transient(error: Exception) -> bool:
    """A failure worth retrying: no answer, or the server's own trouble."""
    return isinstance(error, NetworkError) or (
        isinstance(error, ApiError) and error.status_code >= 500
    )


class Authenticator:
    """Keeps an auth payload current for one SDK instance."""

    _log = Logger()

    def __init__(self, options: Options, http: Http, clock: IReactorTime, events: Events,
                 retry_policy: Callable[[int], float],
                 on_update: Callable[[dict[str, Any]], None]) -> None:
        self.options = options
        self._http = http
        self._clock = clock
        self._events = events
        self._retry_policy = retry_policy
        self._on_update = on_update
        self.payload: dict[str, Any] | None = None
        self.error: Exception | None = None
        #: the failure of the last login attempt, while logging in is retried
        self.last_error: Exception | None = None
        self._waiters: list[Deferred[dict[str, Any]]] = []
        self._timer: IDelayedCall | None = None
        self._task: Deferred[None] | None = None
        self._stopped = False

    # -- what the rest of the SDK uses -------------------------------------

    def start(self) -> None:
        auth = self.options.auth
        if auth is not None and not self._expired(auth):
            self._adopt(auth)
        else:
            self._run(self._login)

    def current(self) -> Deferred[dict[str, Any]]:
        """The auth payload, once there is a valid one."""
        if self.error is not None:
            return fail(self.error)
        if self._stopped:
            return fail(RuntimeError("this EXP instance has been stopped"))
        if self.payload is not None and not self._expired(self.payload):
            return succeed(self.payload)
        if self.payload is not None and self._task is None:
            self._run(self._login)
        d: Deferred[dict[str, Any]] = Deferred(self._forget)
        self._waiters.append(d)
        return d

    def _forget(self, d: Deferred[dict[str, Any]]) -> None:
        """A caller stopped waiting (cancelled)."""
        if d in self._waiters:
            self._waiters.remove(d)

    def rejected(self, token: str) -> Deferred[dict[str, Any]]:
        """The server refused C{token} (401): log in again, once for all callers."""
        if self.payload is not None and self.payload["token"] != token:
            return self.current()
        if self._task is None and self.error is None and not self._stopped:
            self.payload = None
            self._cancel_timer()
            self._run(self._login)
        elif self._task is not None and self.payload is not None and self.error is None \
                and not self._stopped:
            # a refresh is in flight: answer its payload, not the refused one
            d: Deferred[dict[str, Any]] = Deferred(self._forget)
            self._waiters.append(d)
            return d
        return self.current()

    def paired(self, uuid: str, secret: str) -> None:
        """A pairing device was given credentials: log in with them."""
        self.options = self.options.with_device(uuid, secret)
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()
        self._run(self._login)

    def stop(self) -> None:
        self._stopped = True
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()
        self._fail_waiters(RuntimeError("this EXP instance has been stopped"))

    # -- the work ------------------------------------------------------------

    def _expired(self, payload: dict[str, Any]) -> bool:
        expiration = payload.get("expiration")
        return not isinstance(expiration, (int, float)) or (
            expiration / 1000.0 <= self._clock.seconds()
        )

    def _run(self, work: Callable[[], Any]) -> None:
        if self._task is not None:
            return
        task = ensureDeferred(work())
        self._task = task

        def succeeded(_: object) -> None:
            if self._task is task:
                self._task = None

        def failed(failure: Any) -> None:
            succeeded(None)
            if not failure.check(CancelledError):
                self._log.failure("authentication failed unexpectedly", failure)
                self._fatal(ExpError(str(failure.value)))

        task.addCallbacks(succeeded, failed)

    async def _login(self) -> None:
        attempt = 0
        tried_pairing = False
        while True:
            options = self.options
            try:
                payload = await self._post_login(options, pairing=tried_pairing)
            except AuthenticationError as e:
                if options.allow_pairing and options.kind == DEVICE and not tried_pairing:
                    self._log.info("device credentials refused; starting in pairing mode")
                    tried_pairing = True
                    continue
                self._fatal(e)
                return
            except ExpError as e:
                if not _transient(e):
                    self._fatal(e)
                    return
                self.last_error = e
                if self._stopped:
                    return
                attempt += 1
                delay = self._retry_policy(attempt)
                self._log.warn("login failed ({error}); retrying in {delay:.1f} s",
                               error=e, delay=delay)
                await deferLater(self._clock, delay, lambda: None)
                continue
            self._task = None
            self._adopt(payload)
            return

    async def _post_login(self, options: Options, pairing: bool) -> dict[str, Any]:
        if options.kind == USER:
            body: dict[str, Any] = {
                "type": "user", "username": options.username,
                "password": options.password, "organization": options.organization,
            }
        elif options.kind == DEVICE and not pairing:
            assert options.uuid is not None and options.secret is not None
            body = {"token": device_token(options.uuid, options.secret, options.allow_pairing)}
        elif options.kind == CONSUMER_APP:
            assert options.uuid is not None and options.api_key is not None
            body = {"token": consumer_app_token(options.uuid, options.api_key)}
        elif options.kind == PAIRING or pairing:
            body = {"token": device_token("_", "_", allow_pairing=True)}
        else:
            raise AuthenticationError(
                "the auth payload given to start was refused or has expired, and there"
                " are no credentials to log in with"
            )
        status, answer = await self._http.call(
            "POST", options.host + "/api/auth/login", payload=body
        )
        if status == 401:
            message = answer.get("message") if isinstance(answer, dict) else None
            raise AuthenticationError(
                f"login refused by {options.host}: {message or 'bad credentials'}"
            )
        if status >= 300:
            raise error_for(status, answer)
        payload = self._check_payload(answer)
        self._check_hosts(payload)  # not transient: never retried
        return payload

    def _check_payload(self, answer: Any) -> dict[str, Any]:
        if not isinstance(answer, dict) or any(k not in answer for k in _PAYLOAD_KEYS):
            raise ApiError(502, "auth.invalidPayload",
                           "the server's auth payload lacks token, expiration, identity,"
                           " api or network", answer)
        return answer

    def _check_hosts(self, payload: dict[str, Any]) -> None:
        """L{check_hosts}, logged: a refused host is an attack or a misconfiguration."""
        try:
            check_hosts(self.options.host, payload)
        except UnexpectedError as e:
            self._log.error("refusing the server's auth payload: {error}", error=e)
            raise

    async def _refresh(self) -> None:
        attempt = 0
        while self.payload is not None:
            payload = self.payload
            try:
                status, answer = await self._http.call(
                    "POST", payload["api"]["host"] + "/api/auth/token", token=payload["token"],
                    payload={},
                )
                if status == 401:
                    self._log.info("token refresh refused; logging in again")
                    await self._login()
                    return
                if status >= 300:
                    raise error_for(status, answer)
                fresh = self._check_payload(answer)
            except ExpError as e:
                if not _transient(e) or self._expired(payload):
                    self._log.info("token refresh failed ({error}); logging in again", error=e)
                    await self._login()
                    return
                if self._stopped:
                    return
                attempt += 1
                delay = self._retry_policy(attempt)
                self._log.warn("token refresh failed ({error}); retrying in {delay:.1f} s",
                               error=e, delay=delay)
                await deferLater(self._clock, delay, lambda: None)
                continue
            try:
                self._check_hosts(fresh)
            except UnexpectedError as e:
                self._fatal(e)
                return
            self._task = None
            self._adopt(fresh)
            return

    def _adopt(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.last_error = None
        self._cancel_timer()
        remaining = payload["expiration"] / 1000.0 - self._clock.seconds()
        self._timer = self._clock.callLater(max(remaining / 2.0, 1.0), self._due)
        # "update" first: code resumed by whenAuthenticated sees it emitted
        self._on_update(payload)
        self._events.emit("update", payload)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(payload)

    def _due(self) -> None:
        self._timer = None
        self._run(self._refresh)

    def _fatal(self, error: Exception) -> None:
        self.error = error
        self._cancel_timer()
        # "error" first: code resumed by a failing whenAuthenticated sees it emitted
        self._events.emit("error", error)
        self._fail_waiters(error)

    def _fail_waiters(self, error: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
