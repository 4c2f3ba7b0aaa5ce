"""
The exceptions of every face of the SDK.

Each failure a program can cause maps to one of these; the message says what
to fix.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "ApiError",
    "AuthenticationError",
    "ExpError",
    "NetworkError",
    "RuntimeError",
    "UnexpectedError",
]


class ExpError(Exception):
    """Base class of every error raised by the SDK."""


class RuntimeError(ExpError, builtins.RuntimeError):
    """
    The SDK was given invalid or incomplete options, or was used in a way it
    does not support (for example a call on a stopped instance).
    """


class AuthenticationError(ExpError):
    """The server rejected the credentials or the token (HTTP 401)."""


class ApiError(ExpError):
    """
    The server answered a REST call with an error.

    @ivar status_code: the HTTP status.
    @ivar code: the dotted error code of the server's answer, if any.
    @ivar message: the human readable message of the server's answer.
    @ivar payload: the decoded JSON body of the answer, if any.
    """

    def __init__(
        self,
        status_code: int,
        code: str | None = None,
        message: str | None = None,
        payload: Any = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message or ""
        self.payload = payload
        super().__init__(f"{status_code} {code or 'error'}: {self.message}")


class NetworkError(ExpError):
    """The real-time network failed: no connection, or no answer in time."""


class UnexpectedError(ExpError):
    """Something happened that the SDK did not expect; the message says what."""
