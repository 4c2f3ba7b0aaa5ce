"""
The OpenAPI 3.0 description of the REST API (exp/server/openapi.json, served
at C{GET /api/openapi.json}): it names exactly the routes the server has,
with their methods and parameters, it is structurally sound, and what the
server answers matches what it says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import pytest_twisted

from exp.server.testing import DEMO, RunningServer

from ._openapi import SPEC, operations, resolve
from ._support import assert_error
from .conftest import Http

ERROR_CODES = re.compile(r"^[45]\d\d$")


def router_routes(running: RunningServer) -> set[tuple[str, str]]:
    """The server's routes, their templates in OpenAPI form (C{{path*}} → C{{path}})."""
    return {(method, template.replace("*}", "}"))
            for method, template in running.server.router.routes()}


def refs(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every C{$ref} in C{node}, with the object that holds it."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"], node
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


# -- answers checked against the description with jsonschema ---------------------------


def json_schema(node: Any) -> Any:
    """OpenAPI 3.0's dialect of a schema as JSON Schema: C{nullable} becomes a null type."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {k: json_schema(v) for k, v in node.items() if k != "nullable"}
    return {"anyOf": [schema, {"type": "null"}]} if node.get("nullable") else schema


def check(document: dict[str, Any], schema: Any, value: Any) -> None:
    """
    Assert that C{value} matches C{schema} of C{document}, whose C{$ref}s
    resolve in C{document}'s components.
    """
    root = {**json_schema(schema), "components": json_schema(document["components"])}
    try:
        jsonschema.Draft4Validator(root).validate(value)
    except jsonschema.ValidationError as e:
        raise AssertionError(f"{list(e.absolute_path)}: {e.message}") from None


def answer_schema(document: dict[str, Any], method: str, path: str, status: int) -> Any:
    """The JSON schema of the C{status} answer of an operation, as described."""
    operation = document["paths"][path][method.lower()]
    response = resolve(document, operation["responses"][str(status)])
    return response["content"]["application/json"]["schema"]


# -- the description against the router ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_route_is_described_and_nothing_else(server: RunningServer) -> None:
    """The description's paths and methods are exactly the router's routes."""
    described = {(method, path) for method, path, _, _ in operations(SPEC)}
    routes = router_routes(server)
    assert routes - described == set(), "routes missing from openapi.json"
    assert described - routes == set(), "openapi.json describes routes the server lacks"
    assert len(routes) == len(server.server.router.routes()), "a route is added twice"


def test_path_parameters_match_the_templates() -> None:
    """Each operation declares exactly its path's {parameters}, as required strings."""
    for method, path, _, parameters in operations(SPEC):
        names = set(re.findall(r"\{(\w+)\}", path))
        declared = {p["name"] for p in parameters if p["in"] == "path"}
        assert declared == names, (method, path, declared)
        for parameter in parameters:
            if parameter["in"] == "path":
                assert parameter["required"] is True, (method, path, parameter["name"])


def test_query_parameters_are_described() -> None:
    """The query parameters the handlers read appear on their operations."""
    expected = {
        ("GET", "/api/devices"): {"limit", "skip", "sort", "filters"},
        ("GET", "/api/data"): {"limit", "skip", "sort", "filters"},
        ("GET", "/api/content"): {"parent", "subtype", "limit", "skip", "sort"},
        ("POST", "/api/networks/current/broadcasts"): {"timeout"},
        ("GET", "/api/connectors/feeds/{uuid}/data"): {"searchValue"},
        ("GET", "/api/delivery/{path}"): {"_rt", "variant"},
        ("GET", "/api/locations/{uuid}/layout"): {"_rt"},
    }
    found = {(m, p): {q["name"] for q in ps if q["in"] == "query"}
             for m, p, _, ps in operations(SPEC)}
    for key, names in expected.items():
        assert names <= found[key], (key, found[key])


# -- structure ---------------------------------------------------------------------------


def test_document_is_openapi_3_0() -> None:
    """The top level has what OpenAPI 3.0 requires, and the bearer scheme."""
    assert re.fullmatch(r"3\.0\.\d+", SPEC["openapi"])
    assert SPEC["info"]["title"] and SPEC["info"]["version"]
    assert SPEC["paths"] and all(path.startswith("/api/") for path in SPEC["paths"])
    schemes = SPEC["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert SPEC["security"] == [{"bearer": []}]


def test_every_ref_resolves() -> None:
    """Every $ref points inside the document, at something, with no sibling keys."""
    found = list(refs(SPEC))
    assert found
    for ref, holder in found:
        assert set(holder) == {"$ref"}, f"keys beside $ref {ref} are ignored by OpenAPI 3.0"
        assert resolve(SPEC, holder) is not None


def test_every_component_is_used() -> None:
    """No dead schemas, parameters or responses."""
    used = {ref for ref, _ in refs(SPEC)}
    for kind in ("schemas", "parameters", "responses"):
        for name in SPEC["components"][kind]:
            assert f"#/components/{kind}/{name}" in used, f"unused {kind} {name}"


def test_operations_are_complete() -> None:
    """Operations have unique ids, tags, a success answer and described errors."""
    ids = [op["operationId"] for _, _, op, _ in operations(SPEC)]
    assert len(ids) == len(set(ids)), "duplicate operationId"
    tags = {tag["name"] for tag in SPEC["tags"]}
    schemes = SPEC["components"]["securitySchemes"]
    for method, path, operation, parameters in operations(SPEC):
        where = (method, path)
        assert operation["summary"], where
        assert set(operation["tags"]) <= tags, where
        responses = operation["responses"]
        assert responses and "200" in responses, where
        for status, response in responses.items():
            assert re.fullmatch(r"[1-5]\d\d", status), where
            response = resolve(SPEC, response)
            assert response["description"], (where, status)
            if ERROR_CODES.match(status):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (where, status)
        for requirement in operation.get("security", SPEC["security"]):
            assert set(requirement) <= set(schemes), where
        if operation.get("security", SPEC["security"]):
            assert "401" in responses, f"{where} needs a token but describes no 401"
        if "requestBody" in operation:
            body = resolve(SPEC, operation["requestBody"])
            # Writes of documents take an empty body as {} (PROTOCOL.md A7).
            assert body["content"] and body["required"] is (
                "an empty body means {}" not in body.get("description", "").lower()), where
            assert "413" in responses, f"{where} takes a body but describes no 413"
        for parameter in parameters:
            assert parameter["in"] in ("path", "query", "header", "cookie"), where
            assert "schema" in parameter, (where, parameter["name"])
    error = SPEC["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "message"]
    assert set(error["properties"]) == {"code", "message"}


# -- the description against the server's answers ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_description_is_served(server: RunningServer, http: Http) -> None:
    """GET /api/openapi.json needs no token and answers the package's description."""
    answer = await http.call("GET", "/api/openapi.json")
    assert answer.code == 200, answer
    content_type = answer.headers.getRawHeaders(b"content-type")[0]
    assert content_type.startswith(b"application/json")
    served = answer.json
    assert served.pop("servers") == [{"url": server.url}]
    assert served == SPEC


@pytest_twisted.ensureDeferred
async def test_security_matches_the_server(server: RunningServer, http: Http) -> None:
    """Operations needing a token answer 401 without one; the others do not."""
    for method, path, operation, _ in operations(SPEC):
        concrete = re.sub(r"\{\w+\}", "x", path)
        body = {} if "requestBody" in operation else None
        answer = await http.call(method, concrete, body)
        if operation.get("security", SPEC["security"]):
            assert_error(answer, 401)
            check(SPEC, answer_schema(SPEC, method, path, 401), answer.json)
        else:
            assert answer.code != 401, (method, path, answer)


@pytest_twisted.ensureDeferred
async def test_answers_match_their_schemas(http: Http) -> None:
    """Real answers of the server validate against the schemas described for them."""
    login = {"username": DEMO["username"], "password": DEMO["password"],
             "organization": DEMO["organization"]}
    answer = await http.call("POST", "/api/auth/login", login)
    check(SPEC, answer_schema(SPEC, "POST", "/api/auth/login", 200), answer.json)
    token = answer.json["token"]
    calls: list[tuple[str, str, str, Any]] = [
        ("POST", "/api/auth/token", "/api/auth/token", None),
        ("GET", "/api/devices", "/api/devices", None),
        ("GET", "/api/things", "/api/things", None),
        ("GET", "/api/experiences", "/api/experiences", None),
        ("GET", "/api/locations", "/api/locations", None),
        ("GET", "/api/connectors/feeds", "/api/connectors/feeds", None),
        ("GET", "/api/devices/test-uuid", "/api/devices/{uuid}", None),
        ("GET", "/api/locations/demo-location", "/api/locations/{uuid}", None),
        ("POST", "/api/things", "/api/things", {"name": "described"}),
        ("PATCH", "/api/things/demo-thing", "/api/things/{uuid}", {"tag": 1}),
        ("GET", "/api/data", "/api/data", None),
        ("GET", "/api/data/cats/fluffy", "/api/data/{group}/{key}", None),
        ("PUT", "/api/data/cats/tom", "/api/data/{group}/{key}", [1, "two", None]),
        ("GET", "/api/content", "/api/content", None),
        ("GET", "/api/content/root", "/api/content/{uuid}", None),
        ("POST", "/api/networks/current/broadcasts", "/api/networks/current/broadcasts",
         {"channel": "x", "name": "hi"}),
        ("GET", "/api/things/nothing", "/api/things/{uuid}", None),
        ("POST", "/api/logs", "/api/logs", {"not": "a list"}),
        ("GET", "/api/openapi.json", "/api/openapi.json", None),
    ]
    for method, concrete, path, body in calls:
        answer = await http.call(method, concrete, body, token=token)
        if answer.code >= 400:
            assert_error(answer, answer.code)
        check(SPEC, answer_schema(SPEC, method, path, answer.code), answer.json)


@pytest.mark.parametrize(("schema", "value"), [
    ({"$ref": "#/components/schemas/Error"}, {"code": "a.b"}),
    ({"$ref": "#/components/schemas/Error"}, {"code": "a", "message": "m", "x": 1}),
    ({"$ref": "#/components/schemas/FindResult"}, {"results": [1], "total": 1}),
    ({"$ref": "#/components/schemas/DataItem"}, {"group": "g", "key": 1, "value": 2}),
    ({"$ref": "#/components/schemas/LoginRequest"}, {"username": "u"}),
    ({"type": "integer"}, True),
])
def test_the_validator_refuses(schema: Any, value: Any) -> None:
    """The schema check of these tests is not vacuous."""
    with pytest.raises(AssertionError):
        check(SPEC, schema, value)
