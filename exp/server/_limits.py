"""
Budgets for what a client may try: token buckets per peer address and
lockouts per account, for logins and pairing attempts.

Both forget what is over, and hold at most L{MAX_KEYS} keys each (the least
recently used go first), so that no flood of addresses or account names can
make them grow without bound.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

from exp.server._web import HttpError

#: The most keys a L{TokenBuckets} or L{Lockouts} remembers.
MAX_KEYS = 100_000


def too_many(message: str, retry_after: float, code: str = "request.rateLimited") -> HttpError:
    """A 429 answer that says, in C{Retry-After}, when to try again."""
    error = HttpError(429, code, message)
    error.headers[b"retry-after"] = str(max(1, math.ceil(retry_after))).encode("ascii")
    return error


class TokenBuckets:
    """
    A bucket of C{per_minute} tokens per key, refilled at that rate: at most
    C{per_minute} at once, and C{per_minute} a minute on average.
    """

    def __init__(self, clock: IReactorTime, per_minute: float) -> None:
        self._clock = clock
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self._capacity
        tokens, since = entry
        return min(self._capacity, tokens + (self._clock.seconds() - since) * self._rate)

    def wait(self, key: str) -> float:
        """Seconds until C{key} has a token: 0 if it has one now."""
        level = self._level(key)
        if level >= 1 or self._rate <= 0:
            return 0.0 if level >= 1 else math.inf
        return (1 - level) / self._rate

    def take(self, key: str) -> None:
        """Use one of C{key}'s tokens (if it has none, it owes one)."""
        level = self._level(key) - 1
        self._buckets[key] = (level, self._clock.seconds())
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)


class Lockouts:
    """
    An account is locked for C{duration} seconds after C{failures} failures
    that came less than C{duration} seconds apart; a success forgets them.
    """

    def __init__(self, clock: IReactorTime, failures: int, duration: float) -> None:
        self._clock = clock
        self._failures = failures
        self._duration = duration
        #: key → (failures so far, time of the latest, locked until)
        self._accounts: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def locked(self, key: str) -> float:
        """Seconds that C{key} stays locked: 0 if it is not."""
        entry = self._accounts.get(key)
        return 0.0 if entry is None else max(0.0, entry[2] - self._clock.seconds())

    def failed(self, key: str) -> None:
        """Count a failure of C{key}; lock it if it has failed too often."""
        now = self._clock.seconds()
        count, latest, until = self._accounts.get(key, (0, now, 0.0))
        if now - latest > self._duration:
            count = 0
        count += 1
        if count >= self._failures:
            count, until = 0, now + self._duration
        self._accounts[key] = (count, now, until)
        self._accounts.move_to_end(key)
        while len(self._accounts) > MAX_KEYS:
            self._accounts.popitem(last=False)

    def succeeded(self, key: str) -> None:
        """Forget the failures of C{key}."""
        self._accounts.pop(key, None)


class LoginBudgets:
    """
    The budgets of logins and pairing attempts: failures per peer address
    (L{TokenBuckets}), lockouts per account (L{Lockouts}), and unpaired
    device logins per peer address.

    @param failures_per_minute: failed attempts a peer address may make a minute.
    @param lockout_failures: failures of one account that lock it ...
    @param lockout_seconds: ... for this many seconds.
    @param unpaired_per_minute: unpaired device logins a peer address may
        make a minute.
    """

    def __init__(self, clock: IReactorTime, failures_per_minute: float,
                 lockout_failures: int, lockout_seconds: float,
                 unpaired_per_minute: float) -> None:
        self._failures = TokenBuckets(clock, failures_per_minute)
        self._lockouts = Lockouts(clock, lockout_failures, lockout_seconds)
        self._unpaired = TokenBuckets(clock, unpaired_per_minute)

    def check(self, peer: str, account: str) -> None:
        """
        Refuse an attempt of C{peer} on C{account} while the account is locked
        or the peer has used up its failures.

        @raise HttpError: 429, with C{Retry-After}.
        """
        locked = self._lockouts.locked(account)
        if locked:
            raise too_many("too many failed attempts on this account; it is locked for now",
                           locked, "auth.locked")
        wait = self._failures.wait(peer)
        if wait:
            raise too_many("too many failed attempts from this address; slow down", wait)

    def failed(self, peer: str, account: str) -> None:
        """Count a failed attempt of C{peer} on C{account}."""
        self._failures.take(peer)
        self._lockouts.failed(account)

    def succeeded(self, account: str) -> None:
        """Forget the failures of C{account}: it has logged in."""
        self._lockouts.succeeded(account)

    def unpaired_login(self, peer: str) -> None:
        """
        Count an unpaired device login of C{peer}.

        @raise HttpError: 429, with C{Retry-After}, once C{peer} has used up
            its unpaired logins.
        """
        wait = self._unpaired.wait(peer)
        if wait:
            raise too_many("too many unpaired logins from this address; slow down", wait)
        self._unpaired.take(peer)
