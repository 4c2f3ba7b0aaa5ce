"""Small helpers shared by the tests: error checks, a hub subscriber, log events as text."""

from __future__ import annotations

from typing import Any

from twisted.logger import formatEvent
from zope.interface import implementer

from exp.server._hub import ISubscriber, Message

from .conftest import Answer


def assert_error(answer: Answer, status: int, code: str | None = None) -> None:
    """C{answer} is an error of C{status} whose body is exactly C{{code, message}}."""
    assert answer.code == status, answer
    content_type = answer.headers.getRawHeaders(b"content-type", [b""])[0]
    assert content_type.startswith(b"application/json"), (content_type, answer)
    body = answer.json
    assert isinstance(body, dict) and set(body) == {"code", "message"}, answer
    assert isinstance(body["code"], str) and body["code"], answer
    assert isinstance(body["message"], str) and body["message"], answer
    if code is not None:
        assert body["code"] == code, answer


@implementer(ISubscriber)
class Recorder:
    """A hub subscriber that keeps the bodies of what it is delivered."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def deliver(self, message: Message) -> None:
        self.messages.append(message.body)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["name"] == name]


def render(event: dict[str, Any]) -> str:
    """All that a log observer could write of C{event}: its text, traceback and fields."""
    parts = [formatEvent(event)]
    failure = event.get("log_failure")
    if failure is not None:
        parts.append(failure.getTraceback())
    parts += [f"{key}={value!r}" for key, value in event.items()]
    return "\n".join(parts)
