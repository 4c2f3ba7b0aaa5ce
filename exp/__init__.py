"""
exp: the Twisted-native Python SDK for EXP, and a local EXP server.
"""

from exp.errors import (
    ApiError,
    AuthenticationError,
    ExpError,
    NetworkError,
    RuntimeError,
    UnexpectedError,
)

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AuthenticationError",
    "ExpError",
    "NetworkError",
    "RuntimeError",
    "UnexpectedError",
]
