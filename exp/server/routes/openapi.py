"""The route of the API's own description, OpenAPI 3.0, which needs no token."""

from __future__ import annotations

import functools
import json
from importlib import resources as importlib_resources
from typing import Any

from exp.server._seam import Server
from exp.server._web import ApiRequest, Routes

#: The routes of this module, in the order declared.
routes: Routes[Server] = Routes()


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of the REST API shipped in the package."""
    text = importlib_resources.files("exp.server").joinpath("openapi.json").read_text("utf-8")
    return dict(json.loads(text))


@routes.get("/api/openapi.json")
async def openapi(server: Server, req: ApiRequest) -> Any:
    """The OpenAPI 3.0 description of this API, with this server's URL."""
    return dict(openapi_document(), servers=[{"url": server.public_url(req)}])
