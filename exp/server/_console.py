"""
The web console (C{/console/}): static pages written for this project, in
the package folder C{exp/server/console/}, served as they are.  They hold a
user's token, so they get a strict policy of their own: scripts, styles and
connections of this origin only, never framed, no referrer.
"""

from __future__ import annotations

import os

from twisted.web import resource, server, static, util

from exp.server._web import NotFound

#: The folder of the console's files.
CONSOLE_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")
#: The console's Content-Security-Policy: nothing inline, nothing from elsewhere.
CONSOLE_POLICY = (b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                  b"style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
                  b"form-action 'self'; frame-ancestors 'none'")
#: Where the console is served; C{/} redirects there.
CONSOLE_PATH = b"/console/"


class ConsoleFiles(static.File):
    """The console's files, with its security headers; no directory listings."""

    #: Media types by extension, with the text types' charset.
    contentTypes = {**static.File.contentTypes,
                    ".html": "text/html; charset=utf-8",
                    ".js": "text/javascript; charset=utf-8",
                    ".css": "text/css; charset=utf-8"}
    #: The answer to a file that is not there: a JSON 404, as elsewhere.
    childNotFound = NotFound()  # type: ignore[assignment]

    def __init__(self, path: str = CONSOLE_FOLDER, *args: object, **kwargs: object) -> None:
        super().__init__(path, *args, **kwargs)  # type: ignore[arg-type]
        #: The file a folder's URL serves.
        self.indexNames = ["index.html"]

    def render(self, request: server.Request) -> bytes | int:
        """A file of the console, with headers that keep it to itself."""
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", CONSOLE_POLICY)
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"cache-control", b"no-cache")
        return super().render(request)

    def directoryListing(self) -> resource.Resource:
        """No listing of folders: a 404."""
        return NotFound()


def to_console() -> resource.Resource:
    """C{/}: a redirect to the console."""
    return util.Redirect(CONSOLE_PATH)
