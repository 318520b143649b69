"""Conventions every client relies on: problem+json errors, probes and metrics."""

from __future__ import annotations

from tests.support import Api, ok, problem


async def test_an_unknown_route_is_a_404_problem(api: Api):
    body = problem(await api.client.get("/v1/nothing-here", headers=api.admin), 404)
    assert "/v1/nothing-here" in body["detail"]


async def test_a_wrong_method_is_a_405_problem(api: Api):
    body = problem(await api.client.put("/v1/organizations", headers=api.admin), 405)
    assert "PUT" in body["detail"]


async def test_a_missing_resource_is_a_404_problem(api: Api):
    missing = "00000000-0000-4000-8000-000000000001"
    problem(await api.client.get(f"/v1/organizations/{missing}", headers=api.admin), 404)


async def test_malformed_json_is_a_422_problem_and_never_a_500(api: Api):
    response = await api.client.post(
        "/v1/organizations",
        content=b'{"name": "x",',
        headers={**api.admin, "content-type": "application/json"},
    )
    problem(response, 422)


async def test_a_validation_problem_names_each_field_and_where_it_was(api: Api):
    response = await api.client.get("/v1/organizations?limit=0", headers=api.admin)
    body = problem(response, 422)
    assert body["errors"] == [
        {
            "field": "limit",
            "message": "Input should be greater than or equal to 1",
            "type": "greater_than_equal",
            "in": "query",
        }
    ]


async def test_a_malformed_id_in_the_path_is_a_422_naming_it(api: Api):
    body = problem(await api.client.get("/v1/organizations/42", headers=api.admin), 422)
    assert [(e["field"], e["in"]) for e in body["errors"]] == [("organization_id", "path")]


async def test_healthz_answers_without_a_key(api: Api):
    assert ok(await api.client.get("/healthz")) == {"status": "ok"}


async def test_readyz_reports_the_schema_at_head(api: Api):
    from service.core import migrate

    body = ok(await api.client.get("/readyz"))
    assert body["database"] == "ok"
    assert body["schema_revision"] == migrate.head_revision()


async def test_metrics_count_requests_by_route_template(api: Api):
    org = await api.make_org()
    ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=api.admin))
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'route="/v1/organizations/{organization_id}"' in text
    assert org["id"] not in text


async def test_readyz_is_503_when_the_database_cannot_be_reached(settings):
    import httpx as http

    from service.app import create_app
    from service.core.db import make_async_engine

    unreachable = make_async_engine("postgresql://postgres@127.0.0.1:1/nowhere", pool_size=1)
    app = create_app(settings, engine=unreachable)
    async with http.AsyncClient(transport=http.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/readyz")
    await unreachable.dispose()
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_production_refuses_to_start_without_a_database_url(monkeypatch):
    import pytest
    from pydantic import ValidationError

    from service.core.settings import Settings

    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ValidationError, match="DATABASE_URL is required"):
        Settings(environment="production")
