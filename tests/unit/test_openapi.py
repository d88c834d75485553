"""The OpenAPI document is valid 3.1, complete, and names exactly the routes the app registers."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator

from app.settings import Settings
from web import app as web_app
from web.auth import ApiKeys
from web.openapi import docs_view, openapi_document, openapi_view

SETTINGS = Settings()
DOCUMENT = openapi_document(SETTINGS)
METHODS = ("get", "put", "post", "patch", "delete")
OPERATIONS_ROUTES = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
ADMIN_ACTIONS = ("/freeze", "/unfreeze", "/close")


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _deref(node: dict) -> dict:
    """Follow local `$ref`s (`#/components/...`) until a concrete node."""
    for _ in range(10):
        ref = node.get("$ref")
        if ref is None:
            return node
        node = DOCUMENT
        for key in ref.removeprefix("#/").split("/"):
            node = node[key]
    raise AssertionError(f"$ref chain too long at {node}")


def _v1_operations():
    return [(method, path, op) for method, path, op in _operations(DOCUMENT) if path.startswith("/v1/")]


def test_document_is_valid_openapi_3_1():
    assert DOCUMENT["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(DOCUMENT).validate()


def test_document_is_plain_json():
    assert json.loads(json.dumps(DOCUMENT)) == DOCUMENT


def test_document_names_exactly_the_routes_the_app_registers():
    app = web_app.create_app(SETTINGS, ApiKeys("k=admin"))
    registered = {(route.method, route.resource.canonical) for route in app.router.routes()
                  if route.method != "HEAD" and route.resource is not None}
    documented = {(method, path) for method, path, _ in _operations(DOCUMENT)}
    missing, extra = sorted(documented - registered), sorted(registered - documented)
    assert not missing and not extra, f"documented but not served: {missing}; served but not documented: {extra}"


def test_every_operation_has_a_unique_operation_id_a_summary_and_tags():
    ids = [op.get("operationId") for _, _, op in _operations(DOCUMENT)]
    assert all(ids) and len(set(ids)) == len(ids)
    for method, path, op in _operations(DOCUMENT):
        assert op.get("summary"), f"{method} {path} has no summary"
        assert op.get("tags"), f"{method} {path} has no tag"


def test_v1_routes_need_a_bearer_key_with_the_right_scope_and_operations_routes_need_none():
    assert DOCUMENT["components"]["securitySchemes"]["bearerAuth"] == {
        **DOCUMENT["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    for method, path, op in _operations(DOCUMENT):
        if path in OPERATIONS_ROUTES:
            assert op["security"] == [], f"{path} must need no key"
            continue
        if method == "GET":
            scope = "wallets:read"
        elif path.endswith(ADMIN_ACTIONS):
            scope = "admin"
        else:
            scope = "wallets:write"
        assert op["security"] == [{"bearerAuth": [scope]}], f"{method} {path}"
        assert f"`{scope}`" in op["description"]
        assert {"401", "403"} <= set(op["responses"])


def test_every_v1_error_response_is_problem_json():
    problem = DOCUMENT["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert problem["properties"]["type"] == {"type": "string", "format": "uri"}
    for method, path, op in _v1_operations():
        errors = {status: _deref(resp) for status, resp in op["responses"].items() if status[0] in "45"}
        assert errors, f"{method} {path} documents no error"
        for status, response in errors.items():
            assert list(response["content"]) == ["application/problem+json"], f"{method} {path} {status}"
            assert response["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"}


def test_posts_take_an_idempotency_key_and_wait_ms_and_document_every_outcome():
    for method, path, op in _v1_operations():
        if method != "POST":
            continue
        parameters = {(p["in"], p["name"]): p for p in map(_deref, op["parameters"])}
        key = parameters[("header", "Idempotency-Key")]
        assert not key["required"] and _deref(key["schema"])["pattern"] == r"^[A-Za-z0-9_.:-]{1,100}$"
        wait = parameters[("query", "wait_ms")]["schema"]
        assert (wait["minimum"], wait["maximum"]) == (0, SETTINGS.command_wait_ms_max)
        statuses = set(op["responses"])
        assert {"202", "400", "401", "403", "409", "413", "415", "422", "429", "503"} <= statuses
        assert statuses & {"200", "201"}, f"POST {path} has no success response"
        assert ("404" in statuses) == (path != "/v1/wallets"), f"POST {path}: 404 where a wallet is addressed"
        assert _deref(op["responses"]["202"])["headers"]["Location"]["required"]
        assert _deref(op["responses"]["429"])["headers"]["Retry-After"]["required"]
        body = _deref(op["requestBody"]["content"]["application/json"]["schema"])
        assert body["type"] == "object" and body["additionalProperties"] is False


def test_gets_under_v1_document_their_outcomes():
    for method, path, op in _v1_operations():
        if method == "GET":
            versioned = any(parameter.get("$ref", "").endswith("/MinVersion") for parameter in op["parameters"])
            expected = {"200", "400", "401", "403", "404", "429", "503"} | ({"412"} if versioned else set())
            assert expected == set(op["responses"]), path


def test_creating_routes_answer_201_with_a_location():
    paths = DOCUMENT["paths"]
    for path in ("/v1/wallets", "/v1/transfers"):
        created = paths[path]["post"]["responses"]["201"]
        assert created["headers"]["Location"]["required"], path
    assert "201" in paths["/v1/wallets/{wallet_id}/holds"]["post"]["responses"]


def test_optional_bodies_are_the_ones_that_carry_no_required_field():
    optional = {path for _, path, op in _v1_operations() if "requestBody" in op and not op["requestBody"]["required"]}
    assert optional == {"/v1/wallets/{wallet_id}/holds/{hold_id}/release", "/v1/wallets/{wallet_id}/freeze",
                        "/v1/wallets/{wallet_id}/unfreeze", "/v1/wallets/{wallet_id}/close"}


def test_limits_come_from_the_settings():
    settings = replace(SETTINGS, command_wait_ms_max=1234, command_wait_ms_default=500, amount_max_major=77,
                       hold_expires_in_s_max=600)
    document = openapi_document(settings)
    wait = document["components"]["parameters"]["WaitMs"]["schema"]
    assert (wait["maximum"], wait["default"]) == (1234, 500)
    assert document["components"]["schemas"]["PlaceHoldRequest"]["properties"]["expires_in_s"]["maximum"] == 600
    assert "at most 77 major units" in document["components"]["schemas"]["Amount"]["description"]


@pytest.mark.parametrize(("schema", "good", "bad"), [
    ("Amount", ["150.75", "0", "1", "100", "1.500"], ["-1", "01", "1e3", "1.", ".5", " 1", "+1"]),
    ("SignedAmount", ["-0.05", "150.75", "0.00"], ["--1", "1-", "- 1"]),
    ("WalletId", ["w-1", "A_b", "x" * 64], ["", "x" * 65, "a b", "a.b", "a/b"]),
    ("CommandId", ["order-1:pay.2", "x" * 128], ["", "x" * 129, "a b", "a/b"]),
    ("Currency", ["EUR", "JPY", "BHD"], ["eur", "EU", "EURO"]),
])
def test_component_patterns_accept_and_refuse_what_the_api_does(schema, good, bad):
    validator = jsonschema.Draft202012Validator(DOCUMENT["components"]["schemas"][schema],
                                                format_checker=jsonschema.FormatChecker())
    assert [value for value in good if not validator.is_valid(value)] == []
    assert [value for value in bad if validator.is_valid(value)] == []


def test_every_example_is_valid_against_its_own_schema():
    for name, schema in DOCUMENT["components"]["schemas"].items():
        if "example" in schema:
            assert jsonschema.Draft202012Validator(schema).is_valid(schema["example"]), name


async def _serve(settings: Settings) -> TestClient:
    app = web.Application()
    app[web_app.SETTINGS] = settings
    app.router.add_get("/openapi.json", openapi_view)
    app.router.add_get("/docs", docs_view)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_openapi_json_is_served_without_a_key_and_is_the_document_of_the_apps_settings():
    settings = replace(SETTINGS, command_wait_ms_max=4321)
    client = await _serve(settings)
    try:
        first = await client.get("/openapi.json")
        second = await client.get("/openapi.json")
        assert first.status == 200 and first.content_type == "application/json"
        assert await first.read() == await second.read()
        assert json.loads(await first.read()) == openapi_document(settings)
    finally:
        await client.close()


async def test_docs_page_is_html_that_loads_nothing_from_another_origin():
    client = await _serve(SETTINGS)
    try:
        response = await client.get("/docs")
        html = await response.text()
    finally:
        await client.close()
    assert response.status == 200 and response.content_type == "text/html"
    assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
    assert 'fetch("/openapi.json"' in html
    # No external script, stylesheet, font or image: nothing with a scheme or protocol-relative URL.
    assert re.findall(r"""(?:src|href)\s*=\s*["']?(?:[a-z]+:)?//""", html, re.I) == []
    assert re.findall(r"@import|url\(", html) == []
