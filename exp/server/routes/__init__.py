"""
The REST API's routes, by area; each area's module declares its routes
klein-style, as decorated functions of the server (L{Server}) and the request::

    from exp.server.routes.documents import routes

    @routes.get("/api/devices/{uuid}/status")
    async def device_status(server: Server, req: ApiRequest) -> Any:
        identity = server.policy.allow(req, Action.READ)
        ...

L{API} gathers them in order; L{exp.server.ExpServer} binds it to itself.
"""

from exp.server._seam import Server
from exp.server._web import Routes
from exp.server.routes import auth, content, documents, logs, network, openapi

#: Every route of the REST API.
API: Routes[Server] = Routes(auth.routes, documents.routes, content.routes, network.routes,
                             logs.routes, openapi.routes)

__all__ = ["API", "Server", "auth", "content", "documents", "logs", "network", "openapi"]
